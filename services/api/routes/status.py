"""Service status and the caller's identity: ``/api/v1/``, ``permission/``, ``usage/``."""

from __future__ import annotations

from aiohttp import web

from envstore.api.context import context_of, principal_of
from envstore.api.envelopes import ok
from envstore.api.routes.paths import Routes
from envstore.common.permissions import permissions_of

VERSION = "2025.2.3-dev"


async def api_status(request: web.Request) -> web.Response:
    return ok({"version": VERSION})


async def permission(request: web.Request) -> web.Response:
    principal = principal_of(request)
    bindings = principal.effective_bindings()
    return ok(
        {
            "authenticated": principal.authenticated,
            "primary_namespace": principal.primary_namespace,
            "entity_permissions": {arn: sorted(permissions_of(roles)) for arn, roles in bindings.items()},
            "entity_roles": bindings,
            "expiration": principal.expiration.isoformat() if principal.expiration else None,
        }
    )


async def usage(request: web.Request) -> web.Response:
    return ok(await context_of(request).read_model.usage(principal_of(request)))


def register(routes: Routes) -> None:
    routes.add("GET", "/api/v1/", api_status, "Server version")
    routes.add("GET", "/api/v1/permission/", permission, "The caller's namespace, roles and permissions")
    routes.add("GET", "/api/v1/usage/", usage, "Environments, builds and storage per visible namespace")
