"""The audit trail (admins): who caused each command, when, and on what, from the read model.

``GET /api/v1/audit/?namespace=team&environment=tools&type=environment.current_build_set
&since=2025-06-10&until=2025-06-11`` answers "who rolled back team/tools on Tuesday"."""

from __future__ import annotations

import datetime

from aiohttp import web

from envstore.api.audit.projection import AUDITED_TYPES
from envstore.api.audit.queries import AuditFilters, audit_page
from envstore.api.context import context_of, principal_of
from envstore.api.envelopes import ApiError, json_answer
from envstore.api.pagination import END_CURSOR, decode_cursor, encode_cursor, whole_number
from envstore.api.routes.paths import Routes
from envstore.api.routes.projection import ADMIN_EVERYWHERE

MAX_LIMIT = 1000
AUDITED_TAGS = sorted(event_type.tag() for event_type in AUDITED_TYPES)
FILTERS = ("namespace", "environment", "principal", "type", "since", "until")


def _moment(request: web.Request, name: str) -> datetime.datetime | None:
    """An ISO 8601 date or time (UTC unless it says otherwise), or Unix seconds; naive UTC."""
    text = request.query.get(name)
    if not text:
        return None
    try:
        moment = (
            datetime.datetime.fromtimestamp(float(text), datetime.UTC)
            if text.replace(".", "", 1).isdigit()
            else datetime.datetime.fromisoformat(text)
        )
    except (ValueError, OverflowError, OSError):
        raise ApiError(
            400,
            f"query parameter {name!r} must be an ISO 8601 date or time (2025-06-10, 2025-06-10T14:00:00Z) "
            f"or Unix seconds, got {text!r}",
        ) from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.UTC).replace(tzinfo=None)
    return moment


def _event_types(request: web.Request) -> tuple[str, ...]:
    wanted = tuple(name for value in request.query.getall("type", []) for name in value.split(",") if name)
    unknown = sorted(set(wanted) - set(AUDITED_TAGS))
    if unknown:
        raise ApiError(400, f"the audit trail holds no events of type {unknown}; its types are {AUDITED_TAGS}")
    return wanted


def audit_filters(request: web.Request) -> AuditFilters:
    filters = AuditFilters(
        namespace=request.query.get("namespace") or None,
        environment=request.query.get("environment") or None,
        principal=request.query.get("principal") or None,
        event_types=_event_types(request),
        since=_moment(request, "since"),
        until=_moment(request, "until"),
    )
    if filters.since is not None and filters.until is not None and filters.since >= filters.until:
        raise ApiError(400, "since must be before until (since is included, until is not)")
    return filters


async def audit_trail(request: web.Request) -> web.Response:
    if not principal_of(request).is_allowed("", *ADMIN_EVERYWHERE):  # "": the global ARN
        raise ApiError(403, "Unauthorized: the audit trail is for admins (role admin on */*)")
    filters = audit_filters(request)
    order = request.query.get("order", "asc")
    if order not in ("asc", "desc"):
        raise ApiError(400, f"order must be 'asc' (oldest first) or 'desc', got {order!r}")
    limit = min(whole_number(request, "limit", 100) or 100, MAX_LIMIT)
    after, _ = decode_cursor(request.query.get("cursor"))
    page = await audit_page(context_of(request).read_model.pool, filters, after, limit, order == "desc")
    cursor = encode_cursor(page.last_sequence, None) if page.last_sequence is not None else END_CURSOR
    return json_answer(
        {"status": "ok", "data": page.entries, "message": None, "cursor": cursor, "count": page.count}
    )


def register(routes: Routes) -> None:
    routes.add(
        "GET",
        "/api/v1/audit/",
        audit_trail,
        "The audit trail: every command with its principal, filtered and cursor-paginated (admins)",
        query=(*FILTERS, "limit", "order", "cursor"),
        responses=(200, 400, 403),
    )
