"""Feeds the registry's read models from the event stream: every event from sequence 1, in order,
then each new one as it is published.

``start`` returns once every event published before it has been applied, so a restarted registry
answers with its full index from its first request, without asking the API.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from envstore.common.bus import EventBus
from envstore.common.events import Event, UnknownEvent
from envstore.registry.tag_index import TagIndex

log = logging.getLogger(__name__)
CATCH_UP_REPORT_SECONDS = 5.0


class ReadModel(Protocol):
    def apply(self, event: Event | None, sequence: int) -> None: ...


class StreamFollower:
    def __init__(self, bus: EventBus, index: TagIndex, others: list[ReadModel]) -> None:
        self.bus = bus
        self.index = index
        self.others = others
        self._subscription: Any = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        target = await self.bus.last_sequence()
        started = time.monotonic()
        self._subscription = await self.bus.replay(1)
        self.task = asyncio.create_task(self._follow(), name="registry-stream-follower")
        while not await self.index.wait_until(
            lambda: self.index.applied_sequence >= target or self.task.done(),  # type: ignore[union-attr]
            CATCH_UP_REPORT_SECONDS,
        ):
            log.info("catching up with the stream: %d of %d events", self.index.applied_sequence, target)
        if self.task.done():
            self.task.result()  # the follower died while catching up: raise its error
        log.info("index caught up: %d events in %.2f s", target, time.monotonic() - started)

    async def _follow(self) -> None:
        codec = self.bus.codec
        async for message in self._subscription.messages:
            sequence = message.metadata.sequence.stream
            event: Event | None
            try:
                event = codec.decode(message.subject, message.data)
            except UnknownEvent:
                event = None
            except Exception:
                log.exception("event %s on %s cannot be decoded; skipped", sequence, message.subject)
                event = None
            for model in self.others:
                model.apply(event, sequence)
            self.index.apply(event, sequence)
        raise RuntimeError("the subscription to the event stream ended; the registry's index would go stale")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self._subscription is not None:
            try:
                await self._subscription.unsubscribe()
            except Exception:  # the connection may already be closed
                pass
