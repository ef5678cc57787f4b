"""The wheel carries ``templates/`` and ``app.yml`` inside the package.

The repository keeps them at the top level (the layout the project fixes); the build
copies them into ``minipipe_gh/`` so an installed wheel, not only a checkout, serves
every page and runs the setup flow. ``minipipe_gh.conf.resources`` finds them in either place.
Everything else about the package is in ``pyproject.toml``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
CARRIED = ("templates", "static", "app.yml")  # top-level files that travel in the package


class BuildWithResources(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install finds them beside the package
        target = Path(self.build_lib) / "minipipe_gh"
        for name in CARRIED:
            source = HERE / name
            if source.is_dir():
                shutil.copytree(source, target / name, dirs_exist_ok=True)
            elif source.is_file():
                shutil.copy2(source, target / name)


setup(cmdclass={"build_py": BuildWithResources})
