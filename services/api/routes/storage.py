"""``{url_prefix}/storage/<key>``: artifacts in local storage, streamed (conda-store serves these
unauthenticated too; keys carry the build's hash and time)."""

from __future__ import annotations

from aiohttp import web

from envstore.api.context import context_of
from envstore.api.envelopes import ApiError
from envstore.api.routes.paths import Routes


def storage_url(request: web.Request, key: str) -> str:
    prefix = context_of(request).settings.url_prefix.strip("/")
    return ("/" + prefix if prefix else "") + f"/storage/{key}"


async def get_stored(request: web.Request) -> web.StreamResponse:
    context = context_of(request)
    key = request.match_info["key"]
    artifact = await context.read_model.artifact_by_key(key)
    if artifact is None:
        raise ApiError(404, f"no artifact named {key!r}")
    path = context.storage.local_path(artifact["digest"])
    if path is None:
        raise ApiError(404, f"artifact {key!r} is no longer stored")
    response = web.FileResponse(path, headers={"Content-Type": artifact["content_type"]})
    return response


def register(routes: Routes) -> None:
    routes.app.router.add_get(routes.prefix + "/storage/{key:.+}", get_stored)
