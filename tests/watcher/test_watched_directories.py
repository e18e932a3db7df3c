"""ENVSTORE_WATCH_PATHS (conda-store's watch_paths): the watcher process keeps every *.yaml of the
watched directories built in the filesystem namespace. A real stack (the watcher is started by it
because the setting is set), real files, inotify through watchfiles.

The tests run in file order on one stack and build on each other's files, as a user's directory
would evolve."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from envstore.launcher.child_process import LoggedChildProcess
from envstore.launcher.free_ports import pick_free_port
from envstore.launcher.stack import EmbeddedStack
from tests.api_client import ApiClient, environment_yaml

NAMESPACE = "filesystem"


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    first, second = tmp_path_factory.mktemp("watched-a"), tmp_path_factory.mktemp("watched-b")
    # There before envstore starts: built at its first look.
    write(first / "from-start.yaml", environment_yaml("from-start", ["tinyjson"]))
    # Not an environment file: ignored.
    write(first / "notes.txt", "name: not-an-environment\n")
    return first, second


@pytest.fixture(scope="module")
async def watching_stack(
    session_directory: Path, channel_url: str, watched: tuple[Path, Path]
) -> AsyncIterator[EmbeddedStack]:
    settings = {
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel_url,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel_url,
        "ENVSTORE_WATCH_PATHS": ",".join(map(str, watched)),
    }
    async with EmbeddedStack(session_directory / "watching", settings=settings) as stack:
        yield stack


@pytest.fixture
def watcher_log(watching_stack: EmbeddedStack) -> Path:
    return watching_stack.data_directory / "logs" / "watcher.log"


@pytest.fixture
async def admin(watching_stack: EmbeddedStack) -> AsyncIterator[ApiClient]:
    async with ApiClient(watching_stack.api_url, token=watching_stack.admin_token) as client:
        yield client


def write(path: Path, text: str) -> None:
    """As an editor saves: the whole new file appears at once."""
    temporary = path.with_name(f".{path.name}.saving")
    temporary.write_text(text)
    os.replace(temporary, path)


async def builds_of(admin: ApiClient, environment: str) -> list[dict]:
    status, body = await admin.get("/api/v1/build/", params={"namespace": NAMESPACE, "name": environment, "size": 100})
    assert status == 200, body
    return sorted(body["data"], key=lambda build: build["id"])


async def wait_for_builds(admin: ApiClient, environment: str, count: int, timeout_seconds: float = 60) -> list[dict]:
    """Until the environment has ``count`` builds, the last one finished."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        builds = await builds_of(admin, environment)
        if len(builds) >= count and builds[-1]["status"] in ("COMPLETED", "FAILED", "CANCELED"):
            return builds
        if time.monotonic() > deadline:
            raise AssertionError(f"{NAMESPACE}/{environment} has builds {builds}, not {count} finished ones")
        await asyncio.sleep(0.05)


async def wait_for_log_line(log: Path, text: str, timeout_seconds: float = 30) -> None:
    deadline = time.monotonic() + timeout_seconds
    while text not in (log.read_text() if log.exists() else ""):
        if time.monotonic() > deadline:
            raise AssertionError(f"{log} never said {text!r}")
        await asyncio.sleep(0.05)


async def rejections(admin: ApiClient) -> list[dict]:
    status, page = await admin.get("/api/v1/events/", params={"type": "watched_file.rejected", "size": 100})
    assert status == 200, page
    return page["data"]


async def restart_watcher(stack: EmbeddedStack, **settings: str) -> None:
    await stack.stop_service("watcher")
    stack.service_settings["watcher"] = settings
    await stack.start_service("watcher")
    await stack.wait_until_ready()


async def test_a_file_there_at_start_is_built(admin: ApiClient) -> None:
    builds = await wait_for_builds(admin, "from-start", 1)
    assert [build["status"] for build in builds] == ["COMPLETED"]
    status, body = await admin.get(f"/api/v1/environment/{NAMESPACE}/from-start/")
    assert status == 200 and body["data"]["current_build_id"] == builds[0]["id"]
    # notes.txt is no environment file.
    status, _ = await admin.get(f"/api/v1/environment/{NAMESPACE}/not-an-environment/")
    assert status == 404


