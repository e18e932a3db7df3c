"""Stopping a task stops it, even one that swallowed its first cancellation (Python 3.11's
``asyncio.wait_for`` does, when what it awaits completes as the cancellation comes)."""

from __future__ import annotations

import asyncio

import pytest

from envstore.common.task_cancellation import cancel_and_wait


async def _swallows_first_cancellation(stopped: list[str]) -> None:
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        stopped.append("swallowed")  # as asyncio.wait_for does in 3.11
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        stopped.append("stopped")
        raise


async def test_a_task_that_swallowed_a_cancellation_is_cancelled_again_until_it_ends() -> None:
    stopped: list[str] = []
    task = asyncio.create_task(_swallows_first_cancellation(stopped))
    await asyncio.sleep(0)
    async with asyncio.timeout(10):
        await cancel_and_wait(task, None)
    assert task.cancelled()
    assert stopped == ["swallowed", "stopped"]


async def test_a_cancelled_caller_still_stops_its_tasks_first() -> None:
    stopped: list[str] = []
    inner = asyncio.create_task(_swallows_first_cancellation(stopped))
    await asyncio.sleep(0)
    caller = asyncio.create_task(cancel_and_wait(inner))
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(10):
            await caller
    assert inner.done() and stopped == ["swallowed", "stopped"]


async def test_a_failed_task_is_waited_for_and_its_error_taken() -> None:
    async def fails() -> None:
        raise ValueError("broken")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert isinstance(task.exception(), ValueError)
