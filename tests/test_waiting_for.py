"""What a patch waits for: one list, the same on the check run and in the API.

Every patch state of the state table, with no hold, one hold and two holds,
with and without approvals or check names recorded: the check run's "Next:" line
is the first wait's summary, every wait the API lists is on the check run, and a
held open patch says so on both.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest

from minipipe_gh.core import people, waits
from minipipe_gh.core.checkrun import View, body, patch_url
from minipipe_gh.core.patch_states import OPEN, TRANSITIONS, PatchState
from minipipe_gh.core.people import Hold, Person
from minipipe_gh.store import ledger, registry
from minipipe_gh.store.models import AgentSession, Patch
from tests.seed import PR_INSTALLATION, PR_META, Api, install, make_token, seed_session

P = PatchState
SHA = "c" * 40
HOLDS = {
    "no hold": [],
    "one hold": [Hold(Person("octo-lead", 7), "triage", "waiting for the release", "2026-01-01")],
    "two holds": [
        Hold(Person("octo-lead", 7), "triage", None, "2026-01-01"),
        Hold(Person("sec-team", 8), "maintain", "security review", "2026-01-02"),
    ],
}
EXTRAS = {
    "plain": {},
    "half approved": {
        "required_approvals": 2,
        "approvers": [{"login": "alice", "id": 11, "sha": SHA}],
        "approvals": ["alice"],
    },
    "checks named": {
        "checks": {
            "verdict": "failure",
            "failing": ["lint"],
            "pending": ["test (3.12)"],
            "reported": 2,
            "required": True,
        }
    },
}


@pytest.fixture
def reader(rt: Any, client: Any, github: Any) -> Api:
    """The API as the session's bot (installed on the test repository)."""
    install(rt)
    return Api(client, make_token(rt, "agent", "agent-bot"))


def path_to(target: PatchState) -> list[PatchState]:
    """The shortest legal walk from ``created`` to ``target`` in the state table."""
    seen: dict[PatchState, list[PatchState]] = {P.CREATED: []}
    todo = deque([P.CREATED])
    while todo:
        at = todo.popleft()
        for nxt in sorted(TRANSITIONS[at]):
            if nxt not in seen:
                seen[nxt] = [*seen[at], nxt]
                todo.append(nxt)
    return seen[target]


def seed(rt: Any, state: PatchState, holds: list[Hold], extra: dict[str, Any]) -> str:
    sid = seed_session(rt, pr_number=2, meta=PR_META, installation_id=PR_INSTALLATION)
    with rt.database.unit() as s:
        session = registry.get_session(s, sid)
        session.meta = people.with_holds(session.meta, holds)
        patch = ledger.record_patch(
            s,
            session,
            SHA,
            actor="agent-bot",
            source="test",
            files=1,
            additions=3,
            paths=["src/auth/login.py"],
            risk="high",
            risk_reasons=["touches high-risk paths: src/auth/login.py"],
        )
        for to in path_to(state):
            ledger.transition(s, patch, to, actor="github", source="test", reason="seed")
        patch.meta = {**patch.meta, **extra}
        return patch.ledger_id


