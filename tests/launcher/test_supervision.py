"""`envstore up` supervises its children like a process manager. Under a real `envstore up`, each
role is SIGKILLed in turn (every service, the NATS server, PostgreSQL): `envstore ps` shows it
running again under a new pid, restarted once, killed by SIGKILL, ready; the launcher's /metrics
counts the restart; a build submitted afterwards completes; `envstore projection rebuild
--data-dir` rebuilds the running stack's read model; SIGTERM stops everything, in order."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from envstore.launcher.child_process import process_is_alive
from envstore.launcher.process_status import stack_status
from tests.api_client import LOGIN_PASSWORD, ApiClient, environment_yaml
from tests.envstore_up import EnvstoreUp

pytestmark = pytest.mark.faults

ROLES = ("api", "solver", "builder", "packager", "registry", "api.webhooks", "nats", "postgres")


def entry(status: dict[str, Any], role: str, replica: int = 0) -> dict[str, Any]:
    return next(process for process in status["processes"] if (process["role"], process["replica"]) == (role, replica))


async def wait_for_status(up: EnvstoreUp, accept, timeout_seconds: float = 60) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Until ``accept(status)`` (bounded), then what `envstore ps --json` shows. The waiting polls
    ps's own function in-process (a subprocess per poll would be slow); the answer is ps's."""
    deadline = time.monotonic() + timeout_seconds
    while not accept(status := await stack_status(up.data_directory)):
        assert time.monotonic() < deadline, f"envstore ps never showed what was expected: {status['processes']}"
        await asyncio.sleep(0.1)
    shown = await up.ps()
    assert accept(shown), shown
    return shown


def everything_ready(status: dict[str, Any]) -> bool:
    return all(process["state"] == "running" and process["readiness"] == "ready" for process in status["processes"])


@pytest.fixture(scope="module")
async def up(session_directory: Path, channel_url: str):  # type: ignore[no-untyped-def]
    settings = {
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel_url,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel_url,
        "ENVSTORE_BUILD_ARTIFACTS": "LOCKFILE,YAML,CONDA_PACK",
        "ENVSTORE_AUTH_PASSWORD": LOGIN_PASSWORD,
    }
    async with EnvstoreUp(session_directory / "supervised", settings=settings) as running:
        yield running


async def test_every_role_killed_in_turn_is_restarted_and_a_build_then_completes(up: EnvstoreUp) -> None:
    status = await wait_for_status(up, everything_ready)
    assert {(process["role"], process["replica"]) for process in status["processes"]} == {(role, 0) for role in ROLES}
    assert status["endpoints"]["api"] == f"{up.api_url}/api/v1/"
    # The DSN names the role, not its password; ps shows no secret, and the state file that holds
    # them is the launching user's only.
    assert re.fullmatch(r"postgresql://envstore@127\.0\.0\.1:\d+/envstore", status["endpoints"]["postgres"])
    _, table, _ = await up.envstore("ps")
    for secret in ("postgres-writer-password", "postgres-reader-password", "admin-token"):
        assert (up.data_directory / secret).read_text() not in table + json.dumps(status)
    assert (up.data_directory / "stack.json").stat().st_mode & 0o777 == 0o600
    assert re.search(r"^builder\s+0\s+\d+\s+running\s+0\s+ready", table, re.MULTILINE), table
    for role in ROLES:
        before = entry(status, role)
        os.kill(before["pid"], signal.SIGKILL)
        status = await wait_for_status(
            up, lambda status: entry(status, role)["restarts"] == before["restarts"] + 1 and everything_ready(status)
        )
        after = entry(status, role)
        assert after["pid"] != before["pid"] and process_is_alive(after["pid"])
        assert after["last_exit"] == "killed by SIGKILL"
        # The launcher logged the restart with how the child ended.
        assert re.search(rf"{re.escape(role)}/0 \(pid {before['pid']}\) killed by SIGKILL; restart 1 in", up.text), up.text

    async with aiohttp.ClientSession() as http, http.get(status["endpoints"]["launcher_metrics"]) as response:
        metrics = await response.text()
    for role in ROLES:
        assert f'envstore_service_restarts_total{{replica="0",service="{role}"}} 1.0' in metrics, role

    async with ApiClient(up.api_url, token=up.admin_token) as api:
        build = await api.wait_for_build(await api.submit(environment_yaml("after-kills", ["tinyjson"]), "supervised"))
        assert build["status"] == "COMPLETED", build["status_info"]


