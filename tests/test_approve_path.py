"""bench/approve_path.py on this checkout: the paths it traces are the real ones.

The script drives the real app (signed webhook, dashboard sign-in, worker) against
GitHub faked with ``responses``; these tests hold that it still reaches the modules
that decide and publish, and that each trace ends on the check-run PATCH.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "approve_path.py"
R = "/repos/Codertocat/Hello-World"
PERMISSION = ("GET", f"{R}/collaborators/writer/permission")
GREEN = ("PATCH", f"{R}/check-runs/555")


@pytest.fixture(scope="module")
def approve_path() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("approve_path", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_the_approve_comment_path_decides_and_publishes_and_ends_on_the_green_patch(
    approve_path,
):
    trace = approve_path.measure(("approve",))["approve"]

    assert {"core/authz", "review/decisions", "gh/writes"} <= set(trace.modules)
    assert trace.modules[:2] == ["delivery/ingest", "web"]  # the webhook comes in first
    assert trace.modules.index("core/authz") < trace.modules.index("gh/writes")
    assert len(set(trace.modules)) == trace.count == len(trace.modules)
    # the permission read, then the check run turned green; the 👍 after it is off the path
    assert trace.requests == [PERMISSION, GREEN]
    assert trace.ended_on == GREEN
    assert 0 < trace.returns <= trace.transitions
    assert 0 < trace.return_edges <= trace.returns
    assert sum(trace.returns_by_edge.values()) == trace.returns


def test_the_dashboard_approve_path_goes_through_the_view_and_the_worker_publishes(
    approve_path,
):
    trace = approve_path.measure(("dashboard",))["dashboard"]

    modules = trace.modules
    assert {"web/dashboard", "review/off_github", "core/authz", "review/decisions"} <= set(modules)
    assert {"delivery/worker", "gh/writes"} <= set(modules)
    assert modules.index("web/dashboard") < modules.index("delivery/worker")
    assert "delivery/handlers/comments" not in modules  # no comment was delivered
    assert trace.requests == [PERMISSION, GREEN]
    assert trace.ended_on == GREEN


def test_the_script_prints_both_paths_as_json(approve_path, capsys):
    assert approve_path.main(["--json"]) == 0

    out = json.loads(capsys.readouterr().out)
    assert out["layout"] == "layered"
    assert set(out["paths"]) == {"approve", "dashboard"}
    for name, path in out["paths"].items():
        assert path["name"] == name
        assert path["count"] == len(path["modules"]) > 0
        assert path["ended_on"] == list(GREEN)
