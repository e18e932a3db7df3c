"""Running a service process: set up its telemetry, connect to the bus, open storage, run until
SIGINT/SIGTERM, close everything in one place."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from envstore.common.collector_tuning import tune_collector_for_a_long_run
from envstore.common.build_policy import BuildPipelinePolicy, PhaseLimits
from envstore.common.bus_connection import tls_context_of
from envstore.common.events import Event
from envstore.common.transport import EventBus
from envstore.common.worker_runtime import ConsumerSettings, Handler, Worker
from envstore.common.logs import configure_logging
from envstore.common.readiness import ReadinessCheck
from envstore.common.settings import EnvstoreSettings
from envstore.common.task_dump import log_every_task
from envstore.common.telemetry import Telemetry, TelemetrySettings


def nats_tls_context(settings: EnvstoreSettings) -> ssl.SSLContext | None:
    """TLS to NATS when a CA is set: the servers' certificates must be signed by it."""
    return tls_context_of(settings.nats_tls_ca)


async def connect_bus(settings: EnvstoreSettings, identity: str, telemetry: Telemetry | None = None) -> EventBus:
    """The bus, as ``identity`` (a service's name, ``bus_permissions.IDENTITIES``) with the
    credentials and TLS the settings give."""
    seed = settings.nats_credentials.get_secret_value() if settings.nats_credentials else None
    return await EventBus.connect(
        settings.nats_url,
        settings.nats_stream,
        name=identity,
        telemetry=telemetry,
        seed=seed,
        tls=nats_tls_context(settings),
    )


@contextlib.asynccontextmanager
async def connected_bus(
    settings: EnvstoreSettings, name: str, telemetry: Telemetry | None = None
) -> AsyncIterator[EventBus]:
    """A service's bus, once the stream exists (only the API creates it)."""
    bus = await connect_bus(settings, name, telemetry)
    try:
        await bus.wait_for_stream()
        if telemetry is not None:
            telemetry.readiness.add("event bus", bus_connection_check(bus))
        yield bus
    finally:
        await bus.close()


def bus_connection_check(bus: EventBus) -> ReadinessCheck:
    async def connected() -> str | None:
        return None if bus.client.is_connected else f"not connected to NATS ({bus.client.connected_url or 'no server'})"

    return connected


async def run_until_stopped(main: Awaitable[None]) -> None:
    """Run ``main`` until it ends or the process gets SIGINT/SIGTERM, then cancel it cleanly;
    SIGUSR1 logs where every task waits (for a process that seems stuck)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, log_every_task)
    main_task = asyncio.ensure_future(main)
    stop_task = asyncio.create_task(stop.wait())
    await asyncio.wait({main_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    stop_task.cancel()
    if not main_task.done():
        main_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await main_task


Serve = Callable[[EnvstoreSettings, Telemetry], Awaitable[None]]


async def serve_with_metrics(
    serve: Serve, settings: EnvstoreSettings, telemetry: Telemetry, telemetry_settings: TelemetrySettings
) -> None:
    """``serve``, with the process's ``/metrics``, ``/healthz`` and ``/readyz`` on a listener of its own
    when a port is set."""
    async with telemetry.metrics.listening(
        telemetry_settings.metrics_host, telemetry_settings.metrics_port, telemetry.readiness
    ):
        await serve(settings, telemetry)


def run_service(service: str, serve: Serve) -> None:
    configure_logging(service)
    settings = EnvstoreSettings()
    telemetry_settings = TelemetrySettings()
    telemetry = Telemetry.from_settings(service, telemetry_settings)
    tune_collector_for_a_long_run()
    try:
        asyncio.run(run_until_stopped(serve_with_metrics(serve, settings, telemetry, telemetry_settings)))
    finally:
        telemetry.shutdown()  # export the spans still queued
    # py-rattler 0.28 can crash during interpreter teardown (TOOLING.md); all work is done and
    # flushed here, so leave without the teardown to report the real exit status.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


async def run_pipeline_worker(
    bus: EventBus,
    settings: EnvstoreSettings,
    durable: str,
    event_types: Sequence[type[Event]],
    handler: Handler,
    one_at_a_time: bool = False,
) -> None:
    """A build pipeline worker: the shared worker runtime on a durable consumer of
    ``event_types``, with the build policy (attempts, time limits, cancellation) around
    ``handler``. Replicas calling this with the same ``durable`` share the work; with
    ``one_at_a_time`` the consumer hands out one message at a time to all of them together."""
    policy = BuildPipelinePolicy(
        bus, PhaseLimits(settings.worker_max_attempts, settings.worker_phase_timeout_seconds)
    )
    consumer = ConsumerSettings(
        durable=durable,
        subjects=[event_type.subject_pattern() for event_type in event_types],
        concurrency=1 if one_at_a_time else settings.worker_concurrency,
        ack_wait_seconds=settings.worker_ack_wait_seconds,
        max_ack_pending=1 if one_at_a_time else None,
    )
    await policy.start_watching_cancellations()
    try:
        await Worker(bus, consumer, policy.wrap(handler)).run()
    finally:
        await policy.stop_watching()
