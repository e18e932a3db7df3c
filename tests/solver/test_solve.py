"""The solver on its own: real py-rattler solves against the test channel, served from disk and
over HTTP, for several platforms, with a cache that notices a changed channel."""

from __future__ import annotations

import shutil
from pathlib import Path

import aiohttp
import pytest
import rattler
from aiohttp import web

from envstore.common.build_policy import BuildFailure
from envstore.common.demo_channel import FIVE_PACKAGE_SOLUTION, FIVE_PACKAGE_SPEC, UNSATISFIABLE_SPEC, make_channel
from envstore.common.settings import host_platform
from envstore.solver.solve import SolveRequest, Solver


@pytest.fixture
async def solver(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as http:
        yield Solver(tmp_path / "cache", host_platform(), max_solve_seconds=60, cache_entries=16, http=http)


@pytest.fixture
async def channel_directory(tmp_path: Path) -> Path:
    await make_channel(tmp_path / "channel")
    return tmp_path / "channel"


@pytest.fixture
async def http_channel(channel_directory: Path):  # type: ignore[no-untyped-def]
    """The channel served over HTTP by aiohttp's static files (which answer Range requests)."""
    app = web.Application()
    app.router.add_static("/channel", channel_directory)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/channel"
    await runner.cleanup()


def names_and_versions(packages) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return sorted((package.name, package.version) for package in packages)


async def test_file_and_http_channels_give_the_same_lock(solver: Solver, channel_directory: Path, http_channel: str) -> None:
    platform = host_platform()
    from_disk = await solver.solve(SolveRequest(list(FIVE_PACKAGE_SPEC), [channel_directory.as_uri()], [platform], []))
    over_http = await solver.solve(SolveRequest(list(FIVE_PACKAGE_SPEC), [http_channel], [platform], []))
    assert names_and_versions(from_disk.lock.packages_for(platform)) == sorted(FIVE_PACKAGE_SOLUTION)
    assert names_and_versions(over_http.lock.packages_for(platform)) == sorted(FIVE_PACKAGE_SOLUTION)
    assert all(package.url.startswith(http_channel) for package in over_http.lock.packages_for(platform))


async def test_every_requested_platform_is_locked_in_one_solve(solver: Solver, channel_directory: Path) -> None:
    outcome = await solver.solve(
        SolveRequest(list(FIVE_PACKAGE_SPEC), [channel_directory.as_uri()], ["linux-64", "osx-arm64"], [])
    )
    assert sorted(outcome.lock.platforms) == ["linux-64", "osx-arm64"]
    osx = outcome.lock.packages_for("osx-arm64")
    assert {package.subdir for package in osx} <= {"osx-arm64", "noarch"}
    assert any(package.subdir == "osx-arm64" for package in osx)


async def test_identical_request_hits_the_cache_until_the_channel_changes(
    solver: Solver, channel_directory: Path
) -> None:
    request = SolveRequest(["greeting-data"], [channel_directory.as_uri()], [host_platform()], [])
    first = await solver.solve(request)
    again = await solver.solve(request)
    assert (first.cache_hits, again.cache_hits) == (0, 1)
    assert again.lock == first.lock

    # The channel is re-indexed with one more package file: its repodata changes, so the next
    # solve must not answer from the cache.
    noarch = channel_directory / "noarch"
    newest = max(noarch.glob("greeting-data-2.0-*.conda"))
    shutil.copy(newest, noarch / newest.name.replace("2.0", "3.0"))
    index_json = channel_directory / "noarch" / "repodata.json"
    before = index_json.read_bytes()
    await rattler.index.index_fs(channel_directory, write_zst=False, write_shards=False, force=True)
    assert index_json.read_bytes() != before
    changed = await solver.solve(request)
    assert changed.cache_hits == 0


async def test_unsatisfiable_request_fails_with_the_solvers_explanation(solver: Solver, channel_directory: Path) -> None:
    with pytest.raises(BuildFailure) as failure:
        await solver.solve(SolveRequest(list(UNSATISFIABLE_SPEC), [channel_directory.as_uri()], [host_platform()], []))
    assert failure.value.phase == "solve"
    assert "conflict-low" in failure.value.reason and "conflict-high" in failure.value.reason


async def test_a_missing_channel_fails_with_a_reason(solver: Solver, tmp_path: Path) -> None:
    with pytest.raises(BuildFailure) as failure:
        await solver.solve(SolveRequest(["hello"], [(tmp_path / "nowhere").as_uri()], [host_platform()], []))
    assert failure.value.reason
