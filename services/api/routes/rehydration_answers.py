"""How a route answers for an archived build's artifact: it asks for the rehydration and either
waits for it (``?wait=`` seconds, bounded) or answers 202 with ``Retry-After`` and the status to follow."""

from __future__ import annotations

import asyncio

import asyncpg
from aiohttp import web

from envstore.api.archives import archive_document, archive_state, is_archived, request_rehydration
from envstore.api.context import actor_of, context_of
from envstore.api.envelopes import ApiError, ok
from envstore.api.pagination import whole_number

RETRY_AFTER_SECONDS = 5


def status_path(request: web.Request, build_id: int) -> str:
    return str(request.url.with_path(request.path.split("/api/v1/")[0] + f"/api/v1/build/{build_id}/rehydration/").with_query(None))


def rehydrating_response(request: web.Request, row: asyncpg.Record) -> web.Response:
    """202: the artifact is being made again; follow ``Location`` (the rehydration's status) and
    ask again after ``Retry-After`` seconds."""
    location = status_path(request, row["id"])
    response = ok({**archive_document(row), "status_url": location}, message=f"build {row['id']} is archived and being rehydrated from its lock; retry after {RETRY_AFTER_SECONDS} s")
    response.set_status(202)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    response.headers["Location"] = location
    return response


async def rehydrated_row(
    request: web.Request, row: asyncpg.Record, kind: str | None = None, retry_failed: bool = False
) -> asyncpg.Record | web.Response:
    """For an archived build: ask for its rehydration, then wait for it up to ``?wait=`` seconds
    (bounded by ``rehydration_wait_seconds``). The fresh row once rehydrated, else the 202 answer."""
    context = context_of(request)
    wait_seconds = min(float(whole_number(request, "wait", 0, minimum=0)), context.settings.rehydration_wait_seconds)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    while True:
        await request_rehydration(context, row, actor_of(request), retry_failed)
        retry_failed = False  # once per request
        row = await context.read_model.build_row(row["id"])
        if not is_archived(row, kind):
            return row
        if archive_state(row) == "FAILED":
            raise ApiError(
                409,
                f"build {row['id']} could not be rehydrated: {row['rehydration_info']}; "
                f"ask again with POST /api/v1/build/{row['id']}/rehydrate/",
            )
        remaining = deadline - loop.time()
        if remaining <= 0:
            return rehydrating_response(request, row)
        await context.projector.wait_for(context.projector.applied_sequence + 1, min(remaining, 5.0))


