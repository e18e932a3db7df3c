"""The API application: one factory, every resource opened and closed in ``resources``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from envstore.api import database, security_headers
from envstore.api.answer_cache import AnswerCache
from envstore.api.authentication import authenticate
from envstore.api.context import CONTEXT, SETTINGS, ApiContext
from envstore.api.artifact_links import ArtifactLinks
from envstore.api.envelopes import api_errors
from envstore.api.login_policy import login_password
from envstore.api.login_throttle import LoginThrottle
from envstore.api.nul_characters import refuse_nul_in_url
from envstore.api.log_intake import configured_opener
from envstore.api.projector import Projector
from envstore.api.read_model import ReadModel
from envstore.api.routes import (
    audit,
    auth_pages,
    build_usage,
    archive,
    builds,
    catalog,
    environments,
    events,
    health,
    lifecycle_page,
    lock_diff,
    sbom,
    metrics,
    namespaces,
    openapi,
    projection,
    registry_token,
    settings as settings_routes,
    specifications,
    status,
    storage,
    storage_admin,
    ui,
    webhooks,
)
from envstore.api.routes.paths import Routes, strip_slash_after_query
from envstore.common import http_telemetry
from envstore.common.admin_hooks import SpecificationCheck
from envstore.common.channels import ChannelGuard
from envstore.common.proxy_headers import trusted_proxy_headers
from envstore.common.service_runtime import bus_connection_check, connect_bus
from envstore.common.settings import EnvstoreSettings
from envstore.common.storage import open_storage
from envstore.common.task_cancellation import cancel_and_wait
from envstore.common.telemetry import Telemetry
from envstore.common.tokens import TokenAuthority
from envstore.common.usage import recording_usage

log = logging.getLogger(__name__)


async def resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    # The projector's connections (its leader lock and LISTEN, the batch being written, the batch
    # being read, the planner statistics' upkeep, the admin's projection routes) are its own:
    # requests never wait behind a batch for a connection, nor a batch behind requests.
    pool = await database.create_pool(settings.database_url, max_size=6)
    read_pool = await database.create_pool(settings.database_url, for_reads=True)
    if await database.ensure_schema(pool):
        log.warning("the read model was of another schema version: dropped; replaying the stream into it")
    bus = await connect_bus(settings, "api", app[http_telemetry.TELEMETRY])
    # The API alone creates and configures the streams (the bus grants no one else that).
    await bus.ensure_stream(settings.nats_stream_replicas, settings.nats_duplicate_window_seconds)
    # The storage back end's client (S3's connection pool) lives as long as the app.
    storage_lifetime = contextlib.AsyncExitStack()
    artifact_storage = await storage_lifetime.enter_async_context(open_storage(settings))
    usage = await storage_lifetime.enter_async_context(recording_usage(bus, "api", settings.usage_flush_seconds))
    projector = Projector(pool, bus, artifact_storage, intake=configured_opener(settings, bus, "api"))
    answers = AnswerCache(settings.api_answer_cache_bytes)
    projector.watchers.append(answers.read_model_changed)
    projecting = asyncio.create_task(projector.run(), name="projector")
    readiness = app[http_telemetry.TELEMETRY].readiness
    readiness.add("database", database.database_check(read_pool))
    readiness.add("event bus", bus_connection_check(bus))
    readiness.add("projection", projector.stall_check)
    app[CONTEXT] = ApiContext(
        settings,
        bus,
        ReadModel(read_pool),
        artifact_storage,
        projector,
        TokenAuthority.from_settings(settings),
        login_password(settings),
        LoginThrottle(
            settings.auth_login_failures_per_user,
            settings.auth_login_failures_per_address,
            settings.auth_login_window_seconds,
        ),
        ArtifactLinks.from_settings(settings),
        ChannelGuard.from_settings(settings),
        readiness,
        answers,
        usage,
        SpecificationCheck.from_settings(settings),
    )
    try:
        yield
    finally:
        await cancel_and_wait(projecting)
        await storage_lifetime.aclose()
        await bus.close()
        await read_pool.close()
        await pool.close()


def create_app(settings: EnvstoreSettings, telemetry: Telemetry | None = None) -> web.Application:
    app = web.Application(
        middlewares=[
            strip_slash_after_query,
            refuse_nul_in_url,
            # After every middleware that clones the request (a clone forgets the forwarded scheme
            # and host), before any that reads them.
            trusted_proxy_headers(settings.trusted_proxies),
            api_errors,
            authenticate,
        ],
        client_max_size=settings.max_request_bytes,
    )
    app[SETTINGS] = settings
    security_headers.install(app)
    http_telemetry.install(app, telemetry or Telemetry.disabled("api"))
    app.cleanup_ctx.append(resources)
    routes = Routes(app, settings.url_prefix)
    for module in (
        health,
        status,
        auth_pages,
        specifications,
        builds,
        build_usage,
        archive,
        lock_diff,
        lifecycle_page,
        sbom,
        environments,
        namespaces,
        settings_routes,
        catalog,
        metrics,
        storage,
        storage_admin,
        events,
        webhooks,
        projection,
        audit,
        registry_token,
        openapi,
        ui,
    ):
        module.register(routes)
    return app


async def serve(settings: EnvstoreSettings, telemetry: Telemetry) -> None:
    runner = web.AppRunner(create_app(settings, telemetry), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.api_host, settings.api_port, reuse_port=settings.listen_reuse_port)
    await site.start()
    log.info("API listening on %s", settings.api_url)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
