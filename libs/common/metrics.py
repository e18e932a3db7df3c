"""One process's Prometheus series, and the tiny HTTP listener that serves them at ``/metrics``.

Each process owns its own ``CollectorRegistry`` (never prometheus-client's global one), created
with its ``Telemetry`` in ``run_service``. Values that must be read from elsewhere at scrape time
(a consumer's pending messages, from JetStream) are refreshed by scrape hooks just before rendering.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from envstore.common.readiness import Readiness

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # understood by every Prometheus version
SCRAPE_HOOK_TIMEOUT_SECONDS = 5.0
# Phases range from a cached solve (milliseconds) to a large install or image (many minutes).
PHASE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
REGISTRY_CONTENT_KINDS = ("manifest", "blob")

ScrapeHook = Callable[[], Awaitable[None]]


class Metrics:
    """The series envstore exports; services record through the methods, not the series."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        self._scrape_hooks: list[ScrapeHook] = []
        self.phase_duration = Histogram(
            "envstore_phase_duration_seconds",
            "Duration of a worker's build phase (solve, install, each artifact), by outcome.",
            ["service", "phase", "outcome"],
            buckets=PHASE_BUCKETS,
            registry=self.registry,
        )
        self.events_handled = Counter(
            "envstore_events_handled",
            "Events a worker's durable consumer handled, by event type and outcome.",
            ["durable", "event_type", "outcome"],
            registry=self.registry,
        )
        self.consumer_pending = Gauge(
            "envstore_consumer_pending_messages",
            "Messages on a durable consumer's subjects not yet delivered (its lag).",
            ["durable"],
            registry=self.registry,
        )
        self.consumer_ack_pending = Gauge(
            "envstore_consumer_ack_pending_messages",
            "Messages delivered to a durable consumer and not yet acknowledged (work in flight).",
            ["durable"],
            registry=self.registry,
        )
        self.http_requests = Counter(
            "envstore_http_requests",
            "HTTP requests answered, by route template and status code.",
            ["service", "method", "route", "status"],
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "envstore_http_request_duration_seconds",
            "Time to answer an HTTP request (to the end of the handler; streams count whole).",
            ["service", "method", "route"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )
        self.registry_served_bytes = Counter(
            "envstore_registry_served_bytes",
            "Bytes the docker registry endpoint served, by content kind (manifest, blob).",
            ["kind"],
            registry=self.registry,
        )
        self.service_restarts = Counter(
            "envstore_service_restarts",
            "Times the launcher restarted a child that exited on its own (a service replica, a NATS "
            "node, PostgreSQL, S3), by role and replica.",
            ["service", "replica"],
            registry=self.registry,
        )
        if service == "registry":
            # Exported from the start (as zero), so dashboards and alerts see the series exist.
            for kind in REGISTRY_CONTENT_KINDS:
                self.registry_served_bytes.labels(kind=kind)

    # --- recording ------------------------------------------------------------------------------

    def observe_phase(self, service: str, phase: str, outcome: str, seconds: float) -> None:
        self.phase_duration.labels(service=service, phase=phase, outcome=outcome).observe(seconds)

    def count_event_handled(self, durable: str, event_type: str, outcome: str) -> None:
        self.events_handled.labels(durable=durable, event_type=event_type, outcome=outcome).inc()

    def set_consumer_lag(self, durable: str, pending: int, ack_pending: int) -> None:
        self.consumer_pending.labels(durable=durable).set(pending)
        self.consumer_ack_pending.labels(durable=durable).set(ack_pending)

    def forget_consumers(self) -> None:
        """Drop every consumer's lag (before re-reading the full list, so deleted ones vanish)."""
        self.consumer_pending.clear()
        self.consumer_ack_pending.clear()

    def count_service_restart(self, service: str, replica: int) -> None:
        self.service_restarts.labels(service=service, replica=str(replica)).inc()

    def observe_http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http_requests.labels(service=self.service, method=method, route=route, status=str(status)).inc()
        self.http_duration.labels(service=self.service, method=method, route=route).observe(seconds)

    def count_registry_bytes(self, kind: str, byte_count: int) -> None:
        """The registry calls this for every manifest or blob body it sends (``kind``: one of
        ``REGISTRY_CONTENT_KINDS``), with the bytes actually written."""
        self.registry_served_bytes.labels(kind=kind).inc(byte_count)

    # --- exposing -------------------------------------------------------------------------------

    def on_scrape(self, hook: ScrapeHook) -> Callable[[], None]:
        """Run ``hook`` before each rendering; returns a function that removes it."""
        self._scrape_hooks.append(hook)
        return lambda: self._scrape_hooks.remove(hook)

    async def render(self) -> bytes:
        """The Prometheus text exposition, after refreshing scrape-time values."""
        for hook in list(self._scrape_hooks):
            try:
                async with asyncio.timeout(SCRAPE_HOOK_TIMEOUT_SECONDS):
                    await hook()
            except Exception:  # a stale value is better than no metrics at all
                log.warning("a metrics scrape hook failed; its series keep their last value", exc_info=True)
        return generate_latest(self.registry)

    async def handle_scrape(self, request: web.Request) -> web.Response:
        """An aiohttp handler for ``GET /metrics``."""
        return web.Response(body=await self.render(), headers={"Content-Type": CONTENT_TYPE})

    @contextlib.asynccontextmanager
    async def listening(self, host: str, port: int, readiness: Readiness | None = None) -> AsyncIterator[None]:
        """Serve ``/metrics`` (and ``/healthz``, ``/readyz`` of ``readiness``) on ``host:port`` while
        the block runs (nothing when ``port`` is 0)."""
        if not port:
            yield
            return
        app = web.Application()
        app.router.add_get("/metrics", self.handle_scrape)
        if readiness is not None:
            readiness.add_routes(app.router)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            log.info("metrics on http://%s:%s/metrics", host, port)
            yield
        finally:
            await runner.cleanup()
