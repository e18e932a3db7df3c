"""setuptools hooks: every sdist and wheel carries conda-store's web UI (its built files, fetched
and checked by scripts/fetch_ui.py, as scripts/fetch-ui.sh does for a checkout), so that an
installed envstore serves the UI with nothing else to fetch. Everything else is in pyproject.toml."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

ROOT = Path(__file__).resolve().parent
UI_IN_WHEEL = Path("envstore/api/static/conda-store-ui")  # where envstore.api looks for it


def fetch_ui():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("fetch_ui", ROOT / "scripts" / "fetch_ui.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithUi(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:  # an editable install serves the checkout's folder
            ui = fetch_ui()
            print(ui.vendor(Path(self.build_lib) / UI_IN_WHEEL, source=ROOT / ui.SOURCE_DIRECTORY))


class SdistWithUi(sdist):
    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        ui = fetch_ui()
        print(ui.vendor(Path(base_dir) / ui.SOURCE_DIRECTORY, source=ROOT / ui.SOURCE_DIRECTORY))


setup(cmdclass={"build_py": BuildPyWithUi, "sdist": SdistWithUi})
