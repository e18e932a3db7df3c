"""The API application: one factory, every resource opened and closed in ``resources``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from envstore.api import database
from envstore.api.authentication import authenticate
from envstore.api.context import CONTEXT, SETTINGS, ApiContext
from envstore.api.envelopes import api_errors
from envstore.api.projector import Projector
from envstore.api.read_model import ReadModel
from envstore.api.routes import builds, environments, namespaces, specifications, status, storage
from envstore.api.routes.paths import Routes
from envstore.common.bus import EventBus
from envstore.common.settings import EnvstoreSettings
from envstore.common.storage import open_storage

log = logging.getLogger(__name__)
MAX_REQUEST_BYTES = 16 * 1024 * 1024


async def resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    pool = await database.create_pool(settings.database_url)
    await database.ensure_schema(pool)
    bus = await EventBus.connect(settings.nats_url, settings.nats_stream, name="api")
    await bus.ensure_stream(settings.nats_stream_replicas, settings.nats_duplicate_window_seconds)
    projector = Projector(pool, bus)
    projecting = asyncio.create_task(projector.run(), name="projector")
    app[CONTEXT] = ApiContext(settings, bus, ReadModel(pool), open_storage(settings), projector)
    try:
        yield
    finally:
        projecting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await projecting
        await bus.close()
        await pool.close()


def create_app(settings: EnvstoreSettings) -> web.Application:
    app = web.Application(middlewares=[api_errors, authenticate], client_max_size=MAX_REQUEST_BYTES)
    app[SETTINGS] = settings
    app.cleanup_ctx.append(resources)
    routes = Routes(app, settings.url_prefix)
    for module in (status, specifications, builds, environments, namespaces, storage):
        module.register(routes)
    return app


async def serve(settings: EnvstoreSettings) -> None:
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.api_host, settings.api_port)
    await site.start()
    log.info("API listening on %s", settings.api_url)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
