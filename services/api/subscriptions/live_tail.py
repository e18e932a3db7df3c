"""The stream's new events, read once per API process and handed to every live client.

One ordered subscription follows the end of the stream; each message becomes one ``StreamItem``
(decoded, scoped and encoded once) and is offered to every subscriber, whose selection decides.
``position`` is the last sequence handed out: a subscriber that joins gets every item after it,
and reads what came before from the stream itself (see ``live_stream``), so nothing falls between.

A subscriber that falls too far behind is closed rather than buffered without bound; its client
reconnects with ``Last-Event-ID`` and catches up from the stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from nats.js.client import JetStreamContext

from envstore.api.subscriptions.selection import EventSelection
from envstore.api.subscriptions.stream_item import StreamItem, StreamItems
from envstore.common.transport import EventBus

log = logging.getLogger(__name__)

MAX_QUEUED_FRAMES = 10_000
CLIENT_CHECK_SECONDS = 1.0
KEEPALIVE_FRAME = b": keep-alive\n\n"


class LiveSubscriber:
    """One live client's queue of frames; None in it means: stop."""

    def __init__(self, selection: EventSelection, start_sequence: int, client_gone: Callable[[], bool]) -> None:
        self.selection = selection
        self.start_sequence = start_sequence
        self.client_gone = client_gone
        self.frames: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.idle_since = asyncio.get_running_loop().time()
        self.closed = False

    def offer(self, item: StreamItem) -> None:
        if self.closed or item.sequence < self.start_sequence or not self.selection.accepts(item):
            return
        if self.frames.qsize() >= MAX_QUEUED_FRAMES:
            log.info("a live client fell %s events behind; closing its stream", MAX_QUEUED_FRAMES)
            self.close()
            return
        self.frames.put_nowait(item.frame)

    def check(self, now: float, keepalive_seconds: float) -> None:
        if self.closed:
            return
        if self.client_gone():
            self.close()
        elif now - self.idle_since >= keepalive_seconds and self.frames.empty():
            self.frames.put_nowait(KEEPALIVE_FRAME)
            self.idle_since = now

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            while not self.frames.empty():
                self.frames.get_nowait()
            self.frames.put_nowait(None)


class LiveTail:
    def __init__(self, bus: EventBus, keepalive_seconds: float) -> None:
        self.bus = bus
        self.items = StreamItems(bus)
        self.keepalive_seconds = keepalive_seconds
        self.position = 0
        self._subscribers: set[LiveSubscriber] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._starting = asyncio.Lock()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    async def join(self, subscriber: LiveSubscriber) -> int:
        """Add a subscriber; it gets every item after the returned sequence."""
        async with self._starting:
            if not self._tasks:
                await self._start()
        # No await between reading the position and joining: no item can fall in between.
        self._subscribers.add(subscriber)
        return self.position

    def leave(self, subscriber: LiveSubscriber) -> None:
        self._subscribers.discard(subscriber)

    async def _start(self) -> None:
        self.position = await self.bus.last_sequence()
        subscription = await self.bus.replay(self.position + 1)
        self._tasks = [
            asyncio.create_task(self._follow(subscription), name="live-tail"),
            asyncio.create_task(self._check_clients(), name="live-tail-keepalive"),
        ]

    async def _follow(self, subscription: JetStreamContext.PushSubscription) -> None:
        try:
            async for message in subscription.messages:
                item = await self.items.item_for(message)
                self.position = message.metadata.sequence.stream
                if item is not None:
                    for subscriber in list(self._subscribers):
                        subscriber.offer(item)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("the live tail stopped; live clients reconnect and resume", exc_info=True)
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
            self._end_all()

    def _end_all(self) -> None:
        """Close every stream; clients reconnect with Last-Event-ID, and the next join restarts."""
        for subscriber in list(self._subscribers):
            subscriber.close()
        self._subscribers.clear()
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self._tasks = []

    async def _check_clients(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(CLIENT_CHECK_SECONDS, self.keepalive_seconds))
            now = loop.time()
            for subscriber in list(self._subscribers):
                subscriber.check(now, self.keepalive_seconds)

    async def close(self) -> None:
        tasks = self._tasks
        self._end_all()
        await asyncio.gather(*tasks, return_exceptions=True)
