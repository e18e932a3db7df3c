"""``/api/v1/`` and ``/api/v1/permission/``."""

from __future__ import annotations

from aiohttp import web

from envstore.api.envelopes import ok
from envstore.common.permissions import Principal
from envstore.api.routes.paths import Routes

VERSION = "2025.2.3-dev"


async def api_status(request: web.Request) -> web.Response:
    return ok({"version": VERSION})


async def permission(request: web.Request) -> web.Response:
    principal: Principal = request["principal"]
    bindings = principal.effective_bindings()
    return ok(
        {
            "authenticated": principal.authenticated,
            "primary_namespace": principal.primary_namespace,
            "entity_permissions": {arn: sorted(principal.permissions_on(arn)) for arn in bindings},
            "entity_roles": bindings,
            "expiration": None,
        }
    )


def register(routes: Routes) -> None:
    routes.add("GET", "/api/v1/", api_status)
    routes.add("GET", "/api/v1/permission/", permission)
