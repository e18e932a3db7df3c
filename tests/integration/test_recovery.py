"""Crashes lose nothing: a worker killed mid-build, PostgreSQL restarted mid-stream, the read
model dropped and replayed."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import subprocess
import sys

import asyncpg
from nats.js.api import ConsumerConfig, DeliverPolicy

from envstore.common.bus_permissions import PROJECTION_REBUILD
from envstore.common.events import ArtifactReady, BuildBuilt, BuildCompleted, BuildFailed, BuildProgress, BuildSolved
from tests.api_client import ApiClient, environment_yaml
from tests.stream_reader import events_of_build, stream_events

LARGE_SPEC = ["reportkit", "cachekit", "units", "plotkit"]


async def test_builder_killed_during_install_completes_the_build_once(api: ApiClient, stack) -> None:
    # Followed as any reader of the log does (an ordered consumer, with a reader's credentials).
    connection = await stack.connect_nats(PROJECTION_REBUILD)
    install_started: asyncio.Queue[int] = asyncio.Queue()

    async def on_progress(message) -> None:  # type: ignore[no-untyped-def]
        progress = json.loads(message.data)
        if progress["phase"] == "install" and progress["state"] == "started":
            await install_started.put(progress["build_id"])

    subscription = await connection.jetstream().subscribe(
        BuildProgress.subject_pattern(),
        stream=stack.nats_stream,
        cb=on_progress,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
    )
    try:
        build_id = await api.submit(environment_yaml("crash", LARGE_SPEC), namespace="recovery")
        while await asyncio.wait_for(install_started.get(), 30) != build_id:
            pass
        await stack.kill_service("builder")
    finally:
        await subscription.unsubscribe()
        await connection.close()
    await stack.start_service("builder")  # or the supervisor did already

    build = await api.wait_for_build(build_id, timeout_seconds=60)
    assert build["status"] == "COMPLETED", build["status_info"]
    outcomes = collections.Counter(type(event).__name__ for event in await events_of_build(stack, build_id))
    assert outcomes[BuildSolved.__name__] == 1
    assert outcomes[BuildBuilt.__name__] == 1
    assert outcomes[BuildCompleted.__name__] == 1
    assert outcomes[BuildFailed.__name__] == 0
    # One per kind and platform (a multi-platform lock has a tarball and an installer per platform).
    ready = [
        (event.kind, event.platform) for event in await events_of_build(stack, build_id) if isinstance(event, ArtifactReady)
    ]
    assert sorted(ready) == sorted(set(ready)), f"an artifact was announced twice: {ready}"


async def test_postgres_restart_mid_stream_loses_nothing(api: ApiClient, stack) -> None:
    build_ids = [
        await api.submit(environment_yaml(f"pg-restart-{index}", ["datakit", "configlib"]), namespace="recovery")
        for index in range(3)
    ]
    await stack.process("postgres").kill(restart=False)  # down until started again below
    # The workers go on without the database: wait until the stream holds every outcome.
    for _ in range(600):
        events = await stream_events(stack)
        completed = {event.build_id for _, event in events if isinstance(event, (BuildCompleted, BuildFailed))}
        if set(build_ids) <= completed:
            break
        await asyncio.sleep(0.05)
    await stack.process("postgres").start()

    for build_id in build_ids:
        build = await api.wait_for_build(build_id, timeout_seconds=60)
        assert build["status"] == "COMPLETED", build["status_info"]
    last = (await stream_events(stack))[-1][0]
    connection = await asyncpg.connect(stack.postgres.dsn)
    try:
        for _ in range(600):
            checkpoint = await connection.fetchval("SELECT last_sequence FROM projection_checkpoint")
            if checkpoint >= last:
                break
            await asyncio.sleep(0.05)
        progress_rows = await connection.fetchval(
            "SELECT count(*) FROM build_progress WHERE build_id = ANY($1::bigint[])", build_ids
        )
    finally:
        await connection.close()
    progress_events = [
        event for _, event in await stream_events(stack)
        if isinstance(event, BuildProgress) and event.build_id in build_ids
    ]
    assert progress_rows == len(progress_events)


async def test_projection_rebuild_reproduces_identical_answers(api: ApiClient, stack) -> None:
    await api.wait_for_build(await api.submit(environment_yaml("rebuilt", ["tinyjson"]), namespace="replay"))
    failed = await api.wait_for_build(
        await api.submit(environment_yaml("rebuilt-failure", ["no-such-thing"]), namespace="replay")
    )
    assert failed["status"] == "FAILED"

    async def answers() -> dict[str, object]:
        collected: dict[str, object] = {"namespaces": await api.get("/api/v1/namespace/?size=100")}
        _, namespaces = collected["namespaces"]
        for _, event in await stream_events(stack):
            if type(event).__name__ == "BuildSubmitted":
                collected[f"build {event.build_id}"] = await api.get(f"/api/v1/build/{event.build_id}/")
                collected[f"environment {event.namespace}/{event.environment}"] = await api.get(
                    f"/api/v1/environment/{event.namespace}/{event.environment}/"
                )
        return collected

    before = await answers()
    environment = {
        **os.environ,
        **stack.nats_client_settings(PROJECTION_REBUILD),
        "ENVSTORE_DATABASE_URL": stack.postgres.dsn,
        # Large specifications live in storage: the rebuild reads them from there.
        "ENVSTORE_DATA_DIR": str(stack.data_directory),
    }
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "envstore.launcher.cli", "projection", "rebuild"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "read model rebuilt" in result.stdout
    after = await answers()
    assert after == before
