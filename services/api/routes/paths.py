"""Route registration: both slash forms answered directly (conda-store's CLI always adds a slash;
other clients do not), under the configured URL prefix, and described for the OpenAPI document."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class RouteDescription:
    method: str
    path: str  # without prefix, with the declared trailing slash
    summary: str
    query: tuple[str, ...] = ()
    body: dict[str, Any] | None = None  # JSON schema of the request body
    responses: tuple[int, ...] = (200,)


@dataclass
class Routes:
    app: web.Application
    url_prefix: str
    described: list[RouteDescription] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        stripped = self.url_prefix.strip("/")
        return "/" + stripped if stripped else ""

    def add(
        self,
        method: str,
        path: str,
        handler: Handler,
        summary: str,
        *,
        query: tuple[str, ...] = (),
        body: dict[str, Any] | None = None,
        responses: tuple[int, ...] = (200,),
        prefixed: bool = True,
    ) -> None:
        bare = (self.prefix if prefixed else "") + path.rstrip("/")
        self.app.router.add_route(method, bare or "/", handler)
        if bare:
            self.app.router.add_route(method, bare + "/", handler)
        self.described.append(RouteDescription(method, path, summary, query, body, responses))


@web.middleware
async def strip_slash_after_query(request: web.Request, handler: Handler) -> web.StreamResponse:
    """conda-store's CLI appends "/" to every URL, after the query string when there is one
    (``/api/v1/build?status=COMPLETED/``, ``?page=2/``): drop it so the last value reads as sent."""
    query = request.rel_url.raw_query_string
    if query.endswith("/"):
        request = request.clone(rel_url=f"{request.rel_url.raw_path}?{query[:-1]}")
    return await handler(request)


def path_parameters(path: str) -> list[str]:
    return [name.split(":")[0] for name in re.findall(r"{([^}]+)}", path)]