async def test_a_new_file_builds_and_an_edit_builds_again(
    admin: ApiClient, watched: tuple[Path, Path], watcher_log: Path
) -> None:
    path = watched[1] / "tools.yml"
    write(path, environment_yaml("tools", ["tinyjson"]))
    first = await wait_for_builds(admin, "tools", 1)
    assert first[-1]["status"] == "COMPLETED"

    write(path, environment_yaml("tools", ["tinyjson", "textutils"]))
    builds = await wait_for_builds(admin, "tools", 2)
    assert len(builds) == 2 and builds[-1]["status"] == "COMPLETED"
    packages = (await admin.get(f"/api/v1/build/{builds[-1]['id']}/packages/"))[1]["data"]
    assert sorted(package["name"] for package in packages) == ["textutils", "tinyjson"]
    _, environment = await admin.get(f"/api/v1/environment/{NAMESPACE}/tools/")
    assert environment["data"]["current_build_id"] == builds[-1]["id"]

    # Saved again as it is: no new build.
    write(path, environment_yaml("tools", ["tinyjson", "textutils"]))
    await wait_for_log_line(watcher_log, f"{path}: {NAMESPACE}/tools is built from it already")
    assert len(await builds_of(admin, "tools")) == 2


async def test_an_invalid_file_is_reported_and_the_watcher_goes_on(
    admin: ApiClient, watched: tuple[Path, Path], watcher_log: Path
) -> None:
    broken = watched[0] / "broken.yaml"
    write(broken, "name: broken\ndependencies:\n  - tinyjson >=>= 1\n")
    unknown = watched[0] / "unknown-package.yaml"
    write(unknown, "name: unknown-field\nbogus: 1\n")

    async def reported() -> dict[str, dict]:
        deadline = time.monotonic() + 30
        while True:
            found = {event["event"]["path"]: event for event in await rejections(admin)}
            if {str(broken), str(unknown)} <= found.keys():
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"rejections: {found}")
            await asyncio.sleep(0.05)

    found = await reported()
    assert found[str(broken)]["namespace"] == NAMESPACE
    assert "is not a valid conda match spec" in found[str(broken)]["event"]["reason"]
    assert found[str(broken)]["event"]["environment"] == "broken"
    assert "bogus: is not a known field" in found[str(unknown)]["event"]["reason"]
    log = watcher_log.read_text()
    assert f"watched file {broken} is not built" in log
    for name in ("broken", "unknown-field"):
        assert (await admin.get(f"/api/v1/environment/{NAMESPACE}/{name}/"))[0] == 404

    # The watcher goes on: the next file builds, and so does the broken one once fixed.
    write(watched[0] / "after-broken.yaml", environment_yaml("after-broken", ["textutils"]))
    assert (await wait_for_builds(admin, "after-broken", 1))[-1]["status"] == "COMPLETED"
    write(broken, environment_yaml("broken", ["tinyjson"]))
    assert (await wait_for_builds(admin, "broken", 1))[-1]["status"] == "COMPLETED"
    unknown.unlink()


async def test_a_second_file_naming_the_same_environment_is_refused(admin: ApiClient, watched: tuple[Path, Path]) -> None:
    twin = watched[1] / "tools-twin.yaml"
    write(twin, environment_yaml("tools", ["hello"]))
    deadline = time.monotonic() + 30
    while not any(event["event"]["path"] == str(twin) for event in await rejections(admin)):
        assert time.monotonic() < deadline, "the twin file was not reported"
        await asyncio.sleep(0.05)
    reason = next(event["event"]["reason"] for event in await rejections(admin) if event["event"]["path"] == str(twin))
    assert reason == f"names environment tools, which {watched[1] / 'tools.yml'} defines already"
    assert len(await builds_of(admin, "tools")) == 2
    twin.unlink()


