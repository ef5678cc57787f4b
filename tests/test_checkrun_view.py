"""What the `minipipe/review` check run says (spec: "The check run"), from unsaved patches."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from minipipe_gh.core.checkrun import NAME, View, body
from minipipe_gh.core.patch_states import PatchState
from minipipe_gh.core.people import Hold, Person
from minipipe_gh.store.models import AuditEntry, Patch

SHA = "0123456789abcdef0123456789abcdef01234567"
LEDGER_ID = "01J0000000000000000000LEDG"


def patch(
    state: PatchState,
    *,
    risk: str = "low",
    risk_reasons: list[str] | None = None,
    **meta: Any,
) -> Patch:
    return Patch(
        ledger_id=LEDGER_ID,
        patch_id=SHA,
        session_id="01J00000000000000000000SES",
        project_id="acme/widgets",
        state=str(state),
        risk=risk,
        risk_reasons=risk_reasons or [],
        meta={"review_status": "pending", "approvals": [], **meta},
    )


def status_of(out: dict[str, Any]) -> tuple[str, str | None]:
    return out["status"], out.get("conclusion")


def text_of(out: dict[str, Any]) -> str:
    return out["output"]["title"] + "\n" + out["output"]["summary"]


def labels(out: dict[str, Any]) -> list[str]:
    return [a["label"] for a in out.get("actions", [])]


# --- the request body ---------------------------------------------------------------


def test_body_names_the_check_and_the_patch() -> None:
    out = body(patch(PatchState.CREATED), View())
    assert out["name"] == NAME == "minipipe/review"
    assert out["head_sha"] == SHA
    assert out["external_id"] == LEDGER_ID
    assert out["output"]["title"]
    assert out["output"]["summary"]


# --- state → (status, conclusion) ----------------------------------------------------


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (PatchState.CREATED, ("in_progress", None)),
        (PatchState.QUARANTINED, ("completed", "failure")),
        (PatchState.AWAITING_REVIEW, ("completed", "action_required")),
        (PatchState.QUEUED, ("completed", "success")),
        (PatchState.DROPPED, ("completed", "failure")),
        (PatchState.APPLIED, ("completed", "success")),
        (PatchState.VERIFIED, ("completed", "success")),
        (PatchState.COMMITTED, ("completed", "success")),
        (PatchState.ROLLED_BACK, ("completed", "failure")),
    ],
)
def test_status_and_conclusion_per_state(
    state: PatchState, expected: tuple[str, str | None]
) -> None:
    out = body(patch(state), View())
    assert status_of(out) == expected
    assert f"`{state}`" in out["output"]["summary"]


def test_in_progress_has_no_conclusion_and_no_actions() -> None:
    out = body(patch(PatchState.CREATED), View())
    assert "conclusion" not in out
    assert "actions" not in out
    assert "checks" in out["output"]["title"].lower()


def test_awaiting_review_has_approve_and_reject_buttons() -> None:
    out = body(patch(PatchState.AWAITING_REVIEW, risk="high"), View())
    assert status_of(out) == ("completed", "action_required")
    assert labels(out) == ["Approve", "Reject"]
    for action in out["actions"]:
        # GitHub's limits on check-run actions.
        assert len(action["label"]) <= 20
        assert len(action["identifier"]) <= 20
        assert len(action["description"]) <= 40
    assert {a["identifier"] for a in out["actions"]} == {"approve", "reject"}


@pytest.mark.parametrize(
    "state", [PatchState.QUARANTINED, PatchState.QUEUED, PatchState.DROPPED, PatchState.COMMITTED]
)
def test_other_completed_states_clear_the_buttons(state: PatchState) -> None:
    out = body(patch(state), View())
    assert out["status"] == "completed"
    assert out["actions"] == []


def test_queued_low_risk_says_it_was_queued_automatically() -> None:
    out = body(patch(PatchState.QUEUED), View())
    assert "automatically" in out["output"]["title"]


def test_queued_after_approval_shows_the_approval_count() -> None:
    out = body(patch(PatchState.QUEUED, approvals=["alice"]), View(required_approvals=1))
    assert status_of(out) == ("completed", "success")
    assert "1 of 1 approvals" in out["output"]["title"]
    assert "@alice" in out["output"]["summary"]


def test_dropped_shows_the_drop_reason() -> None:
    out = body(patch(PatchState.DROPPED, drop_reason="PR closed unmerged"), View())
    assert status_of(out) == ("completed", "failure")
    assert "PR closed unmerged" in out["output"]["title"]
    assert "PR closed unmerged" in out["output"]["summary"]


def test_rejected_shows_the_rejection_reason() -> None:
    out = body(
        patch(
            PatchState.DROPPED,
            review_status="rejected",
            review_reason="breaks the login flow",
            reviewed_by="alice",
        ),
        View(),
    )
    assert status_of(out) == ("completed", "failure")
    assert "breaks the login flow" in out["output"]["title"]
    assert "@alice" in out["output"]["summary"]


def test_superseded_after_a_review_request_shows_why_it_was_dropped() -> None:
    # `/review <reason>` stores review_reason; a later push drops the patch with
    # drop_reason. The check run must say the patch was superseded, not repeat the
    # old review request as if it were why the patch was dropped.
    out = body(
        patch(
            PatchState.DROPPED,
            manual_review_required=True,
            review_reason="please look at the migration",
            drop_reason="superseded by 89abcdef0123",
        ),
        View(),
    )
    assert status_of(out) == ("completed", "failure")
    assert "superseded by 89abcdef0123" in out["output"]["title"]


def test_a_long_drop_reason_is_cut_for_the_title() -> None:
    out = body(patch(PatchState.DROPPED, drop_reason="x" * 500), View())
    assert len(out["output"]["title"]) <= 200
    assert out["output"]["title"].startswith("Dropped: x")


def test_dropped_without_a_reason_still_fails() -> None:
    out = body(patch(PatchState.DROPPED), View())
    assert status_of(out) == ("completed", "failure")
    assert out["output"]["title"] == "Dropped"


# --- holds ----------------------------------------------------------------------------


def hold(login: str, reason: str, permission: str = "triage") -> Hold:
    return Hold(Person(login), permission, reason, "2026-01-01T00:00:00+00:00")


@pytest.mark.parametrize(
    "state",
    [PatchState.CREATED, PatchState.AWAITING_REVIEW, PatchState.QUEUED, PatchState.QUARANTINED],
)
def test_a_hold_is_action_required_without_buttons_naming_holder_and_reason(
    state: PatchState,
) -> None:
    holds = [hold("hank", "waiting for the release freeze")]
    out = body(patch(state, approvals=["alice"]), View(holds=holds))
    assert status_of(out) == ("completed", "action_required")
    assert out["actions"] == []
    assert "@hank" in out["output"]["title"]
    assert "@hank" in out["output"]["summary"]
    assert "waiting for the release freeze" in out["output"]["summary"]


def test_every_holder_and_reason_is_shown() -> None:
    holds = [hold("hank", "release freeze", "write"), hold("Mona", "security review", "admin")]
    out = body(patch(PatchState.QUEUED, approvals=["alice"]), View(holds=holds))
    assert status_of(out) == ("completed", "action_required")
    assert out["output"]["title"] == "On hold by @hank, @Mona"
    summary = out["output"]["summary"]
    assert "- Hold: @hank (`write`): release freeze" in summary
    assert "- Hold: @Mona (`admin`): security review" in summary


def test_a_hold_without_reason_says_so() -> None:
    out = body(patch(PatchState.QUEUED), View(holds=[hold("hank", "")]))
    assert status_of(out) == ("completed", "action_required")
    assert "@hank" in text_of(out)
    assert "no reason" in out["output"]["summary"]


@pytest.mark.parametrize("state", [PatchState.DROPPED, PatchState.ROLLED_BACK])
def test_a_hold_does_not_revive_a_finished_patch(state: PatchState) -> None:
    out = body(patch(state), View(holds=[hold("hank", "x")]))
    assert status_of(out) == ("completed", "failure")


# --- policy errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    "state", [PatchState.CREATED, PatchState.AWAITING_REVIEW, PatchState.QUEUED]
)
def test_a_policy_error_is_action_required_with_the_error_text(state: PatchState) -> None:
    error = ".github/minipipe.yml: line 3: `review.required_approvals` must be a whole number"
    out = body(patch(state), View(policy_error=error))
    assert status_of(out) == ("completed", "action_required")
    assert "minipipe.yml" in out["output"]["title"]
    assert error in out["output"]["summary"]
    assert "line 3" in out["output"]["summary"]


# --- the summary --------------------------------------------------------------------


def test_summary_shows_approval_progress() -> None:
    out = body(
        patch(PatchState.AWAITING_REVIEW, risk="high", approvals=["alice"]),
        View(required_approvals=2),
    )
    assert "1 of 2 approvals" in text_of(out)
    assert "1 of 2" in out["output"]["summary"]
    assert "@alice" in out["output"]["summary"]


def test_summary_shows_zero_progress() -> None:
    out = body(patch(PatchState.AWAITING_REVIEW), View(required_approvals=3))
    assert "0 of 3 approvals" in text_of(out)


def test_summary_shows_risk_and_its_reasons() -> None:
    reasons = ["touches high-risk paths: src/auth/login.py", "900 changed lines, over 400"]
    out = body(patch(PatchState.AWAITING_REVIEW, risk="high", risk_reasons=reasons), View())
    summary = out["output"]["summary"]
    assert "`high`" in summary
    for reason in reasons:
        assert reason in summary


def test_summary_shows_the_reviewer() -> None:
    out = body(
        patch(
            PatchState.QUEUED,
            approvals=["alice"],
            review_status="approved",
            reviewed_by="alice",
        ),
        View(),
    )
    assert "Reviewer: @alice" in out["output"]["summary"]


def test_summary_shows_the_review_request_reason() -> None:
    out = body(
        patch(
            PatchState.AWAITING_REVIEW,
            manual_review_required=True,
            review_reason="touches billing",
            reviewed_by="rob",
        ),
        View(),
    )
    assert "touches billing" in out["output"]["summary"]
    assert "@rob" in out["output"]["summary"]


def test_summary_lists_stale_approvals() -> None:
    view = View(stale_approvals=["@alice approved 0123456789ab"])
    out = body(patch(PatchState.AWAITING_REVIEW), view)
    assert "@alice approved 0123456789ab" in out["output"]["summary"]


def test_summary_lists_recent_transitions_and_refusals() -> None:
    at = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    recent = [
        AuditEntry(
            from_state="created",
            to_state="validated",
            outcome="moved",
            actor="minipipe",
            reason="checks passed",
            at=at,
        ),
        AuditEntry(
            from_state="validated",
            to_state="awaiting_review",
            outcome="moved",
            actor="minipipe",
            reason="high risk",
            at=at,
        ),
        AuditEntry(
            from_state="awaiting_review",
            to_state="queued",
            outcome="refused",
            actor="author",
            reason="cannot approve their own patch",
            at=at,
        ),
    ]
    out = body(patch(PatchState.AWAITING_REVIEW), View(recent=recent))
    summary = out["output"]["summary"]
    assert "created → validated" in summary
    assert "validated → awaiting_review" in summary
    assert "refused by author: cannot approve their own patch" in summary
    assert "2024-05-01 12:30" in summary
    assert summary.index("created → validated") < summary.index("refused by author")


# --- guardrails --------------------------------------------------------------------------


def test_a_blocked_patch_is_a_failure_titled_by_its_guardrails() -> None:
    rails = {
        "verdict": "block",
        "lines": [
            "protected paths: blocked, touches protected paths: CODEOWNERS "
            "(agents.default.on_protected: block)",
            "allowed paths: no limit",
            "changed files: 1 (no limit)",
        ],
        "reasons": ["touches protected paths: CODEOWNERS (agents.default.on_protected: block)"],
    }
    out = body(patch(PatchState.QUARANTINED, guardrails=rails), View())
    assert status_of(out) == ("completed", "failure")
    assert out["output"]["title"] == "Blocked by its guardrails"
    assert labels(out) == []
    summary = out["output"]["summary"]
    assert "- Guardrails: `block`" in summary
    for line in rails["lines"]:
        assert f"  - {line}" in summary


def test_a_quarantined_patch_its_guardrails_pass_still_says_its_checks_failed() -> None:
    rails = {"verdict": "pass", "lines": ["protected paths: none touched"], "reasons": []}
    out = body(patch(PatchState.QUARANTINED, guardrails=rails), View())
    assert out["output"]["title"] == "Checks failed: patch quarantined"
    assert "- Guardrails: `pass`" in out["output"]["summary"]


def test_a_protected_patch_says_who_may_approve_it() -> None:
    rails = {"verdict": "review", "lines": ["protected paths: review, ..."], "reasons": ["x"]}
    out = body(
        patch(PatchState.AWAITING_REVIEW, guardrails=rails, approve_permission="maintain"), View()
    )
    assert status_of(out) == ("completed", "action_required")
    assert "- Approvers need `maintain` or more" in out["output"]["summary"]
