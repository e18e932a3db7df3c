"""``GET /api/v1/events/``: the event stream as Server-Sent Events, filtered by namespace,
environment, build and event type, resumable with ``Last-Event-ID`` (header, or the
``last_event_id`` query parameter for clients that cannot set headers)."""

from __future__ import annotations

from aiohttp import web

from envstore.api.context import context_of, principal_of
from envstore.api.envelopes import ApiError
from envstore.api.pagination import whole_number
from envstore.api.routes.paths import Routes
from envstore.api.subscriptions.event_filter import EventFilter, FilterError
from envstore.api.subscriptions.event_scope import EventScope, EventScopes
from envstore.api.subscriptions.live_stream import LiveStreams
from envstore.api.subscriptions.readable_events import ReadableEvents
from envstore.api.subscriptions.settings import SubscriptionSettings

LIVE_STREAMS = web.AppKey("live_streams", LiveStreams)


def _filter_of(request: web.Request) -> EventFilter:
    event_types = [
        name.strip() for value in request.query.getall("type", []) for name in value.split(",") if name.strip()
    ]
    try:
        return EventFilter.of(
            namespace=request.query.get("namespace"),
            environment=request.query.get("environment"),
            build_id=whole_number(request, "build_id", None),
            event_types=event_types,
        )
    except FilterError as error:
        raise ApiError(400, str(error)) from None


def _last_event_id(request: web.Request) -> int | None:
    text = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    if text is None or text.strip() == "":
        return None
    text = text.strip()
    if not text.isdigit() or len(text) > 18:
        raise ApiError(400, f"Last-Event-ID must be an event id (a stream sequence) from this stream, got {text!r}")
    return int(text)


async def _check_filter_is_readable(request: web.Request, readable: ReadableEvents, event_filter: EventFilter) -> None:
    """A filter naming what the caller may not read is refused outright (rather than streaming
    nothing forever)."""
    scope = EventScope(event_filter.namespace, event_filter.environment if event_filter.namespace else None)
    if event_filter.build_id is not None:
        location = await EventScopes(context_of(request).bus).build_location(event_filter.build_id)
        if location is None:
            raise ApiError(404, "build id does not exist")
        scope = EventScope(*location)
    if scope.namespace is not None and not readable.may_read_scope(scope.arn):
        raise ApiError(403, f"Unauthorized to read the events of {scope.arn}")


async def stream_events(request: web.Request) -> web.StreamResponse:
    context = context_of(request)
    event_filter = _filter_of(request)
    last_event_id = _last_event_id(request)
    readable = ReadableEvents(principal_of(request))
    await _check_filter_is_readable(request, readable, event_filter)
    # No Last-Event-ID: from now on; otherwise exactly after the last event the client saw.
    start = last_event_id + 1 if last_event_id is not None else await context.bus.last_sequence() + 1
    return await request.app[LIVE_STREAMS].serve(request, context.bus, readable, event_filter, start)


def register(routes: Routes) -> None:
    live_streams = LiveStreams(SubscriptionSettings().events_keepalive_seconds)
    routes.app[LIVE_STREAMS] = live_streams
    routes.app.on_shutdown.append(live_streams.close_all)
    routes.add(
        "GET",
        "/api/v1/events/",
        stream_events,
        "Live events as Server-Sent Events (id: stream sequence; resume with Last-Event-ID)",
        query=("namespace", "environment", "build_id", "type", "last_event_id"),
        responses=(200, 400, 403, 404),
    )