async def test_an_unchanged_file_after_a_restart_makes_no_new_build(
    watching_stack: EmbeddedStack, admin: ApiClient, watched: tuple[Path, Path]
) -> None:
    before = {name: [build["id"] for build in await builds_of(admin, name)] for name in ("from-start", "tools", "broken")}
    await restart_watcher(watching_stack)
    # The watcher is ready once it has looked at every file; files are handled in order, so a file
    # written now is handled after any build the restart would have made.
    write(watched[1] / "marker.yaml", environment_yaml("marker", ["tinyjson"]))
    await wait_for_builds(admin, "marker", 1)
    after = {name: [build["id"] for build in await builds_of(admin, name)] for name in before}
    assert after == before


async def test_two_watchers_make_one_build_of_a_new_file(
    watching_stack: EmbeddedStack, admin: ApiClient, watched: tuple[Path, Path], watcher_log: Path
) -> None:
    """A second replica, deciding on the same state at the same moment: one build, not two."""
    replica_log = watching_stack.data_directory / "logs" / "watcher-replica.log"
    metrics_port = pick_free_port("127.0.0.1")
    replica = LoggedChildProcess.spawn(
        [sys.executable, "-m", "envstore.watcher"],
        replica_log,
        env=watching_stack.service_environment("watcher")
        | {"ENVSTORE_METRICS_HOST": "127.0.0.1", "ENVSTORE_METRICS_PORT": str(metrics_port)},
    )
    try:
        await wait_for_log_line(replica_log, "watching ")
        path = watched[0] / "shared.yaml"
        write(path, environment_yaml("shared", ["greeting-data"]))
        builds = await wait_for_builds(admin, "shared", 1)
        # Both have handled the file: one submitted it, the other found it built (or had its own
        # identical publish folded into the first).
        await wait_for_log_line(replica_log, f"{path}: ")
        await wait_for_log_line(watcher_log, f"{path}: ")
        assert len(await builds_of(admin, "shared")) == 1 == len(builds)
    finally:
        await replica.stop(signal.SIGTERM, grace_seconds=10)


async def test_a_removed_file_keeps_its_environment_unless_told_otherwise(
    watching_stack: EmbeddedStack, admin: ApiClient, watched: tuple[Path, Path], watcher_log: Path
) -> None:
    # conda-store's behaviour: the environment stays.
    (watched[1] / "marker.yaml").unlink()
    await wait_for_log_line(watcher_log, f"{watched[1] / 'marker.yaml'} was removed: environment {NAMESPACE}/marker is kept")
    assert (await admin.get(f"/api/v1/environment/{NAMESPACE}/marker/"))[0] == 200

    # Told to delete: at its start the watcher deletes what it made and no file defines now...
    created_by_api = await admin.submit(environment_yaml("made-by-hand", ["tinyjson"]), namespace=NAMESPACE)
    await admin.wait_for_build(created_by_api)
    await restart_watcher(watching_stack, ENVSTORE_WATCH_PATHS_DELETE_REMOVED="true")
    await wait_for_gone(admin, "marker")
    # ... but not an environment someone submitted to the namespace through the API.
    assert (await admin.get(f"/api/v1/environment/{NAMESPACE}/made-by-hand/"))[0] == 200

    # ... and a file removed while it runs deletes its environment (prefix and artifacts go too).
    (watched[0] / "after-broken.yaml").unlink()
    await wait_for_gone(admin, "after-broken")
    assert (await admin.get(f"/api/v1/environment/{NAMESPACE}/from-start/"))[0] == 200


async def wait_for_gone(admin: ApiClient, environment: str, timeout_seconds: float = 30) -> None:
    deadline = time.monotonic() + timeout_seconds
    while (await admin.get(f"/api/v1/environment/{NAMESPACE}/{environment}/"))[0] != 404:
        if time.monotonic() > deadline:
            raise AssertionError(f"{NAMESPACE}/{environment} was not deleted")
        await asyncio.sleep(0.05)
