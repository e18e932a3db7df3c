"""How builds are used: ``GET /api/v1/build/{id}/usage/`` and
``GET /api/v1/environment/{namespace}/{name}/usage/`` — image pulls, artifact downloads and
activations, with ``last_used_at`` (from ``build.used`` events, published in batches: counts
appear up to ``usage_flush_seconds`` after the use)."""

from __future__ import annotations

from aiohttp import web

from envstore.api.context import context_of
from envstore.api.envelopes import ok
from envstore.api.routes.builds import build_row_for
from envstore.api.routes.environments import readable_environment
from envstore.api.routes.paths import Routes
from envstore.api.usage_reads import build_usage, environment_usage


async def usage_of_build(request: web.Request) -> web.Response:
    row = await build_row_for(request, "environment::read")
    return ok(await build_usage(context_of(request).read_model.pool, row["id"]))


async def usage_of_environment(request: web.Request) -> web.Response:
    environment = await readable_environment(request)
    usage = await environment_usage(context_of(request).read_model.pool, environment["id"])
    return ok({"namespace": environment["namespace"]["name"], "name": environment["name"], **usage})


def register(routes: Routes) -> None:
    routes.add(
        "GET", "/api/v1/build/{build_id}/usage/", usage_of_build,
        "How a build was used: image pulls, artifact downloads, activations, first and last use",
        responses=(200, 403, 404),
    )
    routes.add(
        "GET", "/api/v1/environment/{namespace}/{name}/usage/", usage_of_environment,
        "How an environment's builds were used: totals, last_used_at, and each build's counts",
        responses=(200, 403, 404),
    )