@pytest.mark.parametrize("extra", list(EXTRAS), ids=list(EXTRAS))
@pytest.mark.parametrize("hold", list(HOLDS), ids=list(HOLDS))
@pytest.mark.parametrize("state", list(TRANSITIONS), ids=[str(s) for s in TRANSITIONS])
def test_the_check_run_and_the_api_say_the_same_wait(
    rt: Any, reader: Api, state: PatchState, hold: str, extra: str
) -> None:
    lid = seed(rt, state, HOLDS[hold], EXTRAS[extra])
    resp = reader("GET", f"/patches/{lid}")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    listed = resp.get_json()["waiting_for"]
    with rt.database.unit() as s:
        patch = s.get(Patch, lid)
        session = s.get(AgentSession, patch.session_id)
        required = int(patch.meta.get("required_approvals") or 1)
        out = body(
            patch,
            View.of(patch, session.meta, required_approvals=required, policy_error=None),
        )
    summary = out["output"]["summary"]

    if state not in OPEN:
        assert listed == []
        assert "Waits for:" not in summary and "Next:" not in summary
        return
    assert listed, "an open patch always says what it waits for"
    assert {w["kind"] for w in listed} <= set(waits.KINDS)
    assert f"Next: {listed[0]['summary']}" in summary
    for wait in listed:
        assert f"- {wait['summary']}" in summary
        for detail in wait["details"]:
            assert f"  - {detail}" in summary
    held = [w for w in listed if w["kind"] == "hold"]
    assert [w["who"] for w in held] == [[h.by.login] for h in HOLDS[hold]]
    if HOLDS[hold]:
        # held: the first thing said is the hold, and the check run is not a success
        assert listed[0]["kind"] == "hold"
        assert "will not land until the hold is lifted" in listed[0]["summary"]
        assert out["conclusion"] == "action_required"
        assert out["output"]["title"].startswith("On hold by @octo-lead")
        assert "actions" not in out or out["actions"] == []
    if state == P.AWAITING_REVIEW:
        [need] = [w for w in listed if w["kind"] == "approvals"]
        given = 1 if extra == "half approved" else 0
        assert need["summary"] == (
            "Needs 1 approval from a writer: comment `/approve`, or use the button"
        )
        assert need["details"][0] == f"{given} of {required} approvals"
    if state == P.QUARANTINED:
        [failing] = [w for w in listed if w["kind"] == "failing_checks"]
        if extra == "checks named":
            assert failing["summary"].startswith("Failing check: lint:")
    if state == P.CREATED and extra != "checks named":
        assert listed[-1]["summary"] == "Waiting for checks: no checks reported yet"
        if not HOLDS[hold]:
            assert out["output"]["title"] == "Waiting for checks: no checks reported yet"
        assert "validation.required_checks" in summary
    if state == P.CREATED and extra == "checks named":
        assert listed[-1]["summary"] == "Waiting for 1 check: test (3.12)"


def test_counts_are_worded_right() -> None:
    assert waits.plural(1, "file") == "1 file"
    assert waits.plural(2, "file") == "2 files"
    assert waits.plural(0, "approval") == "0 approvals"
    meta = {"approvers": [{"login": "a", "sha": SHA}, {"login": "b", "sha": SHA}]}
    [need] = waits.waiting_for("awaiting_review", meta, required_approvals=1)
    assert need.details[0] == "2 of 2 approvals"  # never "2 of 1"
    maint = waits.waiting_for("awaiting_review", {"approve_permission": "maintain"})
    assert maint[0].summary.startswith("Needs 1 approval from a maintainer:")


def test_the_check_run_links_the_patch_page_only_from_a_public_url() -> None:
    assert (
        patch_url("https://gate.example.com/", "01LID") == "https://gate.example.com/patches/01LID"
    )
    assert patch_url(None, "01LID") is None
    assert patch_url("gate.example.com", "01LID") is None
    patch = Patch(
        ledger_id="01LID",
        patch_id=SHA,
        session_id="s",
        project_id="o/r",
        state="created",
        risk="low",
        risk_reasons=[],
        meta={},
    )
    view = View.of(
        patch,
        {},
        required_approvals=1,
        policy_error=None,
        public_url="https://gate.example.com",
    )
    assert body(patch, view)["details_url"] == "https://gate.example.com/patches/01LID"
    assert "details_url" not in body(patch, View())


def test_logs_carry_no_colour_codes_off_a_terminal() -> None:
    import io
    import logging

    from minipipe_gh.delivery.logs import PlainFormatter, is_terminal

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(PlainFormatter("%(levelname)s %(message)s"))
    log = logging.getLogger("tests.waits.colour")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning('\x1b[32m"GET /review HTTP/1.1" 200 -\x1b[0m')
    finally:
        log.removeHandler(handler)
    assert stream.getvalue() == 'WARNING "GET /review HTTP/1.1" 200 -\n'
    assert not is_terminal(stream)


