"""Where finished spans go, chosen by the standard ``OTEL_TRACES_EXPORTER`` variable.

- ``otlp``: OTLP over HTTP/protobuf (``OTEL_EXPORTER_OTLP_ENDPOINT``, headers, timeout, … are read
  by the exporter itself), batched in the background.
- ``console``: each span printed to stdout (debugging a single process).
- ``envstore-jsonl``: each span appended as one JSON line to ``<ENVSTORE_TRACE_DIRECTORY>/
  <service>-<pid>.jsonl`` as it ends. Tests use it to read the spans of services that run as
  separate processes; it writes synchronously, so it is not meant for production.
- ``none``: nothing.

Unset, spans are exported over OTLP when an OTLP endpoint is configured, and nowhere otherwise.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

JSONL_EXPORTER = "envstore-jsonl"
KNOWN_EXPORTERS = ("otlp", "console", JSONL_EXPORTER, "none")


class TelemetryConfigurationError(ValueError):
    """The OTEL_* / ENVSTORE_* telemetry variables ask for something this process cannot do."""


class JsonLinesSpanExporter(SpanExporter):
    """Appends every finished span to a file as one JSON object per line."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._file = path.open("a", encoding="utf-8")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(span_record(span), separators=(",", ":")) + "\n" for span in spans)
        with self._lock:
            if self._file.closed:
                return SpanExportResult.FAILURE
            self._file.write(lines)
            self._file.flush()  # readers see the span as soon as it ended
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """A span as plain JSON: ids in W3C hex, times in Unix nanoseconds."""
    context = span.get_span_context()
    return {
        "service": span.resource.attributes.get("service.name"),
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_span_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
        "start_time_unix_nano": span.start_time,
        "end_time_unix_nano": span.end_time,
        "status": span.status.status_code.name,
        "attributes": {key: _plain(value) for key, value in (span.attributes or {}).items()},
    }


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def exporter_names(traces_exporter: str | None, otlp_endpoint: str | None) -> list[str]:
    if traces_exporter is None or not traces_exporter.strip():
        return ["otlp"] if otlp_endpoint else []
    names = [name.strip().lower() for name in traces_exporter.split(",") if name.strip()]
    unknown = [name for name in names if name not in KNOWN_EXPORTERS]
    if unknown:
        raise TelemetryConfigurationError(
            f"OTEL_TRACES_EXPORTER names unknown exporter(s) {', '.join(unknown)}; "
            f"known: {', '.join(KNOWN_EXPORTERS)}"
        )
    return [name for name in names if name != "none"]


def span_processors(
    service: str, names: list[str], otlp_protocol: str, trace_directory: Path | None
) -> list[SpanProcessor]:
    processors: list[SpanProcessor] = []
    for name in names:
        if name == "otlp":
            processors.append(BatchSpanProcessor(_otlp_exporter(otlp_protocol)))
        elif name == "console":
            processors.append(SimpleSpanProcessor(ConsoleSpanExporter(service_name=service)))
        elif name == JSONL_EXPORTER:
            if trace_directory is None:
                raise TelemetryConfigurationError(
                    f"OTEL_TRACES_EXPORTER={JSONL_EXPORTER} needs ENVSTORE_TRACE_DIRECTORY "
                    "(the directory that receives <service>-<pid>.jsonl)"
                )
            path = trace_directory / f"{service}-{os.getpid()}.jsonl"
            processors.append(SimpleSpanProcessor(JsonLinesSpanExporter(path)))
    return processors


def _otlp_exporter(protocol: str) -> SpanExporter:
    if protocol != "http/protobuf":
        raise TelemetryConfigurationError(
            f"OTLP protocol {protocol!r} is not supported; set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf "
            "(Jaeger, Tempo and the OpenTelemetry Collector accept it on port 4318)"
        )
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise TelemetryConfigurationError(
            "OTLP trace export needs the package opentelemetry-exporter-otlp-proto-http; install it, "
            "or unset OTEL_TRACES_EXPORTER / OTEL_EXPORTER_OTLP_ENDPOINT"
        ) from None
    return OTLPSpanExporter()
