"""The package's layers, held against the code.

``minipipe_gh/core`` is pure: no web framework, database, GitHub client or HTTP library,
neither directly nor through another of the project's modules. Every other package may
import only its own layer and those below it (``docs/architecture.md`` draws them).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "minipipe_gh"

# low to high; a module may import its own layer or a lower one
LAYERS = ["core", "store", "conf", "gh", "review", "delivery", "web", "top"]
IMPURE = ("flask", "flask_wtf", "werkzeug", "sqlalchemy", "alembic", "github", "requests")


def layer_of(module: str) -> str:
    if module == "minipipe_gh":
        return "core"  # the package itself holds only its version
    parts = module.split(".")
    if len(parts) > 2 and parts[1] in LAYERS:
        return parts[1]
    if len(parts) == 2 and parts[1] in LAYERS:
        return parts[1]
    return "top"  # cli, wsgi, reference, mcp_server and the package itself


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        if "migrations" in rel.parts:
            continue
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(module: str, path: Path) -> list[tuple[str, int]]:
    """Every module this file imports (absolute names) and the line it does it on."""
    is_pkg = path.name == "__init__.py"
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                root = base[: len(base) - node.level + 1]
                name = ".".join(root + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((name, node.lineno))
            found += [(f"{name}.{a.name}", node.lineno) for a in node.names]
    return found


def test_every_module_belongs_to_a_layer_that_exists() -> None:
    top = {m for m in modules() if layer_of(m) == "top"}
    assert top == {
        "minipipe_gh.cli",
        "minipipe_gh.mcp_server",
        "minipipe_gh.reference",
        "minipipe_gh.wsgi",
    }
    for layer in LAYERS[:-1]:
        assert (PACKAGE / layer / "__init__.py").is_file(), layer


def test_no_module_imports_a_higher_layer() -> None:
    known = modules()
    wrong = []
    for module, path in known.items():
        mine = LAYERS.index(layer_of(module))
        for name, line in imports(module, path):
            if name in known and LAYERS.index(layer_of(name)) > mine:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
    assert wrong == []


def test_the_core_imports_nothing_impure_directly() -> None:
    wrong = []
    for module, path in modules().items():
        if layer_of(module) != "core":
            continue
        for name, line in imports(module, path):
            if name.split(".")[0] in IMPURE:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
    assert wrong == []


@pytest.mark.parametrize("layer", ["core"])
def test_the_core_loads_nothing_impure_at_all(layer: str) -> None:
    """Import every core module in a fresh interpreter: nothing impure may come along,
    whichever of the project's modules would have brought it."""
    core = sorted(m for m in modules() if layer_of(m) == layer)
    script = (
        "import json, sys\n"
        + "".join(f"import {m}\n" for m in core)
        + "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    loaded = json.loads(out)
    assert len(core) > 10
    assert [m for m in loaded if m.split(".")[0] in IMPURE] == []
    assert [m for m in loaded if m.startswith("minipipe_gh.") and layer_of(m) != layer] == []
