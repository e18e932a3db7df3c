"""``GET /api/v1/build/{a}/diff/{b}/``: what changed between two builds' locks, as JSON (conda-store's
envelope) or, with ``?format=text`` or ``Accept: text/plain``, as the text a reviewer reads."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from envstore.api.context import context_of, require
from envstore.api.build_locks import lock_of
from envstore.api.envelopes import ApiError, ok
from envstore.api.lock_diff import diff_locks
from envstore.api.pagination import is_whole_number
from envstore.api.routes.builds import BUILD_MISSING
from envstore.api.routes.paths import Routes

FORMATS = ("json", "text")


async def readable_build(request: web.Request, parameter: str) -> asyncpg.Record:
    text = request.match_info[parameter]
    row = await context_of(request).read_model.build_row(int(text)) if is_whole_number(text, most_digits=18) else None
    if row is None:
        raise ApiError(404, f"{BUILD_MISSING}: {text}")
    require(request, f"{row['namespace_name']}/{row['environment_name']}", "environment::read",
            message="Unauthorized to access environment")
    return row


def _wants_text(request: web.Request) -> bool:
    chosen = request.query.get("format")
    if chosen is not None:
        if chosen not in FORMATS:
            raise ApiError(400, f"format must be one of {list(FORMATS)}, not {chosen!r}")
        return chosen == "text"
    accept = request.headers.get("Accept", "")
    return "text/plain" in accept and "application/json" not in accept


async def build_diff(request: web.Request) -> web.Response:
    before_row = await readable_build(request, "build_id")
    after_row = await readable_build(request, "other_build_id")
    storage = context_of(request).storage
    diff = diff_locks(before_row["id"], await lock_of(storage, before_row), after_row["id"], await lock_of(storage, after_row))
    if _wants_text(request):
        return web.Response(text=diff.text(), content_type="text/plain")
    return ok(diff.document())


def register(routes: Routes) -> None:
    routes.add(
        "GET",
        "/api/v1/build/{build_id}/diff/{other_build_id}/",
        build_diff,
        "What changed from one build's lock to another's: conda packages per platform and pip requirements "
        "added, removed or changed (version or build); JSON, or text with ?format=text",
        query=("format",),
        responses=(200, 400, 403, 404, 409),
    )
