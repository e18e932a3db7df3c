"""Fail loud: an event the read model cannot apply stops the projection at that event, visibly —
``/readyz``, ``envstore_projection_stalled``, the admin route — and nothing after it is shown as
if it had been applied. An operator's decision to skip it (itself an event of the log) lets the
projection go on, and a replay of the log makes the same decision."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import asyncpg
import pytest

from envstore.common.events import NamespaceCreated
from envstore.common.task_dump import DUMP_END
from envstore.launcher.stack import EmbeddedStack
from tests.api_client import ApiClient, environment_yaml


@pytest.fixture(scope="module")
async def stalling_stack(session_directory: Path, channel_url: str):  # type: ignore[no-untyped-def]
    settings = {"ENVSTORE_CONDA_DEFAULT_CHANNELS": channel_url, "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel_url}
    async with EmbeddedStack(session_directory / "stalling-stack", settings=settings) as running:
        yield running


async def _checkpoint(dsn: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetchval("SELECT last_sequence FROM projection_checkpoint")
    finally:
        await connection.close()


async def _log_with_task_dump(stack: EmbeddedStack) -> str:
    log_path = stack.data_directory / "logs" / "api.log"
    pid = stack.process("api").pid
    if pid is not None:
        os.kill(pid, signal.SIGUSR1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                while DUMP_END not in log_path.read_text():
                    await asyncio.sleep(0.1)
    return log_path.read_text()[-30000:]


async def test_a_bad_event_stalls_the_projection_visibly_until_an_admin_skips_it(stalling_stack: EmbeddedStack) -> None:
    stack = stalling_stack
    async with ApiClient(stack.api_url, token=stack.admin_token) as admin, ApiClient(stack.api_url) as anonymous:
        before = await admin.wait_for_build(await admin.submit(environment_yaml("before", ["tinyjson"]), namespace="stall"))
        assert before["status"] == "COMPLETED"
        # PostgreSQL cannot store a NUL character: the API refuses such a name at its edge, but a
        # publisher on the bus can still send it: here, one holding the api's credentials.
        bus = await stack.connect_bus("api")
        try:
            poison = await bus.publish(NamespaceCreated(namespace="poison\x00name"), message_id="test-poison-event")
        finally:
            await bus.close()
        # Later commands are accepted (the log takes them) but do not show past the bad event.
        status, body = await admin.request("POST", "/api/v1/namespace/after-poison/")
        assert status == 200, body

        try:
            status, stalled = await admin.wait_until(
                "/api/v1/projection/", lambda body: body["data"]["stalled"] is not None, timeout_seconds=30
            )
        except AssertionError as error:
            # What the projector said meanwhile and where each of the API's tasks waits (CI runs
            # have seen it neither stall nor move on).
            api_log = await _log_with_task_dump(stack)
            raise AssertionError(f"{error}\nthe API's log ends:\n{api_log}") from None
        assert stalled["data"]["stalled"]["sequence"] == poison.seq
        assert stalled["data"]["stalled"]["subject"] == NamespaceCreated(namespace="poison\x00name").subject
        assert "DataError" in stalled["data"]["stalled"]["error"] or "0x00" in stalled["data"]["stalled"]["error"]
        assert stalled["data"]["checkpoint"] == poison.seq - 1
        assert stalled["data"]["lag"] >= 2

        status, readiness = await anonymous.get("/readyz")
        assert status == 503, readiness
        assert str(poison.seq) in str(readiness)
        status, metrics = await anonymous.get("/metrics")
        assert f"envstore_projection_stalled {poison.seq}" in metrics
        status, missing = await admin.get("/api/v1/namespace/after-poison/")
        assert status == 404, "an event after the stall must not be shown"
        assert await _checkpoint(stack.postgres.dsn) == poison.seq - 1

        # Only admins see or decide; a decision must name the stalled event and say why.
        status, _ = await anonymous.get("/api/v1/projection/")
        assert status in (401, 403)
        status, body = await admin.request("POST", "/api/v1/projection/skip/", json={"sequence": poison.seq + 1, "reason": "x"})
        assert status == 409, body
        status, body = await admin.request("POST", "/api/v1/projection/skip/", json={"sequence": poison.seq})
        assert status == 400, body

        status, body = await admin.request(
            "POST", "/api/v1/projection/skip/", json={"sequence": poison.seq, "reason": "a NUL in a name, sent by a test"}
        )
        assert status == 200, body
        # The projection goes on: what was accepted after the bad event shows.
        await admin.wait_until("/api/v1/namespace/after-poison/", lambda body: body["data"]["name"] == "after-poison")
        status, state = await admin.get("/api/v1/projection/")
        assert state["data"]["stalled"] is None
        assert [letter["sequence"] for letter in state["data"]["dead_letters"]] == [poison.seq]
        assert state["data"]["dead_letters"][0]["reason"] == "a NUL in a name, sent by a test"
        assert state["data"]["dead_letters"][0]["decided_by"].startswith("service-account:")
        status, readiness = await anonymous.get("/readyz")
        assert status == 200, readiness
        status, metrics = await anonymous.get("/metrics")
        assert "envstore_projection_stalled 0" in metrics
        assert "envstore_projection_dead_letters 1" in metrics
        after = await admin.wait_for_build(await admin.submit(environment_yaml("after", ["tinyjson"]), namespace="stall"))
        assert after["status"] == "COMPLETED"
