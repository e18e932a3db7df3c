"""Traces and metrics of one envstore process, held by one ``Telemetry`` object.

``run_service`` creates it (``Telemetry.from_settings``) and hands it down: to the bus (which
carries W3C trace context in NATS message headers, so a consumer's span continues the publisher's
trace), to ``BuildReporter`` phases (through the bus), to the HTTP middleware and the projector.
Nothing is registered globally: no ``trace.set_tracer_provider``, no default Prometheus registry.

One build is one trace: the API's HTTP request span → ``publish envstore.build.submitted`` → the
solver's ``process`` span → its ``solve`` phase and ``publish envstore.build.solved`` → the
builder's ``process`` span → … → the packager's artifacts; the API's projector adds a database
span per applied event, in the trace of the event's publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from envstore.common.metrics import Metrics
from envstore.common.readiness import Readiness
from envstore.common.trace_exporters import exporter_names, span_processors

if TYPE_CHECKING:
    from envstore.common.worker_runtime import Delivery

INSTRUMENTATION_NAME = "envstore"


class TelemetrySettings(BaseSettings):
    """Telemetry's settings: ``ENVSTORE_METRICS_*``/``ENVSTORE_TRACE_DIRECTORY``, and the standard
    OpenTelemetry variables that decide whether and where spans are exported."""

    model_config = SettingsConfigDict(env_prefix="ENVSTORE_", extra="ignore", populate_by_name=True)

    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=0, ge=0, le=65535)  # 0: no separate metrics listener
    trace_directory: Path | None = None  # for OTEL_TRACES_EXPORTER=envstore-jsonl

    sdk_disabled: bool = Field(default=False, validation_alias="OTEL_SDK_DISABLED")
    traces_exporter: str | None = Field(default=None, validation_alias="OTEL_TRACES_EXPORTER")
    otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
    )
    otlp_protocol: str = Field(
        default="http/protobuf",
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"),
    )


def _tracer_provider(service: str) -> TracerProvider:
    # Resource.create also reads OTEL_RESOURCE_ATTRIBUTES; the service name given here wins.
    return TracerProvider(resource=Resource.create({SERVICE_NAME: service}))


class Telemetry:
    def __init__(
        self, service: str, tracer_provider: trace.TracerProvider, metrics: Metrics, exporting: bool = False
    ) -> None:
        self.service = service
        # Whether any span reaches an exporter (a span no one passes on only costs time).
        self.exporting = exporting
        self.tracer_provider = tracer_provider
        self.tracer = tracer_provider.get_tracer(INSTRUMENTATION_NAME)
        self.metrics = metrics
        # /readyz's checks: whoever opens a resource the process needs adds one (the bus, the database).
        self.readiness = Readiness()
        self._propagator = TraceContextTextMapPropagator()

    @classmethod
    def from_settings(cls, service: str, settings: TelemetrySettings | None = None) -> Telemetry:
        """A process's telemetry as the environment configures it (spans are always made, so trace
        context flows through; they are exported only where an exporter is configured)."""
        settings = settings or TelemetrySettings()
        if settings.sdk_disabled:
            return cls.disabled(service)
        names = exporter_names(settings.traces_exporter, settings.otlp_endpoint)
        provider = _tracer_provider(service)
        processors = span_processors(service, names, settings.otlp_protocol, settings.trace_directory)
        for processor in processors:
            provider.add_span_processor(processor)
        return cls(service, provider, Metrics(service), exporting=bool(processors))

    @classmethod
    def with_exporter(cls, service: str, exporter: SpanExporter) -> Telemetry:
        """Spans handed to ``exporter`` as each ends (in-process tests: ``InMemorySpanExporter``)."""
        provider = _tracer_provider(service)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        return cls(service, provider, Metrics(service), exporting=True)

    @classmethod
    def disabled(cls, service: str = INSTRUMENTATION_NAME) -> Telemetry:
        """No spans of its own (an incoming trace context still passes through); metrics kept."""
        return cls(service, trace.NoOpTracerProvider(), Metrics(service))

    def shutdown(self) -> None:
        """Flush and stop the exporters (before the process exits)."""
        if isinstance(self.tracer_provider, TracerProvider):
            self.tracer_provider.shutdown()

    # --- W3C trace context in message and request headers --------------------------------------

    def trace_headers(self) -> dict[str, str]:
        """``traceparent`` (and ``tracestate``) of the current span, to send along."""
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier)
        return carrier

    def context_from(self, headers: Mapping[str, str] | None) -> Context:
        """The sender's context from received headers; an empty one (a new trace) when absent."""
        return self._propagator.extract(headers or {})

    # --- spans -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def producer_span(self, event_type: str, subject: str, message_id: str) -> Iterator[Span]:
        # Span names carry the event type, not the subject (one per aggregate: unbounded).
        with self.tracer.start_as_current_span(
            f"publish {event_type}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.name": "publish",
                "messaging.operation.type": "send",
                "messaging.destination.name": subject,
                "messaging.message.id": message_id,
            },
        ) as span:
            yield span

    @contextlib.contextmanager
    def consumer_span(self, delivery: Delivery) -> Iterator[Span]:
        """A worker handling one delivery, as a child of the span that published it."""
        attributes: dict[str, str | int] = {
            "messaging.system": "nats",
            "messaging.operation.name": "process",
            "messaging.operation.type": "process",
            "messaging.destination.name": delivery.subject,
            "messaging.message.delivery_count": delivery.attempt,
            "envstore.stream_sequence": delivery.stream_sequence,
        }
        if "Nats-Msg-Id" in delivery.headers:
            attributes["messaging.message.id"] = delivery.headers["Nats-Msg-Id"]
        if delivery.build_id is not None:
            attributes["envstore.build_id"] = delivery.build_id
        with self.tracer.start_as_current_span(
            f"process {delivery.event_type}",
            context=self.context_from(delivery.headers),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        ) as span:
            yield span

    def observed_handler(
        self, durable: str, handler: Callable[[Delivery], Awaitable[None]]
    ) -> Callable[[Delivery], Awaitable[None]]:
        """``handler``, counting its outcomes and marking the current (consumer) span on failure."""

        async def observed(delivery: Delivery) -> None:
            span = trace.get_current_span()
            span.set_attribute("messaging.consumer.group.name", durable)
            try:
                await handler(delivery)
            except asyncio.CancelledError:
                self.metrics.count_event_handled(durable, delivery.event_type, "canceled")
                raise
            except Exception as error:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
                self.metrics.count_event_handled(durable, delivery.event_type, "failed")
                raise
            self.metrics.count_event_handled(durable, delivery.event_type, "ok")

        return observed

    def projection_span(
        self, event_type: str, subject: str, sequence: int, headers: Mapping[str, str] | None
    ) -> contextlib.AbstractContextManager[Span | None]:
        """The read model applying one event, in the trace of the event's publisher. Made only when
        spans are exported: nothing continues this trace, and a replay applies tens of thousands
        of events a second."""
        if not self.exporting:
            return contextlib.nullcontext()
        return self._projection_span(event_type, subject, sequence, headers)

    @contextlib.contextmanager
    def _projection_span(
        self, event_type: str, subject: str, sequence: int, headers: Mapping[str, str] | None
    ) -> Iterator[Span]:
        with self.tracer.start_as_current_span(
            f"project {event_type}",
            context=self.context_from(headers),
            kind=SpanKind.CLIENT,
            attributes={
                "db.system.name": "postgresql",
                "db.system": "postgresql",
                "db.operation.name": "project",
                "messaging.destination.name": subject,
                "envstore.stream_sequence": sequence,
            },
        ) as span:
            yield span

    @contextlib.contextmanager
    def phase(self, service: str, phase: str, build_id: int) -> Iterator[Span]:
        """A worker's phase of a build: a span, and its duration in the phase histogram."""
        started = time.perf_counter()
        outcome = "ok"
        with self.tracer.start_as_current_span(
            phase, attributes={"envstore.phase": phase, "envstore.build_id": build_id}
        ) as span:
            try:
                yield span
            except asyncio.CancelledError:
                outcome = "canceled"
                raise
            except BaseException:
                outcome = "failed"
                raise
            finally:
                self.metrics.observe_phase(service, phase, outcome, time.perf_counter() - started)

    @contextlib.contextmanager
    def server_span(self, method: str, route: str, headers: Mapping[str, str]) -> Iterator[Span]:
        """An HTTP request being answered; it continues the caller's trace if the caller sent one.
        The caller sets the status (a 404 raised as an exception is not an error of the server).

        When no span is exported, none is made (it costs a fair share of a cached read): the
        caller's trace context, if it sent one, is still what the events of this request carry."""
        if not self.exporting:
            if "traceparent" not in headers:
                yield trace.INVALID_SPAN
                return
            token = otel_context.attach(self.context_from(headers))
            try:
                yield trace.INVALID_SPAN
            finally:
                otel_context.detach(token)
            return
        with self.tracer.start_as_current_span(
            f"{method} {route}",
            context=self.context_from(headers),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "http.route": route},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield span
