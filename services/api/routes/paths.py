"""Route registration that answers both slash forms directly (conda-store's CLI always adds a
slash; other clients do not), under the configured URL prefix."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Routes:
    def __init__(self, app: web.Application, url_prefix: str) -> None:
        self.app = app
        self.prefix = "/" + url_prefix.strip("/") if url_prefix.strip("/") else ""

    def add(self, method: str, path: str, handler: Handler) -> None:
        bare = self.prefix + path.rstrip("/")
        self.app.router.add_route(method, bare, handler)
        self.app.router.add_route(method, bare + "/", handler)