def test_the_checks_verdict_names_failing_and_pending_checks() -> None:
    from minipipe_gh.core.validation import runs_checks, suites_checks

    def run(rid: int, name: str, status: str, conclusion: str | None, app: int = 5) -> dict:
        return {
            "id": rid,
            "name": name,
            "status": status,
            "conclusion": conclusion,
            "app": {"id": app},
            "check_suite": {"id": 1},
        }

    runs = [
        run(1, "lint", "completed", "failure"),
        run(2, "test", "in_progress", None),
        run(3, "build", "completed", "success"),
        run(4, "minipipe/review", "completed", "failure", app=99),  # ours: never counts
    ]
    got = runs_checks(runs, ["lint", "test", "build", "docs"], own_app_id=99)
    assert (got.verdict, got.failing, got.pending) == ("failure", ("lint",), ("test", "docs"))
    assert got.reported == 3 and got.required

    none = suites_checks([], own_app_id=99)
    assert (none.verdict, none.reported) == ("success", 0)
    suites = [
        {"id": 7, "status": "completed", "conclusion": "failure", "app": {"id": 5, "name": "CI"}},
        {"id": 8, "status": "queued", "app": {"id": 6, "slug": "codecov"}},
    ]
    named = suites_checks(suites, own_app_id=99)
    assert (named.verdict, named.failing, named.pending) == ("failure", ("CI",), ("codecov",))


def test_a_patch_validated_on_no_checks_says_no_checks_were_reported() -> None:
    meta = {"checks": {"verdict": "success", "failing": [], "pending": [], "reported": 0}}
    [queued] = waits.waiting_for("queued", meta)
    assert queued.summary.startswith("Queued automatically (low risk")
    assert queued.details[-1].startswith("no checks reported yet: it validated with nothing")
    assert "validation.required_checks" in queued.details[-1]
    out = body(
        Patch(
            ledger_id="01LID",
            patch_id=SHA,
            session_id="s",
            project_id="o/r",
            state="queued",
            risk="low",
            risk_reasons=[],
            meta=meta,
        ),
        View(),
    )
    assert f"  - {queued.details[-1]}" in out["output"]["summary"]


def test_a_move_to_the_state_it_is_in_says_already() -> None:
    from minipipe_gh.core.errors import IllegalTransition

    assert str(IllegalTransition("patch", "01X", "dropped", "dropped")) == (
        "patch 01X is already dropped"
    )
    assert str(IllegalTransition("patch", "01X", "dropped", "queued")) == (
        "patch 01X cannot move from dropped to queued"
    )


def test_a_high_risk_patch_says_only_the_listed_reviewers_may_approve(
    rt: Any, deliver: Any, github: Any, reader: Api
) -> None:
    """With `review.reviewers` / `reviewer_teams`, the wait names them, on GitHub and in the API."""
    from tests.scenario import R, Scenario
    from tests.seed import drain, only_patch, writes

    sc = Scenario(deliver, github)
    sc.serve_policy("review:\n  reviewers: [alice]\n  reviewer_teams: [octo/security]\n")
    sc.serve_files("src/auth/login.py")
    sc.serve_green()
    sc.serve_writes()
    sc.pr_event("opened")
    drain(rt)
    patch = only_patch(rt)
    assert (patch.state, patch.risk) == ("awaiting_review", "high")
    said = (
        "Needs 1 approval from one of @alice, @octo/security: comment `/approve`, or use the button"
    )
    check = [w for w in writes(github) if w[1].startswith(f"{R}/check-runs")][-1][2]
    assert f"Next: {said}" in check["output"]["summary"]
    [need] = [w for w in reader("GET", f"/patches/{patch.ledger_id}").get_json()["waiting_for"]
              if w["kind"] == "approvals"]  # fmt: skip
    assert need["summary"] == said and need["who"] == ["alice", "octo/security"]


