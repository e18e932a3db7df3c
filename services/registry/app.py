"""The docker registry service: envstore's images over the Docker Registry HTTP API v2 (pull).

Wiring, top-down: connect to the bus (dynamic images submit builds), open storage, and open the
read model (PostgreSQL, read-only: the API's projection of the log, the one fold every reader
shares) with a watch on its changes; then listen. It starts in constant time whatever the log's
length: nothing is replayed.

Settings (``ENVSTORE_<KEY>``): ``registry_host``, ``registry_port``, ``reader_database_url``
(default ``database_url``), and ``registry_image_wait_seconds`` (default 600: how long a pull
waits for a build still running, dynamic images included).
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from aiohttp import web

from envstore.common import http_telemetry
from envstore.common.proxy_headers import trusted_proxy_headers
from envstore.common.read_model_rules import open_read_model
from envstore.common.readiness import ReadinessCheck
from envstore.common.service_runtime import connected_bus
from envstore.common.settings import EnvstoreSettings
from envstore.common.storage import open_storage
from envstore.common.telemetry import Telemetry
from envstore.registry.auth import Authenticator
from envstore.registry.catalog import Catalog
from envstore.registry.dynamic_images import DynamicImages
from envstore.registry.image_waits import ImageWaits
from envstore.registry.images import ImageStore
from envstore.registry.sbom_referrers import SbomReferrers
from envstore.registry.rehydration import rehydration_requester
from envstore.common.usage import recording_usage
from envstore.registry.projection_watch import ProjectionWatch
from envstore.registry.routes import REGISTRY, Registry, add_routes

SERVICE = "registry"
DEFAULT_IMAGE_WAIT_SECONDS = 600.0
log = logging.getLogger(__name__)


def create_app(registry: Registry, settings: EnvstoreSettings, telemetry: Telemetry | None = None) -> web.Application:
    telemetry = telemetry or Telemetry.disabled(SERVICE)
    app = web.Application(middlewares=[trusted_proxy_headers(settings.trusted_proxies)])
    app[REGISTRY] = registry
    http_telemetry.install(app, telemetry)
    # Docker clients only know the root, so the registry has no URL prefix; probes look there too.
    telemetry.readiness.add_routes(app.router)
    add_routes(app)
    return app


def read_model_check(pool: asyncpg.Pool) -> ReadinessCheck:
    """Ready while the read model answers (every pull reads it)."""

    async def answers() -> str | None:
        await pool.fetchval("SELECT 1")
        return None

    return answers


async def serve(settings: EnvstoreSettings, telemetry: Telemetry) -> None:
    dsn = settings.read_only_database_url
    async with (
        connected_bus(settings, SERVICE, telemetry) as bus,
        open_storage(settings) as storage,
        recording_usage(bus, SERVICE, settings.usage_flush_seconds) as usage,
    ):
        pool = await open_read_model(dsn)
        telemetry.readiness.add("read model", read_model_check(pool))
        watch = ProjectionWatch(dsn)
        await watch.start()
        catalog = Catalog(pool)
        registry = Registry(
            storage=storage,
            catalog=catalog,
            images=ImageStore(storage),
            referrers=SbomReferrers(storage),
            usage=usage,
            authenticator=Authenticator(settings, pool),
            waits=ImageWaits(catalog, watch, settings.registry_image_wait_seconds, rehydration_requester(bus)),
            dynamic=DynamicImages(bus, catalog, watch, settings),
        )
        runner = web.AppRunner(
            create_app(registry, settings, telemetry),
            access_log=logging.getLogger("envstore.registry.access"),
            access_log_class=http_telemetry.PathOnlyAccessLogger,
        )
        await runner.setup()
        try:
            await web.TCPSite(
                runner, settings.registry_host, settings.registry_port, reuse_port=settings.listen_reuse_port
            ).start()
            log.info("registry listening on %s:%s", settings.registry_host, settings.registry_port)
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
            await watch.stop()
            await pool.close()
