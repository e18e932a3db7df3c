"""The live event stream (Server-Sent Events): one ordered stream subscription per client, from
the sequence after the client's ``Last-Event-ID``, filtered, restricted to what the caller may
read, with keep-alive comments; the subscription ends when the client goes away.

Each frame's ``id:`` is the event's stream sequence, so a client that reconnects with the last id
it saw resumes exactly after it: no event missed, none repeated."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec
from aiohttp import web
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.client import JetStreamContext

from envstore.api.subscriptions.envelope import envelope_json
from envstore.api.subscriptions.event_filter import EventFilter, event_type_name
from envstore.api.subscriptions.event_scope import EventScopes
from envstore.api.subscriptions.readable_events import ReadableEvents
from envstore.common.bus import EventBus
from envstore.common.events import UnknownEvent

log = logging.getLogger(__name__)

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

    async def serve(
        self,
        request: web.Request,
        bus: EventBus,
        readable: ReadableEvents,
        event_filter: EventFilter,
        start_sequence: int,
    ) -> web.StreamResponse:
        subscription = await bus.replay(start_sequence, event_filter.stream_subject())
        this_task = asyncio.current_task()
        assert this_task is not None
        self._running.add(this_task)
        stream = _ClientStream(bus, EventScopes(bus), readable, event_filter)
        response = web.StreamResponse(headers=SSE_HEADERS)
        try:
            await response.prepare(request)
            await response.write(f"retry: {RECONNECT_DELAY_MILLISECONDS}\n: stream open\n\n".encode())
            await stream.pump(request, response, subscription, self.keepalive_seconds)
        except (ConnectionError, ConnectionClosedError):
            pass  # the client (or the bus, at shutdown) went away
        finally:
            self._running.discard(this_task)
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        return response


class _ClientStream:
    """Turns one client's stream messages into SSE frames."""

    def __init__(self, bus: EventBus, scopes: EventScopes, readable: ReadableEvents, event_filter: EventFilter) -> None:
        self.bus = bus
        self.scopes = scopes
        self.readable = readable
        self.event_filter = event_filter

    async def pump(
        self,
        request: web.Request,
        response: web.StreamResponse,
        subscription: JetStreamContext.PushSubscription,
        keepalive_seconds: float,
    ) -> None:
        loop = asyncio.get_running_loop()
        last_write = loop.time()
        while not _client_gone(request):
            try:
                message = await subscription.next_msg(timeout=min(CLIENT_CHECK_SECONDS, keepalive_seconds))
            except NatsTimeoutError:
                if loop.time() - last_write >= keepalive_seconds:
                    await response.write(b": keep-alive\n\n")
                    last_write = loop.time()
                continue
            frame = await self.frame_for(message)
            if frame is not None:
                await response.write(frame)
                last_write = loop.time()

    async def frame_for(self, message: Msg) -> bytes | None:
        """The SSE frame for one stream message, or None if this client does not get it."""
        sequence = message.metadata.sequence.stream
        try:
            event = self.bus.codec.decode(message.subject, message.data)
        except UnknownEvent:
            return None
        except msgspec.DecodeError:
            log.warning("event #%s on %s cannot be decoded; not streamed", sequence, message.subject)
            return None
        event_type = event_type_name(type(event))
        if not self.event_filter.accepts_type(event_type):
            return None
        scope = await self.scopes.scope_of(event, sequence)
        if not self.event_filter.accepts(event_type, scope) or not self.readable.may_read(event, scope):
            return None
        data = envelope_json(sequence, event_type, message.subject, event.occurred_at, scope, message.data)
        return b"id: %d\ndata: %s\n\n" % (sequence, data)
