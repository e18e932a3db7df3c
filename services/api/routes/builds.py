"""Builds and their artifacts: ``GET /api/v1/build/{id}/`` and the artifact routes, which answer
with a 307 redirect to the artifact in storage (as conda-store does)."""

from __future__ import annotations

from aiohttp import web

from envstore.api.context import context_of
from envstore.api.envelopes import ApiError, ok
from envstore.common.permissions import Principal
from envstore.api.routes.paths import Routes
from envstore.api.routes.storage import storage_url
from envstore.common.artifact_kinds import ArtifactKind


def build_id_from(request: web.Request) -> int:
    text = request.match_info["build_id"]
    if not text.isdigit():
        raise ApiError(400, f"build id must be a number, got {text!r}")
    return int(text)


async def readable_build_row(request: web.Request):  # type: ignore[no-untyped-def]
    """The build row, after conda-store's order: 404 first, then permission."""
    build_id = build_id_from(request)
    row = await context_of(request).read_model.build_row(build_id)
    if row is None:
        raise ApiError(404, "build id does not exist")
    principal: Principal = request["principal"]
    if not principal.is_allowed(f"{row['namespace_name']}/{row['environment_name']}", "environment::read"):
        raise ApiError(403, "Unauthorized to access environment")
    return row


async def get_build(request: web.Request) -> web.Response:
    row = await readable_build_row(request)
    return ok(await context_of(request).read_model.build(row["id"]))


async def redirect_to_artifact(request: web.Request, build_id: int, kind: ArtifactKind) -> web.StreamResponse:
    artifact = await context_of(request).read_model.artifact(build_id, kind)
    if artifact is None:
        raise ApiError(404, f"build {build_id} has no {kind} artifact yet")
    raise web.HTTPTemporaryRedirect(storage_url(request, artifact["key"]))


async def build_lockfile(request: web.Request) -> web.StreamResponse:
    row = await readable_build_row(request)
    return await redirect_to_artifact(request, row["id"], ArtifactKind.LOCKFILE)


async def build_yaml(request: web.Request) -> web.StreamResponse:
    row = await readable_build_row(request)
    return await redirect_to_artifact(request, row["id"], ArtifactKind.YAML)


async def build_logs(request: web.Request) -> web.StreamResponse:
    row = await readable_build_row(request)
    context = context_of(request)
    if await context.read_model.artifact(row["id"], ArtifactKind.LOGS) is not None:
        return await redirect_to_artifact(request, row["id"], ArtifactKind.LOGS)
    # Still running: the log so far, from the progress the workers reported.
    lines = [
        f"{line['occurred_on'].isoformat(sep=' ', timespec='milliseconds')} [{line['service']}] "
        f"{line['phase']}: {line['state']} {line['message']}".rstrip()
        for line in await context.read_model.progress_lines(row["id"])
    ]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


def register(routes: Routes) -> None:
    routes.add("GET", "/api/v1/build/{build_id}/", get_build)
    routes.add("GET", "/api/v1/build/{build_id}/lockfile/", build_lockfile)
    routes.add("GET", "/api/v1/build/{build_id}/conda-lock.yml", build_lockfile)
    routes.add("GET", "/api/v1/build/{build_id}/conda-lock.yaml", build_lockfile)
    routes.add("GET", "/api/v1/build/{build_id}/yaml/", build_yaml)
    routes.add("GET", "/api/v1/build/{build_id}/logs/", build_logs)
