"""Hearing that the read model moved: the API's projector ``NOTIFY``s after every commit, and the
registry wakes whoever waits for a state (a build's image, a new dynamic image's repository) to
look again. A lost connection is re-opened; while it is down, waiters look every second."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "envstore_projection"
FALLBACK_POLL_SECONDS = 1.0


class ProjectionWatch:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._moved = asyncio.Condition()
        self._generation = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="projection-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _listen(self) -> None:
        while True:
            connection = None
            try:
                connection = await asyncpg.connect(self.dsn)
                closed = asyncio.Event()
                connection.add_termination_listener(lambda _connection: closed.set())
                await connection.add_listener(NOTIFY_CHANNEL, self._on_notify)
                await self._wake()  # anything may have moved while not listening
                await closed.wait()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("listening to the read model's changes failed; retrying", exc_info=True)
                await asyncio.sleep(FALLBACK_POLL_SECONDS)
            finally:
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close()

    def _on_notify(self, *_args: object) -> None:
        asyncio.get_running_loop().create_task(self._wake())

    async def _wake(self) -> None:
        async with self._moved:
            self._generation += 1
            self._moved.notify_all()

    async def wait_until(self, ready: Callable[[], Awaitable[bool]], timeout_seconds: float) -> bool:
        """True once ``ready()`` holds (looked at again whenever the read model moves, or every
        second), False at the timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        while True:
            async with self._moved:
                generation = self._generation
            if await ready():
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            async with self._moved:
                if self._generation == generation:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(min(remaining, FALLBACK_POLL_SECONDS)):
                            await self._moved.wait_for(lambda: self._generation != generation)
