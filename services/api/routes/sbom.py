"""``GET /api/v1/build/{id}/sbom/``: the build's software bill of materials (CycloneDX 1.6 JSON),
made from its lock; the registry attaches the same document to the build's image as an OCI
referrer (``GET /v2/<name>/referrers/<digest>``)."""

from __future__ import annotations

import asyncio
import functools

from aiohttp import web

from envstore.api.build_locks import lock_of
from envstore.api.context import context_of
from envstore.api.envelopes import ApiError
from envstore.api.routes.builds import build_row_for
from envstore.api.routes.paths import Routes
from envstore.common.sbom import SBOM_MEDIA_TYPE, build_sbom


async def build_sbom_document(request: web.Request) -> web.Response:
    row = await build_row_for(request, "environment::read")
    lock = await lock_of(context_of(request).storage, row)
    make = functools.partial(
        build_sbom,
        lock,
        build_id=row["id"],
        namespace=row["namespace_name"],
        environment=row["environment_name"],
        build_key=row["build_key"],
        platform=request.query.get("platform"),
    )
    try:
        document = await asyncio.to_thread(make)
    except KeyError as error:
        raise ApiError(400, str(error.args[0])) from None
    return web.Response(
        body=document,
        headers={
            "Content-Type": SBOM_MEDIA_TYPE,
            "Content-Disposition": f'inline; filename="sbom-{row["build_key"]}.cdx.json"',
        },
    )


def register(routes: Routes) -> None:
    routes.add(
        "GET",
        "/api/v1/build/{build_id}/sbom/",
        build_sbom_document,
        "The build's SBOM: CycloneDX 1.6 JSON made from its lock (conda and pip packages with licences, "
        "hashes and purls) for one locked platform (?platform=, default the image's)",
        query=("platform",),
        responses=(200, 400, 403, 404, 409),
    )
