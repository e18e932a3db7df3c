"""Environments: ``GET /api/v1/environment/{ns}/{name}/`` and its current build's lockfile."""

from __future__ import annotations

from aiohttp import web

from envstore.api.context import context_of
from envstore.api.envelopes import ApiError, ok
from envstore.common.permissions import Principal
from envstore.api.routes.builds import redirect_to_artifact
from envstore.api.routes.paths import Routes
from envstore.common.artifact_kinds import ArtifactKind


async def readable_environment(request: web.Request) -> dict:
    namespace = request.match_info["namespace"]
    name = request.match_info["name"]
    principal: Principal = request["principal"]
    if not principal.is_allowed(f"{namespace}/{name}", "environment::read"):
        raise ApiError(403, "Unauthorized to access environment")
    environment = await context_of(request).read_model.environment(namespace, name)
    if environment is None:
        raise ApiError(404, "environment does not exist")
    return environment


async def get_environment(request: web.Request) -> web.Response:
    return ok(await readable_environment(request))


async def environment_lockfile(request: web.Request) -> web.StreamResponse:
    environment = await readable_environment(request)
    if environment["current_build_id"] is None:
        raise ApiError(404, "environment has no build")
    return await redirect_to_artifact(request, environment["current_build_id"], ArtifactKind.LOCKFILE)


def register(routes: Routes) -> None:
    routes.add("GET", "/api/v1/environment/{namespace}/{name}/", get_environment)
    routes.add("GET", "/api/v1/environment/{namespace}/{name}/lockfile/", environment_lockfile)
    routes.add("GET", "/api/v1/environment/{namespace}/{name}/conda-lock.yml", environment_lockfile)
    routes.add("GET", "/api/v1/environment/{namespace}/{name}/conda-lock.yaml", environment_lockfile)