async def test_projection_rebuild_finds_the_running_stack_by_its_data_directory(up: EnvstoreUp) -> None:
    async with ApiClient(up.api_url, token=up.admin_token) as api:
        build = await api.wait_for_build(await api.submit(environment_yaml("rebuilt", ["configlib"]), "supervised"))
        assert build["status"] == "COMPLETED", build["status_info"]
        listing = await api.get("/api/v1/environment/?namespace=supervised")

        status, stdout, stderr = await up.envstore("projection", "rebuild")
        assert status == 0, stderr
        assert "read model rebuilt from the event stream up to sequence" in stdout

        await api.wait_until("/api/v1/environment/?namespace=supervised", lambda body: body == listing[1])
        assert (await api.build(build["id"]))["status"] == "COMPLETED"


async def test_operator_commands_say_what_to_do_without_a_running_stack(tmp_path: Path) -> None:
    stopped = EnvstoreUp(tmp_path / "never-started")
    for command in (("ps",), ("projection", "rebuild")):
        status, stdout, stderr = await stopped.envstore(*command)
        assert status == 1, (command, stdout, stderr)
        assert f"no stack state in {tmp_path / 'never-started'}: start one with `envstore up --data-dir" in stderr


async def test_sigterm_stops_every_child_and_removes_the_state_file(up: EnvstoreUp) -> None:
    pids = [process["pid"] for process in (await up.ps())["processes"]]
    assert await up.stop(signal.SIGTERM) == 0
    assert "envstore stopped" in up.text
    assert not [pid for pid in pids if process_is_alive(pid)]
    assert not (up.data_directory / "stack.json").exists()
    status, _, stderr = await up.envstore("ps")
    assert status == 1 and "no stack state" in stderr


async def test_a_stack_stopped_mid_build_and_started_again_finishes_the_build_once(
    tmp_path: Path, channel_url: str
) -> None:
    settings = {
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel_url,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel_url,
        "ENVSTORE_BUILD_ARTIFACTS": "LOCKFILE,YAML,CONDA_PACK",
    }
    async with EnvstoreUp(tmp_path / "data", settings=settings) as first:
        async with ApiClient(first.api_url, token=first.admin_token) as api:
            build_id = await api.submit(environment_yaml("interrupted", ["reportkit", "cachekit", "units", "plotkit"]), "drained")
            await api.wait_until(
                f"/api/v1/events/?build_id={build_id}&type=build.progress&size=100",
                lambda body: any(event["event"]["phase"] == "install" for event in body["data"]),
            )
        assert await first.stop(signal.SIGTERM) == 0  # the workers drain: finish or hand back
    async with EnvstoreUp(tmp_path / "data", settings=settings) as second:
        async with ApiClient(second.api_url, token=second.admin_token) as api:
            build = await api.wait_for_build(build_id, timeout_seconds=120)
            assert build["status"] == "COMPLETED", build["status_info"]
            events = await api.get("/api/v1/events/", params={"build_id": build_id, "size": 100})
    kinds = collections.Counter(event["type"] for event in events[1]["data"])
    # Whether the drain finished it or the second run did (that depends on the machine's speed),
    # every effect is there once.
    assert (kinds["build.solved"], kinds["build.built"], kinds["build.completed"], kinds["build.failed"]) == (1, 1, 1, 0), kinds


async def test_one_launcher_per_data_directory_and_a_dead_launchers_children_are_stopped(tmp_path: Path) -> None:
    first = EnvstoreUp(tmp_path / "data")
    await first.start()
    try:
        children = [process["pid"] for process in (await first.ps())["processes"]]
        # A second launcher on the same directory is refused while the first runs.
        second = EnvstoreUp(tmp_path / "data")
        with pytest.raises(AssertionError, match="envstore up ended before saying it was ready"):
            await second.start()
        assert f"a stack is already running in {(tmp_path / 'data').resolve()}" in second.text
        # The launcher dies without stopping anything (as under the OOM killer).
        assert first.process is not None
        first.process.kill()
        await first.process.wait()
        assert all(process_is_alive(pid) for pid in children)
    finally:
        await first.stop()
    async with EnvstoreUp(tmp_path / "data") as third:
        assert not [pid for pid in children if process_is_alive(pid)]
        assert everything_ready(await third.ps())
        assert "left running by launcher" in third.text