# -- on whom a patch waits: the comment rules (``authz``), no second copy ------------------

AUTHOR = Person("agent-bot", 99)


def _waits_on(
    login: str | None,
    permission: str = "write",
    *,
    state: PatchState = P.AWAITING_REVIEW,
    holds: list[Hold] | None = None,
    policy: Any = None,
    risk: str = "low",
    approved: tuple[str, ...] = (),
    meta: dict[str, Any] | None = None,
    teams: frozenset[str] = frozenset(),
) -> bool:
    from minipipe_gh.core.authz import Actor, PullFacts
    from minipipe_gh.core.policy import Policy

    held = holds or []
    listed = waits.waiting_for(state, meta or {}, holds=held)
    actor = None if login is None else Actor(login, permission, teams=teams)
    facts = PullFacts(author=AUTHOR, session_bot=AUTHOR, risk=risk)
    return waits.waiting_on(
        actor, listed, policy=policy or Policy(), facts=facts, holds=held, approved=approved
    )


@pytest.mark.parametrize(
    ("permission", "expected"),
    [("none", False), ("read", False), ("triage", False), ("write", True), ("admin", True)],
)
def test_an_approval_waits_on_those_whose_permission_the_rules_accept(
    permission: str, expected: bool
) -> None:
    assert _waits_on("carol", permission) is expected


def test_nothing_waits_on_the_author_an_approver_already_counted_or_an_unknown_viewer() -> None:
    assert _waits_on("agent-bot") is False
    assert _waits_on("carol", approved=("Carol",)) is False
    assert _waits_on(None) is False  # GitHub could not say what carol may do
    assert _waits_on("carol", state=P.CREATED) is False  # it waits on its checks


def test_a_hold_waits_on_those_who_may_lift_it() -> None:
    held = [HOLDS["two holds"][0]]  # octo-lead, placed with triage
    assert _waits_on("tia", "triage", state=P.QUEUED, holds=held) is True
    assert _waits_on("tia", "triage", state=P.QUEUED) is False  # queued, nothing to lift
    assert _waits_on("bob", "read", state=P.QUEUED, holds=held) is False
    assert _waits_on("agent-bot", "admin", state=P.QUEUED, holds=held) is False  # an author
    strict = [HOLDS["two holds"][1]]  # sec-team, placed with maintain
    assert _waits_on("carol", "write", state=P.QUEUED, holds=strict) is False
    assert _waits_on("mia", "maintain", state=P.QUEUED, holds=strict) is True


def test_a_high_risk_patch_waits_only_on_its_listed_reviewers() -> None:
    from minipipe_gh.core.policy import Policy

    policy = Policy(reviewers=("alice",), reviewer_teams=("octo/security",))
    assert _waits_on("carol", risk="high", policy=policy) is False
    assert _waits_on("alice", risk="high", policy=policy) is True
    sec = frozenset({"octo/security"})
    assert _waits_on("sam", risk="high", policy=policy, teams=sec) is True


def test_the_review_queue_is_awaiting_review_or_any_open_patch_under_a_hold() -> None:
    for state in PatchState:
        assert waits.in_review_queue(state, held=False) is (state == P.AWAITING_REVIEW)
        assert waits.in_review_queue(state, held=True) is (state in OPEN)


def test_a_replay_says_what_it_re_sends() -> None:
    from minipipe_gh.core.lost import replay_in_words

    assert replay_in_words(True, ["react", "reply", "react"]) == "a reaction, a reply comment"
    assert replay_in_words(True, []) == (
        "nothing: every GitHub write it made already succeeded, so none is repeated"
    )
    assert replay_in_words(False, []).startswith("nothing it sent before: its handler runs again")
