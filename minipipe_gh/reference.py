"""``docs/reference.md``, generated from the code's own tables so it cannot drift.

- PR-comment commands: ``commands.COMMANDS``;
- policy keys, their types and defaults: ``policy._SCHEMA`` and ``policy.Policy``;
- check-run states: ``checkrun.body`` applied to a patch in each ``PatchState``;
- settings: ``config.SETTINGS``;
- the GitHub App's permissions and events: ``app.yml``;
- the command line: the ``click`` group itself.

``python -m minipipe_gh.reference --write`` regenerates the file; ``tests/test_docs.py``
fails when it differs from what the code says.
"""

from __future__ import annotations

import dataclasses
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
import yaml

from minipipe_gh.conf import config, resources
from minipipe_gh.core import checkrun, commands, policy
from minipipe_gh.core.patch_states import PatchState
from minipipe_gh.core.people import Hold, Person
from minipipe_gh.store.models import Patch

HOLD = Hold(Person("LOGIN"), "triage", None, "")

KINDS = {
    "permission": "one of " + ", ".join(f"`{p}`" for p in policy.PERMISSIONS[1:]),
    "logins": "list of GitHub logins",
    "teams": 'list of `"org/team-slug"`',
    "bool": "`true` or `false`",
    "positive_int": "whole number, at least 1",
    "non_negative_int": "whole number, at least 0",
    "globs": "list of gitignore-style globs",
    "strings": "list of strings",
    "prefix": "branch-name prefix",
    "duration": "duration: `30m`, `12h`, `7d`, `2w`",
    "on_protected": "`review` or `block`",
    "foreign_commits": "`review`, `block` or `allow`",
}
# What each key does; the key list, types and defaults come from the code.
MEANING = {
    "review.required_permission": "repository permission a reviewer needs to decide",
    "review.reviewers": "logins allowed to decide high-risk patches (empty: anyone permitted)",
    "review.reviewer_teams": "teams whose members may decide high-risk patches",
    "review.allow_self_approval": "may a patch's author approve it",
    "review.dismiss_stale_approvals": "a new push drops the approvals of the superseded patch",
    "review.required_approvals": "distinct approvers a patch needs",
    "review.hold_permission": "permission needed to `/hold`",
    "review.require_code_owners": (
        "every touched path needs an approval from one of its CODEOWNERS owners"
    ),
    "risk.high_paths": "a patch touching these is high risk",
    "risk.max_auto_queue_changes": "patches with more changed lines are high risk",
    "risk.auto_queue_low_risk": "low-risk patches are approved (queued) without review",
    "validation.required_checks": "check-run names that must pass; empty: every check suite",
    "sessions.branch_prefix": "prefix of the branches the app creates for sessions",
    "sessions.stale_after": "idle active sessions are paused (reason `stale`) after this",
    "provenance.foreign_commits": "a commit authored or committed by anyone but the session's "
    "bot: `review` (needs approval, never by that person), `block`, or `allow`",
    "agents.protected_paths": "files an agent's patch may touch only under `on_protected`",
    "agents.on_protected": "`review`: only `maintain` or more may approve; `block`: nothing "
    "queues it",
    "agents.allowed_paths": "non-empty: touching anything else blocks the patch",
    "agents.max_changed_files": "0: no limit; more changed files block the patch",
    "agents.max_open_sessions": "0: no limit; the bot API refuses more (409 too_many_sessions)",
}
DOC = Path("docs") / "reference.md"


def yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, timedelta):
        for unit, seconds in (("d", 86400), ("h", 3600), ("m", 60)):
            if value.total_seconds() % seconds == 0:
                return f"{int(value.total_seconds() // seconds)}{unit}"
        return f"{int(value.total_seconds())}s"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def policy_table() -> str:
    defaults = policy.Policy()
    names = {f.name for f in dataclasses.fields(policy.Policy)}
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for section, keys in policy._SCHEMA.items():
        for key, kind in keys.items():
            default = f"`{yaml_value(getattr(defaults, key))}`" if key in names else "—"
            meaning = MEANING.get(f"{section}.{key}", "")
            rows.append(f"| `{section}.{key}` | {KINDS.get(kind, kind)} | {default} | {meaning} |")
    return "\n".join(rows)


def agents_table() -> str:
    """``agents.<agent_type>.<key>`` (``default`` for all types): ``policy._AGENT_SCHEMA``
    with the built-in defaults of ``policy.Guardrails``."""
    defaults = policy.Guardrails()
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, kind in policy._AGENT_SCHEMA.items():
        default = f"`{yaml_value(getattr(defaults, key))}`"
        meaning = MEANING.get(f"agents.{key}", "")
        rows.append(f"| `agents.<type>.{key}` | {KINDS.get(kind, kind)} | {default} | {meaning} |")
    return "\n".join(rows)


