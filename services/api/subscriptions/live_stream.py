"""The live event stream (Server-Sent Events) of one client: from the sequence after its
``Last-Event-ID`` (or from now), the events its selection lets through, keep-alive comments
when quiet, until the client goes away.

It joins the process's live tail first, then reads whatever came before the tail's position
from the stream itself (an ordered consumer from the client's sequence, closed once caught up),
then forwards the tail's frames: every event once, in stream order. Each frame's ``id:`` is the
event's stream sequence, so a client that reconnects with the last id it saw resumes exactly
after it: no event missed, none repeated."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web
from nats.errors import ConnectionClosedError
from nats.errors import TimeoutError as NatsTimeoutError

from envstore.api.subscriptions.live_tail import LiveSubscriber, LiveTail
from envstore.api.subscriptions.selection import EventSelection
from envstore.common.transport import EventBus
from envstore.common.events import STREAM_SUBJECTS

RECONNECT_DELAY_MILLISECONDS = 2000
CATCH_UP_WAIT_SECONDS = 5.0
MAX_FRAMES_PER_WRITE = 256
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # proxies must pass frames on at once
}


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


class LiveStreams:
    """The live streams of this API process and the tail they share; shutting the API down ends
    them at once (instead of waiting for clients that never hang up)."""

    def __init__(self, keepalive_seconds: float) -> None:
        self.keepalive_seconds = keepalive_seconds
        self._tail: LiveTail | None = None
        self._running: set[asyncio.Task[object]] = set()

    def tail(self, bus: EventBus) -> LiveTail:
        if self._tail is None:
            self._tail = LiveTail(bus, self.keepalive_seconds)
        return self._tail

    async def close_all(self, _app: web.Application | None = None) -> None:
        for task in list(self._running):
            task.cancel()
        if self._tail is not None:
            await self._tail.close()

    async def serve(
        self, request: web.Request, bus: EventBus, selection: EventSelection, start_sequence: int
    ) -> web.StreamResponse:
        this_task = asyncio.current_task()
        assert this_task is not None
        self._running.add(this_task)
        tail = self.tail(bus)
        subscriber = LiveSubscriber(selection, start_sequence, lambda: _client_gone(request))
        response = web.StreamResponse(headers=SSE_HEADERS)
        try:
            await response.prepare(request)
            await response.write(f"retry: {RECONNECT_DELAY_MILLISECONDS}\n: stream open\n\n".encode())
            position = await tail.join(subscriber)
            if start_sequence <= position:
                await self._catch_up(request, response, tail, selection, start_sequence, position)
            await self._forward(request, response, subscriber)
        except (ConnectionError, ConnectionClosedError):
            pass  # the client (or the bus, at shutdown) went away
        finally:
            tail.leave(subscriber)
            self._running.discard(this_task)
        return response

    async def _catch_up(
        self,
        request: web.Request,
        response: web.StreamResponse,
        tail: LiveTail,
        selection: EventSelection,
        start_sequence: int,
        position: int,
    ) -> None:
        """The events from ``start_sequence`` to ``position``, read from the stream (every subject:
        the sequences then come without gaps, so the end is known)."""
        subscription = await tail.bus.replay(start_sequence, STREAM_SUBJECTS)
        try:
            sequence = start_sequence - 1
            while sequence < position and not _client_gone(request):
                try:
                    message = await subscription.next_msg(timeout=CATCH_UP_WAIT_SECONDS)
                except NatsTimeoutError:
                    continue
                sequence = message.metadata.sequence.stream
                item = await tail.items.item_for(message)
                if item is not None and item.sequence <= position and selection.accepts(item):
                    await response.write(item.frame)
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _forward(self, request: web.Request, response: web.StreamResponse, subscriber: LiveSubscriber) -> None:
        loop = asyncio.get_running_loop()
        while True:
            frame = await subscriber.frames.get()
            if frame is None or _client_gone(request):
                return
            batch = [frame]
            while len(batch) < MAX_FRAMES_PER_WRITE and not subscriber.frames.empty():
                following = subscriber.frames.get_nowait()
                if following is None:
                    await response.write(b"".join(batch))
                    return
                batch.append(following)
            await response.write(b"".join(batch))
            subscriber.idle_since = loop.time()
