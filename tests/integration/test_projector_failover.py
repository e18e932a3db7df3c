"""The projector is single-active with fail-over: of two API replicas one projects, the other
stands by following its commits; SIGKILL the active one and the other takes over within seconds,
applies every later event once, and the read model equals a fresh replay."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from envstore.launcher.child_process import LoggedChildProcess, process_is_alive
from envstore.launcher.free_ports import pick_free_port
from envstore.launcher.stack import EmbeddedStack
from tests.api_client import ApiClient, environment_yaml
from tests.log_readers import log_readers_of
from tests.replay import rebuild_read_model
from tests.stream_reader import stream_events
from envstore.common.events import BuildProgress


@pytest.fixture(scope="module")
async def two_api_stack(session_directory: Path, channel_url: str):  # type: ignore[no-untyped-def]
    settings = {"ENVSTORE_CONDA_DEFAULT_CHANNELS": channel_url, "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel_url,
                "ENVSTORE_BUILD_ARTIFACTS": "LOCKFILE,YAML"}
    async with EmbeddedStack(session_directory / "two-api-stack", settings=settings) as stack:
        port = pick_free_port(stack.host)
        second = LoggedChildProcess.spawn(
            [sys.executable, "-m", "envstore.api"],
            stack.data_directory / "logs" / "api-2.log",
            env=stack.service_environment("api") | {"ENVSTORE_API_PORT": str(port)},
        )
        try:
            yield stack, f"http://{stack.host}:{port}"
        finally:
            await second.stop(signal.SIGTERM)


async def leading(url: str, token: str) -> bool | None:
    async with ApiClient(url, token=token) as client:
        try:
            status, body = await client.get("/api/v1/projection/")
        except (OSError, aiohttp.ClientError):
            return None
        return body["data"]["leading"] if status == 200 else None


async def test_killing_the_active_projector_hands_over_to_the_standby(two_api_stack) -> None:  # type: ignore[no-untyped-def]
    stack, second_url = two_api_stack
    token = stack.admin_token
    started = time.monotonic()
    while await leading(second_url, token) is None:  # the second replica is still starting
        assert time.monotonic() - started < 30, "the second API replica did not start"
        await asyncio.sleep(0.1)
    async with ApiClient(second_url, token=token) as second:
        # The first replica started first and leads; the second follows (and reads its own writes).
        assert await leading(stack.api_url, token) is True
        assert await leading(second_url, token) is False
        before = await second.wait_for_build(await second.submit(environment_yaml("before", ["tinyjson"]), "failover"))
        assert before["status"] == "COMPLETED"

        # The leader's events come from a log reader process of its own; the standby has none.
        (reader,) = log_readers_of(stack.process("api", 0).pid)
        await stack.kill_service("api", restart=False)  # down until started again below
        killed_at = time.monotonic()
        while not await leading(second_url, token):
            assert time.monotonic() - killed_at < 15, "the standby did not take over"
            await asyncio.sleep(0.1)
        print(f"took over in {time.monotonic() - killed_at:.2f} s")
        # The killed leader's reader saw its stdin end, and went.
        while process_is_alive(reader):
            assert time.monotonic() - killed_at < 10, "the killed API's log reader process lives on"
            await asyncio.sleep(0.05)
        after = await second.wait_for_build(await second.submit(environment_yaml("after", ["configlib"]), "failover"))
        assert after["status"] == "COMPLETED", after["status_info"]

        # Every progress event is one row: nothing applied twice across the hand-over.
        connection = await asyncpg.connect(stack.postgres.dsn)
        try:
            rows = await connection.fetchval("SELECT count(*) FROM build_progress")
        finally:
            await connection.close()
        events = await stream_events(stack)
        assert rows == sum(isinstance(event, BuildProgress) for _, event in events)

        answers = [await second.get(f"/api/v1/build/{build['id']}/") for build in (before, after)]
        listing = await second.get("/api/v1/environment/?namespace=failover")
    await stack.start_service("api")
    await rebuild_read_model(stack)
    async with ApiClient(second_url, token=token) as second:
        await second.wait_until("/api/v1/environment/?namespace=failover", lambda body: body["count"] == 2)
        assert [await second.get(f"/api/v1/build/{build['id']}/") for build in (before, after)] == answers
        assert await second.get("/api/v1/environment/?namespace=failover") == listing
