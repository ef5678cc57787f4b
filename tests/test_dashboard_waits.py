"""What waits, through Flask's test client (GitHub faked with ``responses``).

The review queue is what needs a human: a held patch stays in it once approved and
queued, on the dashboard, in the API (``queue=review``) and the CLI, and the SQL
query agrees with ``waits.in_review_queue`` for every state. "Waiting on me" asks
GitHub for the viewer's permission and decides under the comment rules. A finished
delivery replays only after a confirmation that says what it re-sends, and only
for those with the replay permission.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from minipipe_gh.core import people, waits
from minipipe_gh.core.patch_states import PatchState
from minipipe_gh.core.people import Hold, Person
from minipipe_gh.store import ledger
from minipipe_gh.store.db import Database
from minipipe_gh.store.models import AgentSession, Delivery, Patch
from tests import dashboard_support
from tests.dashboard_support import patch_row, post, sign_in
from tests.scenario import REPO, R
from tests.seed import Api, cli_runner, make_token, seed_dead_delivery, seed_installation
from tests.seed import seed_web_patch as seed_patch

# the dashboard's fixtures: sign-in through GitHub's web flow, the repository's side
settings, users, sc = dashboard_support.settings, dashboard_support.users, dashboard_support.sc


@pytest.fixture
def cli(db_url: str, tmp_path: Path) -> Any:
    """The CLI against the same database."""
    return cli_runner(db_url, tmp_path)


P = PatchState
HOLD = Hold(Person("octo-lead", 7), "triage", "wait for the release branch", "2026-12-01T10:00")


def hold(database: Database, session_id: str, *holds: Hold) -> None:
    with database.unit() as s:
        session = s.get(AgentSession, session_id)
        session.meta = people.with_holds(session.meta, holds or [HOLD])


def move(database: Database, ledger_id: str, *to: str) -> None:
    with database.unit() as s:
        patch = s.get(Patch, ledger_id)
        for state in to:
            ledger.transition(s, patch, state, actor="github", source="test", reason="seeded")


def serve_policy(sc: Any, github: Any, text: str) -> None:
    """In place of the dashboard suite's "no policy file" answer."""
    github.rsps.remove("GET", github.url(f"{R}/contents/.github/minipipe.yml"))
    sc.serve_policy(text)


def status_of(database: Database, ident: str) -> tuple[str, int]:
    with database.unit() as s:
        d = s.scalars(select(Delivery).where(Delivery.delivery_id == ident)).one()
        return d.status, d.attempts


# -- the review queue --------------------------------------------------------------------------


def test_a_held_patch_approved_from_the_page_stays_in_the_queue_until_the_hold_is_lifted(
    client, users, rt, sc
):
    seed_installation(rt.database, REPO)
    sid, lid = seed_patch(rt.database, title="Held one")
    hold(rt.database, sid)
    _other, plain = seed_patch(rt.database, title="Plain one", pr_number=3, sha="b" * 40)
    sign_in(client, users, "carol")
    sc.serve_permission("carol", "write")

    resp = post(client, f"/patches/{lid}/approve", {"comment": "ship it"})
    post(client, f"/patches/{plain}/approve")

    assert resp.status_code == 303
    page = client.get(f"/patches/{lid}").text
    assert "Approved by @carol: the patch is queued." in page
    assert "it will not land until the hold is lifted" in page
    assert patch_row(rt.database, lid).state == "queued"
    queue = client.get("/review").text
    assert f'id="row-{lid}"' in queue  # approved and queued, but held: still needs a human
    row = queue.split(f'id="row-{lid}"', 1)[1].split("</tr>", 1)[0]
    assert '<span class="state held">held</span>' in row
    assert "On hold by @octo-lead: wait for the release branch" in row
    assert "Approved and queued" in row
    assert f'id="row-{plain}"' not in queue  # queued and not held: nothing left for a human

    with rt.database.unit() as s:  # the hold is lifted
        session = s.get(AgentSession, sid)
        session.meta = people.with_holds(session.meta, [])
    assert f'id="row-{lid}"' not in client.get("/review").text


@pytest.mark.parametrize("state", list(PatchState))
@pytest.mark.parametrize("held", ["no hold", "holds", "legacy hold"])
def test_the_queue_query_and_the_core_predicate_agree(rt, state, held):
    """``ledger.in_review_queue`` (SQL) is ``waits.in_review_queue`` for every state."""
    sid, lid = seed_patch(rt.database, state="created")
    with rt.database.unit() as s:
        patch = s.get(Patch, lid)
        patch.state = str(state)  # the row as it stands; the ledger's moves are tested elsewhere
        session = s.get(AgentSession, sid)
        if held == "holds":
            session.meta = people.with_holds(session.meta, [HOLD])
        elif held == "legacy hold":
            session.meta = {**session.meta, "hold": HOLD.as_json()}
    with rt.database.unit() as s:
        listed = [p.ledger_id for p in ledger.list_patches_awaiting_review(s).items]
        holds = people.holds(s.get(AgentSession, sid).meta)
    assert bool(holds) == (held != "no hold")
    assert (lid in listed) == waits.in_review_queue(state, bool(holds))
    assert (lid in listed) == (
        state == P.AWAITING_REVIEW
        or (
            held != "no hold"
            and state in (P.CREATED, P.VALIDATED, P.QUARANTINED, P.AWAITING_REVIEW, P.QUEUED)
        )
    )


