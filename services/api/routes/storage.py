"""``{url_prefix}/storage/<key>``: artifacts by their conda-store storage name — streamed from
local storage, or redirected to a presigned URL for S3 (conda-store serves these unauthenticated
too; keys carry the build's hash and time)."""

from __future__ import annotations

from aiohttp import web

from envstore.api.context import context_of
from envstore.api.envelopes import ApiError
from envstore.api.routes.paths import Routes
from envstore.common.events import BlobRef


def storage_url(request: web.Request, key: str) -> str:
    prefix = context_of(request).settings.url_prefix.strip("/")
    return ("/" + prefix if prefix else "") + f"/storage/{key}"


async def get_stored(request: web.Request) -> web.StreamResponse:
    context = context_of(request)
    key = request.match_info["key"]
    artifact = await context.read_model.artifact_by_key(key)
    if artifact is None:
        raise ApiError(404, f"no artifact named {key!r}")
    blob = BlobRef(digest=artifact["digest"], size=artifact["size"])
    direct_url = await context.storage.download_url(
        key, blob, filename=key.rsplit("/", 1)[-1], content_type=artifact["content_type"]
    )
    if direct_url is not None:
        raise web.HTTPTemporaryRedirect(direct_url)
    path = context.storage.local_path(blob)
    if path is None:
        raise ApiError(404, f"artifact {key!r} is no longer stored")
    return web.FileResponse(path, headers={"Content-Type": artifact["content_type"]})


def register(routes: Routes) -> None:
    routes.app.router.add_get(routes.prefix + "/storage/{key:.+}", get_stored)
