"""Threats at the app's doors: the webhook, PR comments, sign-in, the bot API, the pages.

Each test is named for the attack it stops. Webhooks are real recorded payloads
signed as GitHub signs them; GitHub is faked at the HTTP layer and the tests
assert on what the app sent it (or that it sent nothing).
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import func, select

from minipipe_gh.core.markers import MARKER
from minipipe_gh.delivery.metrics import DELIVERIES_PROCESSED, DELIVERIES_RECEIVED
from minipipe_gh.review.refresh import EVENT as REFRESH_EVENT
from minipipe_gh.review.refresh import LEGACY_EVENT
from minipipe_gh.store.models import AuditEntry, Delivery
from minipipe_gh.web import create_app
from tests import dashboard_support
from tests.github_fake import Users
from tests.scenario import REPO, R, Scenario
from tests.seed import (
    NEW_SESSION,
    Api,
    drain,
    error,
    install,
    make_token,
    only_patch,
    opened_and_validated,
    seed_session,
    writes,
)
from tests.seed import serve_session_pr as serve_new_session_pr
from tests.support import payload, signed_headers

COMMENT_LIMIT = 65_536  # GitHub: an issue comment's body
SUMMARY_LIMIT = 65_535  # GitHub: a check run's output.summary


# sign-in with GitHub configured, as in the dashboard tests
settings, users = dashboard_support.settings, dashboard_support.users


def received_labels() -> set[tuple[str, str]]:
    """(event, outcome) of every child of the received-deliveries counter in this process."""
    [family] = DELIVERIES_RECEIVED.collect()
    return {
        (s.labels["event"], s.labels["outcome"])
        for s in family.samples
        if s.name.endswith("_total")
    }


def audit_count(rt: Any) -> int:
    with rt.database.unit() as s:
        return s.scalar(select(func.count()).select_from(AuditEntry)) or 0


def deliveries(rt: Any) -> list[Delivery]:
    with rt.database.unit() as s:
        return list(s.scalars(select(Delivery)))


# -- item 12: unauthenticated memory growth ----------------------------------------------------


def test_attack_unverified_event_names_do_not_grow_metrics(client):
    body = json.dumps(payload("pull_request.opened")).encode()
    names = [f"evil_{uuid.uuid4().hex}" for _ in range(40)]
    for name in names:
        headers = signed_headers(name, body, secret="not the secret")
        assert client.post("/webhook", data=body, headers=headers).status_code == 401
    too_long = {"CONTENT_LENGTH": str(26 * 1024 * 1024)}  # refused before the body is read
    oversized = signed_headers("evil_oversized", b"{}")
    resp = client.post("/webhook", data=b"{}", headers=oversized, environ_overrides=too_long)
    assert resp.status_code == 413

    events = {event for event, _outcome in received_labels()}
    assert not {n for n in names if n in events}
    assert "evil_oversized" not in events
    assert ("unverified", "refused_401") in received_labels()
    assert ("unverified", "refused_413") in received_labels()


def test_attack_replayed_body_with_invented_event_names_does_not_grow_metrics(deliver, rt):
    """The signature covers the body, not the headers: a captured delivery replayed with
    new event names is verified, stored, and still counted under a bounded label."""
    names = [f"x{uuid.uuid4().hex}" for _ in range(20)]
    for name in names:
        # A body of its own each time: the same bytes again would be a stored duplicate.
        data = payload("pull_request.opened", pull_request__title=name)
        assert deliver(name, data).status_code == 202
    events = {event for event, _outcome in received_labels()}
    assert not {n for n in names if n in events}
    assert ("other", "accepted") in received_labels()
    assert {d.event for d in deliveries(rt)} == set(names)  # stored as received
    drain(rt)
    processed = {s.labels["event"] for m in DELIVERIES_PROCESSED.collect() for s in m.samples}
    assert not {n for n in names if n in processed}
    assert "other" in processed


@pytest.mark.parametrize("name", [REFRESH_EVENT, LEGACY_EVENT])
def test_attack_a_replayed_delivery_cannot_pose_as_the_apps_own_event(deliver, rt, name):
    """``minipipe.refresh_check_run`` (``minipipe.publish`` before) is queued by the app
    itself; from outside it is refused."""
    resp = deliver(name, payload("pull_request.opened"))
    assert resp.status_code == 400
    assert deliveries(rt) == []


# -- item 13: a drive-by comment freezes a PR --------------------------------------------------


def junk(count: int) -> str:
    return "\n".join(f"/junk{i} please" for i in range(count))


def test_attack_1500_junk_commands_by_a_user_without_access_write_nothing(rt, deliver, github):
    sc = Scenario(deliver, github)
    opened_and_validated(rt, sc, github)
    sc.serve_permission("drive-by", "none")
    audited, mark = audit_count(rt), len(github.api_requests())

    sc.comment(junk(1500), login="drive-by")
    assert [o.status for o in drain(rt)] == ["done"]

    assert writes(github, mark) == []  # no reply, no reaction
    assert audit_count(rt) == audited  # and no audit row


def test_attack_1500_junk_commands_by_a_reader_get_one_short_reply(rt, deliver, github):
    sc = Scenario(deliver, github)
    opened_and_validated(rt, sc, github)
    sc.serve_permission("reader", "read")
    audited, mark = audit_count(rt), len(github.api_requests())

    sc.comment(junk(1500), login="reader")
    drain(rt)

    [reaction, reply] = writes(github, mark)
    assert reaction[2] == {"content": "confused"}
    assert reply[:2] == ("POST", f"{R}/issues/2/comments")
    text = reply[2]["body"]
    assert len(text) < 4_000
    assert text.count("unknown command") == 10
    assert "only the first 10 commands of a comment are read; 1490 more were not" in text
    assert audit_count(rt) - audited == 11


def test_attack_a_65000_character_command_is_not_echoed(rt, deliver, github):
    sc = Scenario(deliver, github)
    opened_and_validated(rt, sc, github)
    sc.serve_permission("reader", "read")
    mark = len(github.api_requests())

    sc.comment("/" + "x" * 65_000, login="reader")
    drain(rt)

    [_reaction, reply] = writes(github, mark)
    assert len(reply[2]["body"]) < 1_000
    assert "`/" + "x" * 40 + "…`" in reply[2]["body"]


def test_attack_a_65000_character_reason_still_fits_the_check_run(rt, deliver, github):
    sc = Scenario(deliver, github)
    opened_and_validated(rt, sc, github)
    sc.serve_permission("writer", "write")
    mark = len(github.api_requests())

    sc.comment("/reject " + "y" * 65_000, login="writer")
    drain(rt)

    assert only_patch(rt).state == "dropped"
    [update] = [b for m, p, b in github.api_requests()[mark:] if p == f"{R}/check-runs/555"]
    assert update["conclusion"] == "failure"
    assert len(update["output"]["summary"]) <= SUMMARY_LIMIT
    assert update["output"]["summary"].endswith("(cut to fit GitHub's limit)")
    assert len(update["output"]["title"]) <= 255


def test_attack_text_sent_to_github_never_exceeds_its_limits():
    """Whatever ends up in a reply or a check run is cut to GitHub's limits, markers kept."""
    from minipipe_gh.core import limits

    marker = "\n\n<!-- minipipe:reply=abc -->"
    reply = limits.fit("r" * 100_000, COMMENT_LIMIT, tail=marker)
    assert len(reply) == COMMENT_LIMIT and reply.endswith(marker)
    assert limits.fit("short", COMMENT_LIMIT, tail=marker) == "short" + marker
    body = {"name": "minipipe/review", "output": {"title": "t" * 1_000, "summary": "s" * 70_000}}
    body["output"]["text"] = "x" * 70_000
    fitted = limits.fit_check_run(body)["output"]
    assert len(fitted["title"]) <= 255
    assert len(fitted["summary"]) <= SUMMARY_LIMIT and len(fitted["text"]) <= 65_535