def check_run_table() -> str:
    rows = ["| patch state | check run | conclusion | title |", "|---|---|---|---|"]
    for state in PatchState:
        patch = _patch(state)
        body = checkrun.body(patch, checkrun.View())
        rows.append(_row(f"`{state}`", body))
    rows.append(
        _row(
            "open, with `.github/minipipe.yml` invalid",
            checkrun.body(_patch(PatchState.AWAITING_REVIEW), checkrun.View(policy_error="x")),
        )
    )
    rows.append(
        _row(
            "open, with the CODEOWNERS it requires unparsable",
            checkrun.body(
                _patch(PatchState.AWAITING_REVIEW),
                checkrun.View(policy_error=".github/CODEOWNERS: line 1: x"),
            ),
        )
    )
    rows.append(
        _row(
            "any but dropped or rolled back, under `/hold`",
            checkrun.body(_patch(PatchState.QUEUED), checkrun.View(holds=[HOLD])),
        )
    )
    return "\n".join(rows)


def _patch(state: PatchState) -> Patch:
    return Patch(
        ledger_id="L",
        patch_id="0" * 40,
        state=str(state),
        risk="low",
        risk_reasons=[],
        meta={"review_status": "rejected", "review_reason": "REASON"}
        if state == PatchState.DROPPED
        else {},
    )


def _row(label: str, body: dict[str, Any]) -> str:
    buttons = " (Approve / Reject buttons)" if body.get("actions") else ""
    return (
        f"| {label} | `{body['status']}` | `{body.get('conclusion') or '—'}` | "
        f"{body['output']['title']}{buttons} |"
    )


def manifest_tables() -> str:
    data = yaml.safe_load(resources.find("app.yml").read_text())
    perms = "\n".join(f"| `{k}` | {v} |" for k, v in data["default_permissions"].items())
    events = ", ".join(f"`{e}`" for e in data["default_events"])
    return f"| permission | access |\n|---|---|\n{perms}\n\nEvents: {events}."


def cli_reference() -> str:
    from minipipe_gh.cli import main

    lines: list[str] = []

    def walk(cmd: click.Command, path: list[str]) -> None:
        if isinstance(cmd, click.Group):
            for name in sorted(cmd.commands):
                walk(cmd.commands[name], [*path, name])
            return
        usage = " ".join([*path, *(_usage(p) for p in cmd.params)])
        summary = " ".join((cmd.help or "").strip().split("\n\n")[0].split())
        lines.append(f"| `{usage.replace('|', chr(92) + '|')}` | {summary} |")

    walk(main, ["minipipe-gh"])
    return "| command | does |\n|---|---|\n" + "\n".join(lines)


def _usage(param: click.Parameter) -> str:
    if isinstance(param, click.Argument):
        return param.human_readable_name
    assert isinstance(param, click.Option)
    flag = max(param.opts, key=len)
    try:
        metavar = param.make_metavar(click.Context(click.Command("x")))  # click >= 8.2
    except TypeError:
        metavar = param.make_metavar()  # type: ignore[call-arg]  # click 8.1
    text = flag if param.is_flag else f"{flag} {metavar}"
    return text if param.required else f"[{text}]"


def settings_table() -> str:
    rows = ["| setting | default | meaning |", "|---|---|---|"]
    rows += [
        f"| `{name}` | {default or '—'} | {meaning} |" for name, default, meaning in config.SETTINGS
    ]
    return "\n".join(rows)


def render() -> str:
    return f"""# minipipe-gh reference

Generated from the code by `python -m minipipe_gh.reference --write`; do not edit by hand.

## Settings

From the environment, or a `.env` file in the app's folder (the environment wins).

{settings_table()}

## Commands in PR comments

{commands.help_text()}

## Policy keys

In `.github/minipipe.yml` on the default branch; a key left out has its default.

{policy_table()}

## Agent guardrails

`agents.<type>.<key>`: `default` applies to every agent type; an entry for one
`agent_type` overrides its keys one by one. The defaults below apply with no
`agents:` section at all.

{agents_table()}

## Check-run states

What the `minipipe/review` check run shows for a patch in each ledger state.

{check_run_table()}

## GitHub App permissions and events

From `app.yml`, the manifest the setup flow registers.

{manifest_tables()}

## Command line

{cli_reference()}
"""


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(render())
        print(f"wrote {DOC}")
    else:
        print(render(), end="")
