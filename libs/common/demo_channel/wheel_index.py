"""A local pip package index of small wheels, offline, for tests, demos and benchmarks: the projects
are written here, built into wheels by ``pip wheel`` (setuptools, no build isolation: nothing is
fetched), and served as a PEP 503 "simple" index over HTTP by ``serve_wheel_index``.

    wheels = await build_wheels(DEMO_PROJECTS, tmp_path / "wheels")
    async with serve_wheel_index(tmp_path / "wheels") as index_url:   # http://127.0.0.1:<port>/simple
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import html
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from packaging.utils import canonicalize_name, parse_wheel_filename


@dataclass(frozen=True)
class WheelProject:
    """A pure-Python project: one module, its dependencies, and optionally a console script."""

    name: str
    version: str
    dependencies: tuple[str, ...] = ()
    script: str | None = None  # a console script printing "<name> <version>"
    payload_bytes: int = 0  # extra data in the module, for wheels of a realistic size

    @property
    def module(self) -> str:
        return self.name.replace("-", "_")


# envstore-demo-greeter needs envstore-demo-words; no envstore-demo-words satisfies both
# envstore-demo-greeter and envstore-demo-old-words (a conflict uv explains).
DEMO_PROJECTS = (
    WheelProject("envstore-demo-words", "1.0"),
    WheelProject("envstore-demo-words", "2.0"),
    WheelProject("envstore-demo-greeter", "1.5", ("envstore-demo-words>=2",), script="demo-greet"),
    WheelProject("envstore-demo-old-words", "0.1", ("envstore-demo-words<2",)),
)


def _write_project(project: WheelProject, directory: Path) -> Path:
    root = directory / f"{project.name}-{project.version}"
    (root / project.module).mkdir(parents=True)
    dependencies = ", ".join(f'"{dependency}"' for dependency in project.dependencies)
    scripts = f'\n[project.scripts]\n{project.script} = "{project.module}:main"\n' if project.script else ""
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = "{project.name}"\nversion = "{project.version}"\ndependencies = [{dependencies}]\n'
        f"{scripts}"
    )
    source = f'NAME = "{project.name}"\nVERSION = "{project.version}"\n\n\ndef main():\n    print(NAME, VERSION)\n'
    if project.payload_bytes:
        # Different bytes per project (no two wheels compress alike), deterministic.
        seed = hashlib.sha256(f"{project.name}-{project.version}".encode()).hexdigest()
        lines = (project.payload_bytes // 72) + 1
        source += "\nDATA = (\n" + "".join(
            f'    "{hashlib.sha256(f"{seed}{i}".encode()).hexdigest()}"\n' for i in range(lines)
        ) + ")\n"
    (root / project.module / "__init__.py").write_text(source)
    return root


def build_wheels_blocking(projects: Iterable[WheelProject], output: Path) -> list[Path]:
    output.mkdir(parents=True, exist_ok=True)
    # pip builds one version of a name per run: each run takes the next version of every name.
    runs: list[list[WheelProject]] = []
    for project in projects:
        free = next((run for run in runs if all(other.name != project.name for other in run)), None)
        if free is None:
            runs.append(free := [])
        free.append(project)
    with tempfile.TemporaryDirectory(prefix="envstore-wheel-projects-") as directory:
        with ThreadPoolExecutor() as pool:
            runs_done = [pool.submit(_pip_wheel, run, Path(directory) / str(number), output) for number, run in enumerate(runs)]
            for done in runs_done:
                done.result()
    return sorted(output.glob("*.whl"))


def _pip_wheel(projects: list[WheelProject], directory: Path, output: Path) -> None:
    sources = [_write_project(project, directory) for project in projects]
    finished = subprocess.run(
        [
            sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
            "--wheel-dir", str(output), *map(str, sources),
        ],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "SOURCE_DATE_EPOCH": "1700000000", "PIP_NO_CACHE_DIR": "1"},
    )
    if finished.returncode != 0:
        raise RuntimeError(f"pip wheel failed (setuptools and wheel must be installed beside envstore): {finished.stderr}")


async def build_wheels(projects: Iterable[WheelProject], output: Path) -> list[Path]:
    """Wheels of ``projects`` in ``output`` (needs setuptools and wheel where this Python runs)."""
    return await asyncio.to_thread(build_wheels_blocking, list(projects), output)


def _index_page(title: str, links: list[tuple[str, str]]) -> str:
    anchors = "".join(f'<a href="{html.escape(href)}">{html.escape(text)}</a><br>\n' for href, text in links)
    return f"<!DOCTYPE html>\n<html><head><title>{html.escape(title)}</title></head><body>\n{anchors}</body></html>\n"


def wheel_index_app(wheels_directory: Path) -> web.Application:
    """``/simple/`` and ``/simple/<project>/`` (links with ``#sha256=``), ``/files/<wheel>``, and
    ``/files/``: a flat page of every wheel, for ``--find-links``."""

    def wheels() -> dict[str, list[Path]]:
        by_project: dict[str, list[Path]] = {}
        for wheel in sorted(wheels_directory.glob("*.whl")):
            by_project.setdefault(canonicalize_name(parse_wheel_filename(wheel.name)[0]), []).append(wheel)
        return by_project

    async def projects(request: web.Request) -> web.Response:
        links = [(f"{name}/", name) for name in sorted(wheels())]
        return web.Response(text=_index_page("Simple index", links), content_type="text/html")

    async def project(request: web.Request) -> web.Response:
        files = wheels().get(canonicalize_name(request.match_info["project"]))
        if not files:
            raise web.HTTPNotFound()
        links = [
            (f"/files/{wheel.name}#sha256={hashlib.sha256(wheel.read_bytes()).hexdigest()}", wheel.name) for wheel in files
        ]
        return web.Response(text=_index_page(request.match_info["project"], links), content_type="text/html")

    async def links(request: web.Request) -> web.Response:
        """Every wheel on one page: what ``--find-links <url>`` reads."""
        found = [(f"/files/{wheel.name}", wheel.name) for files in wheels().values() for wheel in files]
        return web.Response(text=_index_page("Wheels", found), content_type="text/html")

    async def file(request: web.Request) -> web.FileResponse:
        path = wheels_directory / request.match_info["name"]
        if "/" in request.match_info["name"] or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    app = web.Application()
    app.router.add_get("/simple/", projects)
    app.router.add_get("/simple/{project}/", project)
    app.router.add_get("/files/", links)
    app.router.add_get("/files/{name}", file)
    return app


@contextlib.asynccontextmanager
async def serve_wheel_index(wheels_directory: Path, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Serves the wheels in ``wheels_directory`` on a free port; yields the index URL."""
    runner = web.AppRunner(wheel_index_app(wheels_directory), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://{host}:{port}/simple"
    finally:
        await runner.cleanup()
