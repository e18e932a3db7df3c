"""The live event stream (Server-Sent Events): one ordered stream subscription per client, from
the sequence after the client's ``Last-Event-ID``, with the events its selection lets through and
keep-alive comments; the subscription ends when the client goes away.

Each frame's ``id:`` is the event's stream sequence, so a client that reconnects with the last id
it saw resumes exactly after it: no event missed, none repeated."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web
from nats.errors import ConnectionClosedError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.client import JetStreamContext

from envstore.api.subscriptions.selection import EventSelection

# How often a quiet stream checks that its client is still there.
CLIENT_CHECK_SECONDS = 1.0
RECONNECT_DELAY_MILLISECONDS = 2000
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # proxies must pass frames on at once
}


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


class LiveStreams:
    """The live streams open in this API process: shutting the API down ends them at once
    (instead of waiting for clients that never hang up)."""

    def __init__(self, keepalive_seconds: float) -> None:
        self.keepalive_seconds = keepalive_seconds
        self._running: set[asyncio.Task[object]] = set()

    @property
    def open_count(self) -> int:
        return len(self._running)

    async def close_all(self, _app: web.Application | None = None) -> None:
        for task in list(self._running):
            task.cancel()

    async def serve(self, request: web.Request, selection: EventSelection, start_sequence: int) -> web.StreamResponse:
        subscription = await selection.bus.replay(start_sequence, selection.event_filter.stream_subject())
        this_task = asyncio.current_task()
        assert this_task is not None
        self._running.add(this_task)
        response = web.StreamResponse(headers=SSE_HEADERS)
        try:
            await response.prepare(request)
            await response.write(f"retry: {RECONNECT_DELAY_MILLISECONDS}\n: stream open\n\n".encode())
            await self._pump(request, response, subscription, selection)
        except (ConnectionError, ConnectionClosedError):
            pass  # the client (or the bus, at shutdown) went away
        finally:
            self._running.discard(this_task)
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        return response

    async def _pump(
        self,
        request: web.Request,
        response: web.StreamResponse,
        subscription: JetStreamContext.PushSubscription,
        selection: EventSelection,
    ) -> None:
        loop = asyncio.get_running_loop()
        last_write = loop.time()
        while not _client_gone(request):
            try:
                message = await subscription.next_msg(timeout=min(CLIENT_CHECK_SECONDS, self.keepalive_seconds))
            except NatsTimeoutError:
                if loop.time() - last_write >= self.keepalive_seconds:
                    await response.write(b": keep-alive\n\n")
                    last_write = loop.time()
                continue
            envelope = await selection.envelope_for(message)
            if envelope is not None:
                await response.write(b"id: %d\ndata: %s\n\n" % (message.metadata.sequence.stream, envelope))
                last_write = loop.time()