def test_the_api_and_the_cli_list_the_same_review_queue(client, rt, cli):
    seed_installation(rt.database, REPO)
    sid, held = seed_patch(rt.database, title="Held", state="validated")
    move(rt.database, held, "queued")
    hold(rt.database, sid)
    _s2, waiting = seed_patch(rt.database, title="Waiting", pr_number=3, sha="b" * 40)
    _s3, queued = seed_patch(
        rt.database, title="Queued", pr_number=4, sha="c" * 40, state="validated"
    )
    move(rt.database, queued, "queued")
    api = Api(client, make_token(rt, "reviewer", "carol", repositories=[REPO]))

    listed = api("GET", "/patches?queue=review")

    assert listed.status_code == 200, listed.text
    items = listed.get_json()["items"]
    assert [p["ledger_id"] for p in items] == sorted([held, waiting])
    by_id = {p["ledger_id"]: p for p in items}
    assert [w["kind"] for w in by_id[held]["waiting_for"]] == ["hold", "merge"]
    assert api("GET", "/patches?queue=nope").status_code == 400
    every = [p["ledger_id"] for p in api("GET", "/patches").get_json()["items"]]
    assert queued in every  # without ``queue`` the listing is every patch, as before

    shown = cli("reviews", "list", "--json")
    assert shown.exit_code == 0, shown.output
    assert [p["ledger_id"] for p in json.loads(shown.stdout)["items"]] == sorted([held, waiting])


# -- waiting on me ---------------------------------------------------------------------------


def sessions_page(client: Any, mine: bool = False) -> str:
    return client.get("/sessions?mine=1" if mine else "/sessions").text


def test_a_reader_is_never_told_a_patch_waits_on_them(client, users, rt, sc):
    seed_installation(rt.database, REPO)
    _sid, lid = seed_patch(rt.database, title="Needs review")
    sign_in(client, users, "bob")
    sc.serve_permission("bob", "read")

    assert "on you" not in sessions_page(client)
    mine = sessions_page(client, mine=True)
    assert "Needs review" not in mine
    # the page agrees with what the decision answers
    refused = post(client, f"/patches/{lid}/approve")
    assert refused.status_code == 403


def test_a_writer_is_told_and_the_filter_keeps_the_patch(client, users, rt, sc):
    seed_installation(rt.database, REPO)
    seed_patch(rt.database, title="Needs review")
    seed_patch(rt.database, title="Checks running", pr_number=3, sha="b" * 40, state="created")
    sign_in(client, users, "carol")
    sc.serve_permission("carol", "write")

    mine = sessions_page(client, mine=True)

    assert "Needs review" in mine and "on you" in mine
    assert "Checks running" not in mine  # waits on CI, not on a reviewer


def test_the_author_and_a_viewer_github_cannot_place_are_not_waited_on(client, users, rt, sc):
    seed_installation(rt.database, REPO)
    seed_patch(rt.database, title="Needs review")
    sign_in(client, users, "agent-bot")
    sc.serve_permission("agent-bot", "write")
    assert "Needs review" not in sessions_page(client, mine=True)  # their own patch

    sign_in(client, users, "dan")  # GitHub answers nothing for dan's permission: unknown
    page = client.get("/sessions")
    assert page.status_code == 200 and "Needs review" in page.text
    assert "on you" not in page.text


def test_a_high_risk_patch_waits_only_on_the_listed_reviewers(client, users, rt, sc, github):
    serve_policy(sc, github, "review:\n  reviewers: [alice]\n")
    seed_installation(rt.database, REPO)
    seed_patch(rt.database, title="Needs review")  # high risk
    sign_in(client, users, "carol")
    sc.serve_permission("carol", "write")
    assert "Needs review" not in sessions_page(client, mine=True)

    sign_in(client, users, "alice")
    sc.serve_permission("alice", "write")
    assert "Needs review" in sessions_page(client, mine=True)


def test_a_triager_is_waited_on_for_a_hold_they_may_lift_not_for_an_approval(client, users, rt, sc):
    seed_installation(rt.database, REPO)
    seed_patch(rt.database, title="Not held")
    sid, _lid = seed_patch(rt.database, title="Held one", pr_number=3, sha="b" * 40)
    hold(rt.database, sid)
    sign_in(client, users, "tia")
    sc.serve_permission("tia", "triage")

    mine = sessions_page(client, mine=True)

    assert "Held one" in mine and "Not held" not in mine


