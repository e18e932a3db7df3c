"""``GET /api/v1/events/``: the event stream, filtered by namespace, environment, build and event
type, with only the events the caller may read.

With ``Accept: text/event-stream`` (what EventSource sends) it is a live Server-Sent Events stream
that resumes after ``Last-Event-ID`` (header, or the ``last_event_id`` query parameter for clients
that cannot set headers), from now when neither is given. Otherwise it answers one bounded JSON
page of the events after ``last_event_id`` (from the first event when not given), for polling."""

from __future__ import annotations

from aiohttp import web

from envstore.api.context import SETTINGS, context_of, principal_of
from envstore.api.envelopes import ApiError
from envstore.api.pagination import MAX_PAGE_SIZE, is_whole_number, whole_number
from envstore.api.routes.paths import Routes
from envstore.api.subscriptions.event_filter import EventFilter, FilterError
from envstore.api.subscriptions.event_page import event_page
from envstore.api.subscriptions.event_scope import EventScope
from envstore.api.subscriptions.live_stream import LiveStreams
from envstore.api.subscriptions.readable_events import ReadableEvents
from envstore.api.subscriptions.selection import EventSelection
from envstore.api.subscriptions.stream_item import StreamItems

LIVE_STREAMS = web.AppKey("live_streams", LiveStreams)
EVENT_STREAM = "text/event-stream"
PAGE_SCAN_LIMIT = 10_000  # stream messages one JSON page reads at most


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
    if not is_whole_number(text, most_digits=18):
        raise ApiError(400, f"Last-Event-ID must be an event id (a stream sequence) from this stream, got {text!r}")
    return int(text)


async def _check_filter_is_readable(items: StreamItems, selection: EventSelection) -> None:
    """A filter naming what the caller may not read is refused outright (rather than answering
    nothing forever)."""
    event_filter = selection.event_filter
    scope = EventScope(event_filter.namespace, event_filter.environment if event_filter.namespace else None)
    if event_filter.build_id is not None:
        location = await items.scopes.build_location(event_filter.build_id)
        if location is None:
            raise ApiError(404, "build id does not exist")
        scope = EventScope(*location)
    if scope.namespace is not None and not selection.readable.may_read_scope(scope.arn):
        raise ApiError(403, f"Unauthorized to read the events of {scope.arn}")


async def get_events(request: web.Request) -> web.StreamResponse:
    bus = context_of(request).bus
    live_streams = request.app[LIVE_STREAMS]
    items = live_streams.tail(bus).items
    selection = EventSelection(ReadableEvents(principal_of(request)), _filter_of(request))
    last_event_id = _last_event_id(request)
    live = EVENT_STREAM in request.headers.get("Accept", "")
    size = whole_number(request, "size", MAX_PAGE_SIZE) or MAX_PAGE_SIZE
    await _check_filter_is_readable(items, selection)
    if not live:
        page = await event_page(items, selection, (last_event_id or 0) + 1, min(size, MAX_PAGE_SIZE), PAGE_SCAN_LIMIT)
        return web.Response(body=page.json(), content_type="application/json")
    # Live: exactly after the last event the client saw, or from now.
    start = last_event_id + 1 if last_event_id is not None else await bus.last_sequence() + 1
    return await live_streams.serve(request, bus, selection, start)


def register(routes: Routes) -> None:
    live_streams = LiveStreams(routes.app[SETTINGS].events_keepalive_seconds)
    routes.app[LIVE_STREAMS] = live_streams
    routes.app.on_shutdown.append(live_streams.close_all)
    routes.add(
        "GET",
        "/api/v1/events/",
        get_events,
        "Events: live Server-Sent Events with Accept: text/event-stream (id: stream sequence; resume with "
        "Last-Event-ID), else a JSON page of the events after last_event_id",
        query=("namespace", "environment", "build_id", "type", "last_event_id", "size"),
        responses=(200, 400, 403, 404),
    )
