"""Read routes' answers through the cache of answers (``answer_cache.py``): a listing is kept by
its URL and by what the caller may see; one build or environment by its name, its permission
checked on every request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from envstore.api.answer_cache import CachedAnswer
from envstore.api.context import context_of, principal_of
from envstore.api.envelopes import JSON, json_bytes


def answer_of(body: bytes, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=body, content_type=JSON, charset="utf-8", headers=headers)


def what_caller_sees(request: web.Request) -> tuple[str, ...]:
    """Listings are filtered by the caller's role bindings' ARN patterns, whatever the roles: two
    callers with the same patterns see the same rows."""
    return tuple(sorted(principal_of(request).effective_bindings()))


async def cached_listing(
    request: web.Request,
    compute: Callable[[], Awaitable[Any]],
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """A listing's answer: kept by route, URL (filters, page, cursor, ``jwt``) and what the caller
    sees, until the read model changes."""
    answers = context_of(request).answers
    key = (request.match_info.route.resource.canonical, request.path_qs, what_caller_sees(request))
    cached = answers.answer(key)
    if cached is None:
        generation = answers.generation
        cached = CachedAnswer(json_bytes(await compute()))
        answers.keep(key, cached, generation)
    return answer_of(cached.body, headers)