# -- item 14: open redirect after sign-in ------------------------------------------------------


def sign_in_to(client: Any, users: Users, asked: str) -> Any:
    users.visible["carol"] = [REPO]
    start = client.get("/auth/github/login", query_string={"next": asked})
    assert start.status_code == 302
    state = parse_qs(urlsplit(start.headers["Location"]).query)["state"][0]
    return client.get(f"/auth/github/callback?code=carol&state={state}")


@pytest.mark.parametrize(
    "asked",
    ["/\t/evil.example", "/\n/evil.example", "/\t\\evil.example"],
    ids=["tab", "newline", "tab-backslash"],
)
def test_attack_control_characters_in_next_cannot_redirect_off_site(client, users, asked):
    back = sign_in_to(client, users, asked)
    assert back.status_code == 302
    location = back.headers["Location"]
    browser_sees = re.sub(r"[\t\n\r]", "", location).replace("\\", "/")
    assert urlsplit(browser_sees).netloc == ""
    assert not browser_sees.startswith("//")
    assert location == "/sessions"


def test_attack_crlf_in_next_is_not_a_500_nor_a_header(client, users):
    back = sign_in_to(client, users, "/review\r\nSet-Cookie: planted=1")
    assert back.status_code == 302
    assert "\r" not in back.headers["Location"] and "\n" not in back.headers["Location"]
    assert back.headers["Location"].startswith("/review")
    assert "planted" not in str(back.headers.getlist("Set-Cookie"))


