"""Exactly-once effects past the de-duplication window: a pipeline event handed to the workers again
under a new ``Nats-Msg-Id`` (as a redelivery an hour later would be, when JetStream no longer
remembers the first id) produces no second event and no second artifact."""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path

import pytest

from envstore.launcher.stack import EmbeddedStack
from envstore.common.events import (
    ArtifactReady,
    BuildBuilt,
    BuildCompleted,
    BuildSolved,
    BuildSubmitted,
    Event,
)
from tests.api_client import ApiClient, environment_yaml
from tests.stream_reader import stream_events

WORKERS = ("solver", "builder", "packager")
# JetStream forgets a message id after this window: the test republishes after it has passed.
DUPLICATE_WINDOW_SECONDS = 1.0


@pytest.fixture(scope="module")
async def forgetful_stack(session_directory: Path, channel_url: str):  # type: ignore[no-untyped-def]
    settings = {
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel_url,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel_url,
        "ENVSTORE_NATS_DUPLICATE_WINDOW_SECONDS": str(DUPLICATE_WINDOW_SECONDS),
    }
    async with EmbeddedStack(session_directory / "forgetful-stack", settings=settings) as running:
        yield running


async def wait_until_workers_are_idle(stack: EmbeddedStack, timeout_seconds: float = 60) -> None:
    # The api's credentials list every consumer (its lag metrics do).
    connection = await stack.connect_nats("api")
    try:
        jetstream = connection.jetstream()
        deadline = time.monotonic() + timeout_seconds
        while True:
            listed = {info.name: info for info in await jetstream.consumers_info("ENVSTORE")}
            infos = [listed[worker] for worker in WORKERS]
            if all(info.num_pending == 0 and info.num_ack_pending == 0 for info in infos):
                return
            assert time.monotonic() < deadline, [(info.name, info.num_pending, info.num_ack_pending) for info in infos]
            await asyncio.sleep(0.1)
    finally:
        await connection.close()


def outcomes_of(events: list[tuple[int, Event]], build_id: int) -> collections.Counter[str]:
    counted: collections.Counter[str] = collections.Counter()
    for _, event in events:
        if getattr(event, "build_id", None) != build_id:
            continue
        if isinstance(event, ArtifactReady):
            counted[f"artifact.ready {event.kind}"] += 1
        elif isinstance(event, (BuildSubmitted, BuildSolved, BuildBuilt, BuildCompleted)):
            counted[event.tag()] += 1
    return counted


async def test_pipeline_events_redelivered_after_the_window_change_nothing(forgetful_stack: EmbeddedStack) -> None:
    stack = forgetful_stack
    async with ApiClient(stack.api_url, token=stack.admin_token) as api:
        await redelivered_after_the_window(api, stack)


async def redelivered_after_the_window(api: ApiClient, stack: EmbeddedStack) -> None:
    build = await api.wait_for_build(await api.submit(environment_yaml("once", ["hello", "tinyjson"]), "exactly-once"))
    assert build["status"] == "COMPLETED", build["status_info"]
    await wait_until_workers_are_idle(stack)
    events = await stream_events(stack)
    before = outcomes_of(events, build["id"])
    assert before["build.solved"] == before["build.built"] == before["build.completed"] == 1

    # The window passes (a fixed time, not a guess): the workers' message ids are forgotten.
    await asyncio.sleep(DUPLICATE_WINDOW_SECONDS * 1.5)
    # The build's solve and install, published again as new messages (its submission is not: a
    # second submission of one build id is a bad event, which the read model stalls on — tested elsewhere).
    # Each is published again with its publisher's credentials (the solver's, the builder's).
    codec_events = [
        (sequence, event) for sequence, event in events
        if getattr(event, "build_id", None) == build["id"] and isinstance(event, (BuildSolved, BuildBuilt))
    ]
    for sequence, event in codec_events:
        (publisher,) = type(event).PUBLISHED_BY
        connection = await stack.connect_nats(publisher)
        try:
            jetstream = connection.jetstream()
            stored = await jetstream.get_msg("ENVSTORE", seq=sequence)
            await jetstream.publish(
                stored.subject, stored.data, stream="ENVSTORE", headers={"Nats-Msg-Id": f"an-hour-later:{sequence}"}
            )
        finally:
            await connection.close()
    await wait_until_workers_are_idle(stack)

    after = outcomes_of(await stream_events(stack), build["id"])
    # The republished inputs are there twice; their effects once.
    assert after["build.submitted"] == 1 and after["build.solved"] == 2 and after["build.built"] == 2
    assert after["build.completed"] == 1
    assert {kind: count for kind, count in after.items() if kind.startswith("artifact.ready")} == {
        kind: count for kind, count in before.items() if kind.startswith("artifact.ready")
    }
    assert all(count == 1 for kind, count in after.items() if kind.startswith("artifact.ready"))
    assert (await api.build(build["id"]))["status"] == "COMPLETED"
