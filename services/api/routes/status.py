"""Service status and the caller's identity: ``/api/v1/``, ``permission/``, ``usage/``."""

from __future__ import annotations

from aiohttp import web

from envstore.api.context import context_of, principal_of
from envstore.api.envelopes import ok
from envstore.api.pagination import MAX_PAGE_SIZE
from envstore.api.read_model import Page
from envstore.api.routes.paths import Routes
from envstore.common.permissions import permissions_of

VERSION = "2025.2.3-dev"
# The rights behind conda-store-ui's "New" (environment in a namespace) and "Edit" buttons.
UI_BUTTON_PERMISSIONS = frozenset({"namespace::create", "environment::update"})


async def api_status(request: web.Request) -> web.Response:
    return ok({"version": VERSION})


async def permission(request: web.Request) -> web.Response:
    principal = principal_of(request)
    bindings = principal.effective_bindings()
    entity_permissions = {arn: sorted(permissions_of(roles)) for arn, roles in bindings.items()}
    if not UI_BUTTON_PERMISSIONS <= set(entity_permissions.get("*/*", ())):
        # conda-store answers one key per binding; its web UI looks up only "<namespace>/*" and
        # takes any "*/*" key as every right everywhere. So, unless "*/*" really grants the
        # buttons' rights, drop it and add each listed namespace's "<namespace>/*" as held there.
        entity_permissions.pop("*/*", None)
        namespaces, _ = await context_of(request).read_model.namespaces(principal, Page(1, MAX_PAGE_SIZE))
        for namespace in namespaces:
            arn = f"{namespace['name']}/*"
            entity_permissions[arn] = sorted(principal.permissions_throughout(arn))
    return ok(
        {
            "authenticated": principal.authenticated,
            "primary_namespace": principal.primary_namespace,
            "entity_permissions": entity_permissions,
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