# -- item 15: smaller holes ----------------------------------------------------------------------


def test_attack_stats_without_project_id_stay_within_the_tokens_repositories(rt, client, github):
    install(rt)
    seed_session(rt, agent_type="claude")
    seed_session(rt, project="octo-org/secret-service", agent_type="secret-agent")
    seed_session(rt, project="octo-org/secret-service", agent_type="claude")
    scoped = Api(client, make_token(rt, "scoped", "agent-bot", [REPO]))

    items = scoped("GET", "/stats").get_json()["items"]

    assert [(row["agent_type"], row["sessions"]) for row in items] == [("claude", 1)]


def test_attack_non_ascii_signature_is_401_not_500(client, rt):
    body = json.dumps(payload("pull_request.opened")).encode()
    headers = signed_headers("pull_request", body)
    headers["X-Hub-Signature-256"] = "sha256=" + "é" * 64
    resp = client.post("/webhook", data=body, headers=headers)
    assert resp.status_code == 401
    assert deliveries(rt) == []


def test_attack_oauth_error_text_is_not_reflected_onto_the_page(client):
    client.get("/auth/github/login")
    resp = client.get(
        "/auth/github/callback",
        query_string={
            "error": "Your account is locked: call +1 555 0100",
            "error_description": "Support line: +1 555 0100, have your password ready",
        },
    )
    assert resp.status_code == 403
    assert "555" not in resp.text
    assert "GitHub did not sign you in" in resp.text


@pytest.mark.parametrize(
    ("headers", "data"),
    [
        ({"X-GitHub-Event": "pull_request" + "_x" * 30}, None),
        ({"X-GitHub-Event": "pull_request\x01"}, None),
        ({"User-Agent": "GitHub-Hookshot/" + "a" * 5_000}, None),
        ({}, {"action": "opened" * 20}),
        ({}, {"repository": {"full_name": "o/" + "r" * 300}}),
        ({}, {"installation": {"id": 2**70}}),
        ({}, {"installation": {"id": "1; drop table"}}),
        ({}, {"action": "open\x00ed"}),
    ],
    ids=[
        "long-event",
        "control-char-event",
        "long-header",
        "long-action",
        "long-repository",
        "huge-installation-id",
        "string-installation-id",
        "nul-in-action",
    ],
)
def test_attack_values_too_long_for_their_columns_are_refused_before_storage(
    deliver, rt, headers, data
):
    """On PostgreSQL one such row fails the commit of every delivery batched with it."""
    body = payload("pull_request.opened", **(data or {}))
    resp = deliver("pull_request", body, headers=headers)
    assert resp.status_code == 400
    assert deliveries(rt) == []
    ok = deliver("pull_request", payload("pull_request.opened"))
    assert ok.status_code == 202