def test_an_approver_who_already_approved_is_not_waited_on_again(client, users, rt, sc, github):
    serve_policy(sc, github, "review:\n  required_approvals: 2\n")
    seed_installation(rt.database, REPO)
    _sid, lid = seed_patch(rt.database, title="Needs two")
    sign_in(client, users, "carol")
    sc.serve_permission("carol", "write")
    assert "Needs two" in sessions_page(client, mine=True)

    assert post(client, f"/patches/{lid}/approve").status_code == 303
    assert patch_row(rt.database, lid).state == "awaiting_review"  # one of two
    assert "Needs two" not in sessions_page(client, mine=True)


# -- replaying a finished delivery -------------------------------------------------------------


def finished(database: Database) -> str:
    ident = seed_dead_delivery(database, status="done")
    with database.unit() as s:
        d = s.scalars(select(Delivery).where(Delivery.delivery_id == ident)).one()
        d.effects = [
            {"kind": "check_run", "result": "done"},
            {"kind": "react", "result": "gave_up"},
        ]
        d.last_error = None
    return ident


def test_a_finished_delivery_asks_to_confirm_and_says_what_it_re_sends(client, users, rt, sc):
    seed_installation(rt.database, REPO)
    done = finished(rt.database)
    sign_in(client, users, "alice")
    sc.serve_permission("alice", "admin")

    found = client.get(f"/deliveries/find?delivery={done}")
    assert found.status_code == 303 and found.headers["Location"] == f"/deliveries/{done}/replay"
    page = client.get(f"/deliveries/{done}/replay").text
    assert "done: it already finished" in page
    assert '<p id="resends">a reaction</p>' in page  # the check run was written already
    assert "Confirm: replay it" in page

    asked = post(client, f"/deliveries/{done}/replay")  # not confirmed: asked again
    assert asked.status_code == 409
    assert "Confirm: replay it" in asked.text and "a reaction" in asked.text
    assert status_of(rt.database, done) == ("done", 3)

    resp = post(client, f"/deliveries/{done}/replay", {"confirm": "done"})
    assert resp.status_code == 303
    assert status_of(rt.database, done) == ("effects", 0)


def test_a_finished_delivery_whose_writes_all_succeeded_says_none_is_repeated(
    client, users, rt, sc
):
    seed_installation(rt.database, REPO)
    done = finished(rt.database)
    with rt.database.unit() as s:
        d = s.scalars(select(Delivery).where(Delivery.delivery_id == done)).one()
        d.effects = [
            {"kind": "check_run", "result": "done"},
            {"kind": "react", "result": "refused"},
        ]
    sign_in(client, users, "alice")
    sc.serve_permission("alice", "admin")

    page = client.get(f"/deliveries/{done}/replay").text

    assert "nothing: every GitHub write it made already succeeded, so none is repeated" in page


@pytest.mark.parametrize("role", ["read", "write"])
def test_a_confirmed_replay_by_someone_without_the_permission_is_403(client, users, rt, sc, role):
    seed_installation(rt.database, REPO)
    done = finished(rt.database)
    sign_in(client, users, "bob")
    sc.serve_permission("bob", role)

    page = client.get(f"/deliveries/{done}/replay").text
    assert "Confirm: replay it" not in page
    assert "Replay needs <code>maintain</code> or <code>admin</code>" in page

    resp = post(client, f"/deliveries/{done}/replay", {"confirm": "done"})

    assert resp.status_code == 403
    assert f"@bob has <code>{role}</code> permission on {REPO}" in resp.text
    assert status_of(rt.database, done) == ("done", 3)  # nothing queued again


def test_a_delivery_the_worker_is_still_on_is_not_replayed(client, users, rt, sc):
    seed_installation(rt.database, REPO)
    busy = seed_dead_delivery(rt.database, status="effects")
    sign_in(client, users, "alice")
    sc.serve_permission("alice", "admin")

    assert "nothing to replay yet" in client.get(f"/deliveries/{busy}/replay").text
    resp = post(client, f"/deliveries/{busy}/replay", {"confirm": "effects"})
    assert resp.status_code == 409 and "the worker is still on it" in resp.text
    assert status_of(rt.database, busy) == ("effects", 3)


def test_another_repositorys_delivery_has_no_replay_page(client, users, rt, sc):
    seed_installation(rt.database, REPO)
    hidden = seed_dead_delivery(rt.database, repo="octo-org/secret-service", status="done")
    sign_in(client, users, "alice")

    assert client.get(f"/deliveries/{hidden}/replay").status_code == 404
    assert client.get(f"/deliveries/find?delivery={hidden}").status_code == 404
    assert client.get("/deliveries/find?delivery=").status_code == 400


def test_the_replay_permission_is_read_from_github(client, users, rt, sc, github):
    seed_installation(rt.database, REPO)
    done = finished(rt.database)
    sign_in(client, users, "mia")
    sc.serve_permission("mia", "maintain")

    assert post(client, f"/deliveries/{done}/replay", {"confirm": "done"}).status_code == 303
    asked = [c.request.url for c in github.rsps.calls]
    assert any(url.endswith(f"{R}/collaborators/mia/permission") for url in asked)
