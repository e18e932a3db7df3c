"""A process that seems stuck tells where each task waits (SIGUSR1 -> its log)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from envstore.common.task_dump import DUMP_END, awaited_chain, log_every_task


async def _inner_wait(event: asyncio.Event) -> None:
    await event.wait()


async def _outer_wait(event: asyncio.Event) -> None:
    await _inner_wait(event)


async def test_the_chain_names_each_awaiting_function_down_to_the_future() -> None:
    event = asyncio.Event()
    task = asyncio.create_task(_outer_wait(event), name="waiting-task")
    await asyncio.sleep(0)  # let it reach its wait
    chain = awaited_chain(task)
    event.set()
    await task
    assert [line.split(" ")[0] for line in chain[:3]] == ["_outer_wait", "_inner_wait", "wait"]
    assert chain[-1].startswith("waits on <Future pending")


async def test_every_task_is_logged_then_the_end_marker(caplog: pytest.LogCaptureFixture) -> None:
    event = asyncio.Event()
    task = asyncio.create_task(_outer_wait(event), name="waiting-task")
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="envstore.common.task_dump"):
        log_every_task()
    event.set()
    await task
    messages = [record.getMessage() for record in caplog.records]
    assert any(message.startswith("task waiting-task:") and "_inner_wait" in message for message in messages)
    assert messages[-1].startswith(DUMP_END)
