"""Stopping tasks for certain."""

from __future__ import annotations

import asyncio
from typing import Any

CANCEL_AGAIN_SECONDS = 0.5


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel ``tasks`` (None: none) and wait until each has ended; cancel again any that runs on.
    One cancellation is not always enough on Python 3.11: ``asyncio.wait_for`` (nats-py's
    requests use it) swallows a cancellation that comes just as what it awaits completes, and the
    task goes on as if nothing had happened — a caller waiting for it waits for ever.
    If the caller is cancelled meanwhile, the tasks are still stopped before it hears of it (a
    caller cleaning up must not leave them running)."""
    running = {task for task in tasks if task is not None}
    interrupted = False
    while running:
        for task in running:
            task.cancel()
        try:
            _, running = await asyncio.wait(running, timeout=CANCEL_AGAIN_SECONDS)
        except asyncio.CancelledError:
            interrupted = True
    # Their outcomes are taken (no "exception was never retrieved").
    for task in tasks:
        if task is not None and not task.cancelled():
            task.exception()
    if interrupted:
        raise asyncio.CancelledError
