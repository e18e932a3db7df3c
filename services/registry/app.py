"""The docker registry endpoint (Docker Registry HTTP API v2, pull side). For now it answers the
version check only; manifests and blobs come with the image artifact."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from envstore.common.settings import EnvstoreSettings

log = logging.getLogger(__name__)
API_VERSION_HEADER = {"Docker-Distribution-Api-Version": "registry/2.0"}


async def version_check(request: web.Request) -> web.Response:
    return web.json_response({}, headers=API_VERSION_HEADER)


async def unsupported(request: web.Request) -> web.Response:
    return web.json_response(
        {"errors": [{"code": "UNSUPPORTED", "message": "The operation is unsupported", "detail": None}]},
        status=405,
        headers=API_VERSION_HEADER,
    )


def create_app(settings: EnvstoreSettings) -> web.Application:
    app = web.Application()
    app.router.add_get("/v2/", version_check)
    app.router.add_get("/v2", version_check)
    app.router.add_route("*", "/v2/{rest:.*}", unsupported)
    return app


async def serve(settings: EnvstoreSettings) -> None:
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.registry_host, settings.registry_port).start()
    log.info("registry listening on %s:%s", settings.registry_host, settings.registry_port)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