@pytest.mark.parametrize(
    "base",
    [
        "../../collaborators/agent-bot",
        "main/../../../../user",
        "main\nX-Injected: 1",
        "main branch",
        "refs/heads/main?per_page=1",
        "feature/.hidden",
        "x.lock",
        "main@{1}",
        "b" * 256,
    ],
)
def test_attack_base_branch_cannot_reach_outside_the_repositorys_branches(rt, client, github, base):
    install(rt)
    api = Api(client, make_token(rt, "agent", "agent-bot"))
    github.allow_token_exchange()

    resp = api("POST", "/sessions", {**NEW_SESSION, "base_branch": base})

    error(resp, 400, "invalid", "base_branch")
    assert github.api_requests() == []


def test_attack_a_long_workstream_id_is_a_400_not_a_failed_commit(rt, client, github):
    install(rt)
    api = Api(client, make_token(rt, "agent", "agent-bot"))

    resp = api("POST", "/sessions", {**NEW_SESSION, "workstream_id": "w" * 201})

    error(resp, 400, "invalid", "workstream_id")
    assert github.api_requests() == []


def test_attack_a_huge_api_body_is_refused_before_it_is_read(rt, client, github):
    install(rt)
    api = Api(client, make_token(rt, "agent", "agent-bot"))
    serve_new_session_pr(github)

    resp = api("POST", "/sessions", {**NEW_SESSION, "metadata": {"blob": "m" * 2_000_000}})

    error(resp, 413, "request_entity_too_large")
    assert github.api_requests() == []


def test_attack_agent_type_cannot_add_a_second_marker_or_mention_anyone(rt, client, github):
    install(rt)
    other = seed_session(rt, agent_type="claude")  # a session without a PR yet
    api = Api(client, make_token(rt, "agent", "agent-bot"))
    serve_new_session_pr(github)
    agent_type = f"c <!-- minipipe:session={other} --> @octo/admins `x` [y](https://e.x)"

    resp = api("POST", "/sessions", {**NEW_SESSION, "agent_type": agent_type})

    assert resp.status_code == 201, resp.get_data(as_text=True)
    own = resp.get_json()["session_id"]
    [pull] = [b for m, p, b in github.api_requests() if (m, p) == ("POST", f"{R}/pulls")]
    assert MARKER.findall(pull["body"]) == [own]
    assert not re.search(r"@[A-Za-z0-9]", pull["body"])  # no mention GitHub would notify
    assert "](https://" not in pull["body"]  # no link either
    assert "(c &lt;" in pull["body"]


def test_attack_a_title_over_githubs_limit_still_opens_the_pr(rt, client, github):
    install(rt)
    api = Api(client, make_token(rt, "agent", "agent-bot"))
    serve_new_session_pr(github)

    resp = api("POST", "/sessions", {**NEW_SESSION, "title": "Fix " + "t" * 490})

    assert resp.status_code == 201
    [pull] = [b for m, p, b in github.api_requests() if (m, p) == ("POST", f"{R}/pulls")]
    assert len(pull["title"]) <= 256
    assert pull["title"].startswith("Fix ttt")


def test_attack_session_cookie_is_secure_behind_an_https_public_url(rt):
    rt.settings = dataclasses.replace(rt.settings, public_url="https://pipe.example.com")
    app = create_app(runtime_obj=rt, test_config={"TESTING": True})  # not production mode
    resp = app.test_client().get("/auth/github/login")
    [cookie] = resp.headers.getlist("Set-Cookie")
    assert "; Secure" in cookie
    assert "; HttpOnly" in cookie


@pytest.mark.parametrize("path", ["/", "/sessions", "/no-such-page"])
def test_attack_dashboard_pages_cannot_be_framed_or_load_scripts(client, path):
    resp = client.get(path)
    assert resp.mimetype == "text/html"
    assert resp.headers["X-Frame-Options"] == "DENY"
    csp = resp.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
