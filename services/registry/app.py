"""The docker registry service: envstore's images over the Docker Registry HTTP API v2 (pull).

Wiring, top-down: connect to the bus and open storage; replay the stream into the registry's own
read models (the tag index, namespace role mappings, stored settings) and keep following it;
only then listen, so a restarted registry answers from its full index. The service stops when
asked, or fails loudly if following the stream fails.

Settings (``ENVSTORE_<KEY>``): ``registry_host``, ``registry_port``, and
``registry_image_wait_seconds`` (default 600: how long a pull waits for a build still running,
dynamic images included).
"""

from __future__ import annotations

import logging

from aiohttp import web

from envstore.common import http_telemetry
from envstore.common.proxy_headers import trusted_proxy_headers
from envstore.common.readiness import ReadinessCheck
from envstore.common.service_runtime import connected_bus
from envstore.common.settings import EnvstoreSettings
from envstore.common.storage import open_storage
from envstore.common.telemetry import Telemetry
from envstore.registry.auth import Authenticator
from envstore.registry.dynamic_images import DynamicImages
from envstore.registry.image_waits import ImageWaits
from envstore.registry.images import ImageStore
from envstore.registry.role_mappings import RoleMappings
from envstore.registry.routes import REGISTRY, Registry, add_routes
from envstore.registry.settings_overrides import SettingsOverrides
from envstore.registry.stream_follower import StreamFollower
from envstore.registry.tag_index import TagIndex

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


def follower_check(follower: StreamFollower) -> ReadinessCheck:
    """Ready while the registry follows the event stream (its index would go stale otherwise)."""

    async def following() -> str | None:
        if follower.task is None or follower.task.done():
            return "no longer following the event stream (see the log)"
        return None

    return following


async def serve(settings: EnvstoreSettings, telemetry: Telemetry) -> None:
    async with connected_bus(settings, SERVICE, telemetry) as bus, open_storage(settings) as storage:
        index = TagIndex()
        role_mappings = RoleMappings()
        overrides = SettingsOverrides(settings)
        follower = StreamFollower(bus, index, [role_mappings, overrides])
        waits = ImageWaits(index, settings.registry_image_wait_seconds)
        await follower.start()
        telemetry.readiness.add("event stream", follower_check(follower))
        registry = Registry(
            storage=storage,
            index=index,
            images=ImageStore(storage),
            authenticator=Authenticator(settings, role_mappings),
            waits=waits,
            dynamic=DynamicImages(bus, index, overrides),
        )
        runner = web.AppRunner(
            create_app(registry, settings, telemetry),
            access_log=logging.getLogger("envstore.registry.access"),
            access_log_class=http_telemetry.PathOnlyAccessLogger,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, settings.registry_host, settings.registry_port).start()
            log.info("registry listening on %s:%s", settings.registry_host, settings.registry_port)
            assert follower.task is not None
            await follower.task  # runs until the service is stopped; raises if following fails
        finally:
            await runner.cleanup()
            await follower.stop()
