"""Trace context across processes, in one test process: two buses (two "services", each with its
own tracer provider and in-memory exporter) on a real nats-server, and a real aiohttp server."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from envstore.common import http_telemetry
from envstore.common.build_reporter import BuildReporter
from envstore.common.transport import EventBus
from envstore.common.worker_runtime import ConsumerSettings, Delivery, Worker
from envstore.common.events import NamespaceCreated, NamespaceUpdated
from envstore.common.telemetry import Telemetry
from envstore.common.trace_exporters import TelemetryConfigurationError, exporter_names, span_processors
from envstore.launcher.nats_process import NatsServer

TRACEPARENT = re.compile(r"^00-(?P<trace>[0-9a-f]{32})-(?P<span>[0-9a-f]{16})-[0-9a-f]{2}$")
WAIT_SECONDS = 30.0


async def finished_span(
    exporter: InMemorySpanExporter, matches: Callable[[ReadableSpan], bool]
) -> ReadableSpan:
    """The first finished span that ``matches``; spans end after the message is acked, so wait
    (bounded) for it rather than assume it has ended."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        found = [span for span in exporter.get_finished_spans() if matches(span)]
        if found:
            return found[0]
        assert time.monotonic() < deadline, (
            f"no such span among {[s.name for s in exporter.get_finished_spans()]}"
        )
        await asyncio.sleep(0.01)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@contextlib.asynccontextmanager
