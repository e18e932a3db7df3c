"""The transport against a real nats-server: once-only publishing holds past the de-duplication
window, expectations refuse a publish on a moved aggregate, a lost answer is not a conflict, and
ids are never given twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from envstore.common.events import BuildCompleted, BuildFailed, EnvironmentUpdated, environment_tree
from envstore.common.transport import Conflict, EventBus, Expectation
from envstore.launcher.nats_process import NatsServer


@pytest.fixture
async def bus(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with NatsServer(tmp_path / "nats") as server:
        connected = await EventBus.connect(server.url, "TRANSPORT")
        await connected.ensure_stream(duplicate_window_seconds=1.0)
        try:
            yield connected
        finally:
            await connected.close()


async def test_an_outcome_is_published_once_whatever_its_message_id(bus: EventBus) -> None:
    assert await bus.publish_once(BuildCompleted(build_id=7, namespace="n", environment="e"), "completed:7")
    await asyncio.sleep(1.2)  # past the de-duplication window (a fixed time)
    again = await bus.publish_once(BuildCompleted(build_id=7, namespace="n", environment="e"), "completed:7")
    other = await bus.publish_once(BuildFailed(build_id=7, phase="x", reason="late"), "failed:7")
    # The very same message again is recognised as the one published; another outcome is refused.
    assert again is not None and again.duplicate and again.seq == 1
    assert other is None
    assert await bus.last_sequence() == 1


async def test_a_command_on_a_moved_aggregate_is_refused_unless_it_moved_it(bus: EventBus) -> None:
    tree = environment_tree("n", "e")
    first = await bus.publish(EnvironmentUpdated(namespace="n", environment="e", description="a"), "m1", expect=Expectation(tree, 0))
    with pytest.raises(Conflict):
        await bus.publish(EnvironmentUpdated(namespace="n", environment="e", description="b"), "m2", expect=Expectation(tree, 0))
    # The same message again (its first answer lost): recognised as already published.
    repeated = await bus.publish(EnvironmentUpdated(namespace="n", environment="e", description="a"), "m1", expect=Expectation(tree, 0))
    assert repeated.seq == first.seq
    assert await bus.last_sequence() == 1


async def test_ids_are_never_given_twice_and_start_above_a_floor(bus: EventBus) -> None:
    ids = await asyncio.gather(*(bus.allocate_id("build") for _ in range(50)))
    assert sorted(ids) == list(range(1, 51))
    assert await bus.allocate_id("build", at_least=1000) == 1000
    assert await bus.allocate_id("build") == 1001
