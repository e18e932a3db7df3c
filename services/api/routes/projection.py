"""The read model's health, for operators: how far the projection is, the event it is stopped at
(if any), the events skipped by decision; and deciding to skip a stopped event.

Only callers with the admin role everywhere (``*/*``) may see or decide this."""

from __future__ import annotations

from aiohttp import web

from envstore.api.context import actor_of, context_of, principal_of
from envstore.api.envelopes import ApiError, ok
from envstore.api.routes.paths import Routes
from envstore.api.routes.specifications import read_json_object
from envstore.common.events import ProjectionEventSkipped

ADMIN_EVERYWHERE = ("namespace::delete", "setting::update")


def _require_admin(request: web.Request) -> None:
    if not principal_of(request).is_allowed("", *ADMIN_EVERYWHERE):  # "": the global ARN
        raise ApiError(403, "Unauthorized: the read model's state is for admins (role admin on */*)")


async def projection_status(request: web.Request) -> web.Response:
    _require_admin(request)
    context = context_of(request)
    stall = await context.projector.recorded_stall()
    last = await context.bus.last_sequence()
    checkpoint = await context.projector.checkpoint()
    return ok(
        {
            "checkpoint": checkpoint,
            "stream_last_sequence": last,
            "lag": max(0, last - checkpoint),
            # Whether this API replica's projector is the one projecting (the others stand by).
            "leading": context.projector.leading,
            "stalled": None
            if stall is None
            else {"sequence": stall.sequence, "subject": stall.subject, "error": stall.error, "since": stall.since},
            "dead_letters": await context.read_model.dead_letters(),
        }
    )


async def skip_event(request: web.Request) -> web.Response:
    """Decide to skip the event the projection is stopped at (it goes to the dead letters)."""
    _require_admin(request)
    body = await read_json_object(request)
    sequence = body.get("sequence")
    reason = body.get("reason")
    if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 1:
        raise ApiError(400, "sequence must be the stream sequence of the stalled event (a whole number)")
    if not isinstance(reason, str) or not reason.strip():
        raise ApiError(400, "reason must say why the event is skipped (it is kept with the decision)")
    context = context_of(request)
    stall = await context.projector.recorded_stall()
    if stall is None or stall.sequence != sequence:
        stalled_at = f"it is stalled at {stall.sequence}" if stall is not None else "it is not stalled"
        raise ApiError(
            409, f"only the event the projection is stalled at can be skipped, and {stalled_at}; nothing was decided"
        )
    await context.bus.publish(
        ProjectionEventSkipped(sequence=sequence, reason=reason.strip()),
        f"projection-skip:{sequence}",
        principal=actor_of(request),
    )
    context.projector.retry_now()
    await context.projector.wait_for(sequence, context.settings.projection_wait_seconds)
    return ok({"sequence": sequence}, message=f"event {sequence} skipped; the projection goes on")


def register(routes: Routes) -> None:
    routes.add("GET", "/api/v1/projection/", projection_status, "The read model's position, stall and dead letters (admins)", responses=(200, 403))
    routes.add(
        "POST", "/api/v1/projection/skip/", skip_event,
        "Skip the event the read model is stalled at (admins; recorded in the log)",
        body={"type": "object", "properties": {"sequence": {"type": "integer"}, "reason": {"type": "string"}}},
        responses=(200, 400, 403, 409),
    )
