"""Where the files that travel with the code are: ``templates/`` and ``app.yml``.

The repository keeps them at the top level (beside ``minipipe_gh/``); the wheel's build
maps them into the package (see ``setup.py``). A checkout, an editable install and an
installed wheel all find them here.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent


def find(name: str, *, package: Path = PACKAGE) -> Path:
    """``name`` inside the package (a wheel), else beside it (a checkout)."""
    inside = package / name
    if inside.exists():
        return inside
    beside = package.parent / name
    if beside.exists():
        return beside
    raise FileNotFoundError(
        f"minipipe-gh is missing its {name} (looked in {inside} and {beside}): "
        "reinstall the package (pip install --force-reinstall minipipe-gh)"
    )
