"""``{url_prefix}/storage/<key>``: artifacts by their conda-store storage name — streamed from
local storage, or redirected to a presigned URL for S3.

conda-store serves these to anyone; here a request needs either a valid signed link (which the
artifact routes hand out after checking the caller, see ``artifact_links``) or a token that may
read the artifact's environment. Anything else is refused alike, whether the key exists or not."""

from __future__ import annotations

import datetime

from aiohttp import web

from envstore.api.artifact_links import LinkCheck
from envstore.api.context import context_of, principal_of
from envstore.api.envelopes import ApiError
from envstore.api.routes.paths import Routes
from envstore.common.events import BlobRef

NOT_READABLE = (
    "this artifact link is not signed and your token may not read its environment: "
    "download it through the API (GET /api/v1/build/<id>/<artifact>/), which hands out a signed link"
)


def storage_prefix(request: web.Request) -> str:
    prefix = context_of(request).settings.url_prefix.strip("/")
    return ("/" + prefix if prefix else "") + "/storage"


def signed_storage_url(request: web.Request, key: str) -> str:
    return context_of(request).artifact_links.link(storage_prefix(request), key)


async def get_stored(request: web.Request) -> web.StreamResponse:
    context = context_of(request)
    key = request.match_info["key"]
    check = context.artifact_links.check(key, request.query.get("expires"), request.query.get("signature"))
    if check is LinkCheck.INVALID:
        raise ApiError(403, "this artifact link's signature is not valid; ask the API for a fresh link")
    if check is LinkCheck.EXPIRED:
        expired = datetime.datetime.fromtimestamp(int(request.query["expires"]), datetime.UTC)
        raise ApiError(403, f"this artifact link expired at {expired.isoformat()}; ask the API for a fresh link")
    artifact = await context.read_model.artifact_by_key(key)
    if check is LinkCheck.UNSIGNED:
        principal = principal_of(request)
        build = await context.read_model.build_row(artifact["build_id"]) if artifact is not None else None
        if build is not None:
            readable = principal.is_allowed(f"{build['namespace_name']}/{build['environment_name']}", "environment::read")
        else:
            # Only a caller who may read everything learns that a key does not exist.
            readable = "environment::read" in principal.permissions_throughout("*/*")
        if not readable:
            raise ApiError(403, NOT_READABLE)
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
    return web.FileResponse(path, headers={"Content-Type": artifact["content_type"], "Cache-Control": "private, no-store"})


def register(routes: Routes) -> None:
    routes.app.router.add_get(routes.prefix + "/storage/{key:.+}", get_stored)