async def consuming(
    bus: EventBus, durable: str, subjects: list[str], handler: Callable[[Delivery], Awaitable[None]]
) -> AsyncIterator[None]:
    consumer = ConsumerSettings(durable=durable, subjects=subjects, concurrency=1, ack_wait_seconds=10)
    task = asyncio.create_task(Worker(bus, consumer, handler).run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_consumer_continues_the_publishers_trace_across_two_hops(tmp_path: Path) -> None:
    exported = {name: InMemorySpanExporter() for name in ("api", "solver", "builder")}
    telemetry = {name: Telemetry.with_exporter(name, exporter) for name, exporter in exported.items()}
    async with NatsServer(tmp_path / "nats") as server:
        buses = {
            name: await EventBus.connect(server.url, "TRACES", name=name, telemetry=telemetry[name])
            for name in telemetry
        }
        try:
            await buses["api"].ensure_stream()
            updates: asyncio.Queue[Delivery] = asyncio.Queue()
            seen_in_handler: list[trace.SpanContext] = []

            async def solver_handles(delivery: Delivery) -> None:
                seen_in_handler.append(trace.get_current_span().get_span_context())
                reporter = BuildReporter(buses["solver"], build_id=7, service="solver")
                async with reporter.phase("solve"):
                    pass
                await buses["solver"].publish(NamespaceUpdated(namespace="traced"), "updated:traced")

            async def builder_handles(delivery: Delivery) -> None:
                updates.put_nowait(delivery)

            async with (
                consuming(buses["solver"], "solver", [NamespaceCreated.subject_pattern()], solver_handles),
                consuming(buses["builder"], "builder", [NamespaceUpdated.subject_pattern()], builder_handles),
            ):
                with telemetry["api"].tracer.start_as_current_span(
                    "POST /api/v1/namespace/{name}/"
                ) as request:
                    await buses["api"].publish(NamespaceCreated(namespace="traced"), "created:traced")
                second_hop = await asyncio.wait_for(updates.get(), WAIT_SECONDS)

                publish = await finished_span(exported["api"], lambda span: span.kind is SpanKind.PRODUCER)
                process = await finished_span(exported["solver"], lambda span: span.kind is SpanKind.CONSUMER)
                phase = await finished_span(exported["solver"], lambda span: span.name == "solve")
                republish = await finished_span(
                    exported["solver"], lambda span: span.name == f"publish {NamespaceUpdated.tag()}"
                )
                process_again = await finished_span(
                    exported["builder"], lambda span: span.kind is SpanKind.CONSUMER
                )
                solver_metrics = await telemetry["solver"].metrics.render()
        finally:
            for bus in buses.values():
                await bus.close()

    trace_id = request.get_span_context().trace_id
    # One trace, each span the child of the one before it, across the NATS hops.
    assert publish.parent.span_id == request.get_span_context().span_id
    assert process.context.trace_id == trace_id and process.parent.span_id == publish.context.span_id
    assert process.parent.is_remote
    assert seen_in_handler == [process.context]  # the handler runs inside the consumer span
    assert phase.parent.span_id == process.context.span_id
    assert republish.parent.span_id == process.context.span_id
    assert process_again.context.trace_id == trace_id
    assert process_again.parent.span_id == republish.context.span_id
    # The context rides as a W3C traceparent header, naming the publish span.
    header = TRACEPARENT.match(second_hop.headers["traceparent"])
    assert header is not None, second_hop.headers
    assert (int(header["trace"], 16), int(header["span"], 16)) == (trace_id, republish.context.span_id)
    # What the spans say about the message and the phase.
    assert process.name == f"process {NamespaceCreated.tag()}"
    assert process.attributes["messaging.consumer.group.name"] == "solver"
    assert process.attributes["messaging.message.id"] == "created:traced"
    assert phase.attributes["envstore.build_id"] == 7
    assert process.resource.attributes["service.name"] == "solver"

    series = samples(solver_metrics.decode())
    handled = (
        "envstore_events_handled_total",
        frozenset({("durable", "solver"), ("event_type", NamespaceCreated.tag()), ("outcome", "ok")}),
    )
    assert series[handled] == 1
    phase_count = (
        "envstore_phase_duration_seconds_count",
        frozenset({("service", "solver"), ("phase", "solve"), ("outcome", "ok")}),
    )
    assert series[phase_count] == 1
    assert series[("envstore_consumer_pending_messages", frozenset({("durable", "solver")}))] == 0


async def test_a_failing_phase_marks_its_span_and_counts_as_failed(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    telemetry = Telemetry.with_exporter("builder", exporter)
    async with NatsServer(tmp_path / "nats") as server:
        bus = await EventBus.connect(server.url, "TRACES", telemetry=telemetry)
        try:
            await bus.ensure_stream()
            reporter = BuildReporter(bus, build_id=3, service="builder")
            with pytest.raises(OSError):
                async with reporter.phase("install"):
                    raise OSError("disk full")
        finally:
            await bus.close()
    (phase,) = [span for span in exporter.get_finished_spans() if span.name == "install"]
    assert phase.status.status_code is StatusCode.ERROR
    assert "disk full" in phase.status.description
    series = samples((await telemetry.metrics.render()).decode())
    failed = (
        "envstore_phase_duration_seconds_count",
        frozenset({("service", "builder"), ("phase", "install"), ("outcome", "failed")}),
    )
    assert series[failed] == 1


async def test_http_server_spans_continue_the_callers_trace_and_label_by_route() -> None:
    exporter = InMemorySpanExporter()
    telemetry = Telemetry.with_exporter("registry", exporter)

    async def manifest(request: web.Request) -> web.Response:
        raise web.HTTPNotFound(text="no such manifest")

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("boom")

    app = web.Application()
    http_telemetry.install(app, telemetry)
    app.router.add_get("/v2/{name:.+}/manifests/{reference}", manifest)
    app.router.add_get("/broken", broken)
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with TestServer(app) as server, aiohttp.ClientSession() as http:
        headers = {"traceparent": f"00-{caller_trace}-{caller_span}-01"}
        async with http.get(server.make_url("/v2/tests/five/manifests/latest"), headers=headers) as response:
            assert response.status == 404
        async with http.get(server.make_url("/broken")) as response:
            assert response.status == 500
        async with http.get(server.make_url("/nowhere/at/all")) as response:
            assert response.status == 404

    spans = {span.name: span for span in exporter.get_finished_spans()}
    not_found = spans["GET /v2/{name}/manifests/{reference}"]
    assert not_found.kind is SpanKind.SERVER
    assert f"{not_found.context.trace_id:032x}" == caller_trace
    assert f"{not_found.parent.span_id:016x}" == caller_span
    assert not_found.attributes["http.response.status_code"] == 404
    assert not_found.status.status_code is StatusCode.UNSET  # the client's mistake, not the server's
    assert spans["GET /broken"].status.status_code is StatusCode.ERROR
    assert spans["GET /broken"].parent is None  # no traceparent sent: a new trace
    assert "GET (unmatched)" in spans

    series = samples((await telemetry.metrics.render()).decode())
    request_count = (
        "envstore_http_requests_total",
        frozenset(
            {
                ("service", "registry"),
                ("method", "GET"),
                ("route", "/v2/{name}/manifests/{reference}"),
                ("status", "404"),
            }
        ),
    )
    assert series[request_count] == 1
    # The registry exports its bytes-served counter from the start.
    assert series[("envstore_registry_served_bytes_total", frozenset({("kind", "blob")}))] == 0


def test_the_exporter_follows_the_standard_variables(tmp_path: Path) -> None:
    assert exporter_names(None, None) == []  # nothing configured: no export
    assert exporter_names(None, "http://jaeger:4318") == ["otlp"]
    assert exporter_names("none", "http://jaeger:4318") == []
    assert exporter_names("otlp, envstore-jsonl", None) == ["otlp", "envstore-jsonl"]
    with pytest.raises(TelemetryConfigurationError, match="unknown exporter.*zipkin.*known: otlp"):
        exporter_names("zipkin", None)
    with pytest.raises(TelemetryConfigurationError, match="ENVSTORE_TRACE_DIRECTORY"):
        span_processors("solver", ["envstore-jsonl"], "http/protobuf", None)
    with pytest.raises(TelemetryConfigurationError, match="OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"):
        span_processors("solver", ["otlp"], "grpc", None)


async def test_spans_go_over_otlp_http_to_the_endpoint_of_the_standard_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    received: list[ExportTraceServiceRequest] = []

    async def collect(request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        received.append(export)
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )

    collector = web.Application()
    collector.router.add_post("/v1/traces", collect)
    async with TestServer(collector) as server:
        monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
        monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", str(server.make_url("")).rstrip("/"))
        telemetry = Telemetry.from_settings("builder")
        with telemetry.phase("builder", "install", build_id=11):
            pass
        # The exporter posts from its own thread (blocking HTTP): flush it off the event loop.
        await asyncio.to_thread(telemetry.shutdown)

    exported = [
        (resource.resource, span)
        for request in received
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    assert [span.name for _, span in exported] == ["install"]
    resource, span = exported[0]
    assert {"key": "service.name", "value": "builder"} in [
        {"key": attribute.key, "value": attribute.value.string_value} for attribute in resource.attributes
    ]
    assert {attribute.key: attribute.value.int_value for attribute in span.attributes}[
        "envstore.build_id"
    ] == 11
