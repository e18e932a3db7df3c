"""One build through a real embedded stack, every service its own process exporting its spans
with the ``envstore-jsonl`` exporter: the spans form one trace in causal order, and every
service's ``/metrics`` answers with the series that the Grafana dashboard queries."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from envstore.common.demo_channel import FIVE_PACKAGE_SPEC
from envstore.launcher.stack import SERVICES, EmbeddedStack
from tests.api_client import ApiClient, environment_yaml
from tests.telemetry.spans import RecordedSpan, ancestry, read_spans, wait_for_spans

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "dashboards" / "envstore.json"
WORKERS = ("solver", "builder", "packager")


@pytest.fixture(scope="module")
def trace_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("traces")


@pytest.fixture(scope="module")
async def traced_stack(
    tmp_path_factory: pytest.TempPathFactory, trace_directory: Path, channel_url: str
) -> AsyncIterator[EmbeddedStack]:
    settings = {
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel_url,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel_url,
        "OTEL_TRACES_EXPORTER": "envstore-jsonl",
        "ENVSTORE_TRACE_DIRECTORY": str(trace_directory),
    }
    async with EmbeddedStack(tmp_path_factory.mktemp("telemetry-stack"), settings=settings) as running:
        yield running


@pytest.fixture(scope="module")
async def completed_build(traced_stack: EmbeddedStack, trace_directory: Path) -> int:
    """A build that has completed, and whose last worker span (the packager's) has ended."""
    async with ApiClient(traced_stack.api_url, token=traced_stack.admin_token) as api:
        build_id = await api.submit(
            environment_yaml("traced", list(FIVE_PACKAGE_SPEC)), namespace="telemetry"
        )
        build = await api.wait_for_build(build_id)
    assert build["status"] == "COMPLETED", build["status_info"]
    await wait_for_spans(
        trace_directory,
        lambda spans: any(
            span.service == "packager"
            and span.kind == "CONSUMER"
            and span.attributes.get("envstore.build_id") == build_id
            for span in spans
        ),
    )
    return build_id


async def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of a Prometheus endpoint, by sample name (``…_bucket``, ``…_total`` …)."""
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200, url
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def value(series: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    matching = [v for sample_labels, v in series.get(name, []) if labels.items() <= sample_labels.items()]
    assert matching, f"no sample {name}{labels}; have {sorted(series)}"
    return sum(matching)


async def test_one_build_is_one_trace_from_the_api_request_through_every_worker(
    completed_build: int, trace_directory: Path
) -> None:
    build_id = completed_build
    spans = read_spans(trace_directory)
    about_build = [span for span in spans if span.attributes.get("envstore.build_id") == build_id]
    trace_ids = {span.trace_id for span in about_build}
    assert len(trace_ids) == 1, f"the build's spans are spread over {len(trace_ids)} traces"
    (trace_id,) = trace_ids
    in_trace = [span for span in spans if span.trace_id == trace_id]
    by_id = {span.span_id: span for span in in_trace}
    assert {"api", "solver", "builder", "packager"} <= {span.service for span in in_trace}

    # Its root is the API request that submitted the specification.
    (root,) = [span for span in in_trace if span.parent_span_id is None]
    assert (root.service, root.kind, root.name) == ("api", "SERVER", "POST /api/v1/specification/")
    assert root.attributes["http.response.status_code"] == 200

    # From the packager's work back to that request, each span is the child of the one that
    # caused it, across the three NATS hops, and starts no earlier than its parent.
    (packaging,) = [
        span
        for span in in_trace
        if span.service == "packager" and span.name == "process build.built"
    ]
    chain = ancestry(packaging, by_id)
    assert [(span.service, span.kind, span.name) for span in chain] == [
        ("api", "SERVER", "POST /api/v1/specification/"),
        ("api", "PRODUCER", "publish build.submitted"),
        ("solver", "CONSUMER", "process build.submitted"),
        ("solver", "PRODUCER", "publish build.solved"),
        ("builder", "CONSUMER", "process build.solved"),
        ("builder", "PRODUCER", "publish build.built"),
        ("packager", "CONSUMER", "process build.built"),
    ]
    starts = [span.start for span in chain]
    assert starts == sorted(starts)
    assert all(span.status != "ERROR" for span in in_trace)

    # A span per worker phase, under the worker's handling of the event, in pipeline order.
    def phase(service: str, name: str) -> RecordedSpan:
        (found,) = [
            span
            for span in in_trace
            if span.service == service and span.attributes.get("envstore.phase") == name
        ]
        assert by_id[found.parent_span_id].kind == "CONSUMER"
        assert by_id[found.parent_span_id].service == service
        return found

    solve, install = phase("solver", "solve"), phase("builder", "install")
    lockfile, pinned_yaml = phase("packager", "lockfile"), phase("packager", "yaml")
    assert solve.end <= install.start and install.end <= lockfile.start and install.end <= pinned_yaml.start

    # The projector's database span for each event of the build sits under the event's publisher.
    projected = {span.name: span for span in in_trace if span.service == "api" and span.kind == "CLIENT"}
    for event_type in ("build.submitted", "build.solved", "build.built"):
        span = projected[f"project {event_type}"]
        assert span.attributes["db.system.name"] == "postgresql"
        assert by_id[span.parent_span_id].name == f"publish {event_type}"


def version_checks(spans: list[RecordedSpan]) -> list[RecordedSpan]:
    return [span for span in spans if span.service == "registry" and span.name == "GET /v2/"]


async def test_registry_requests_are_server_spans(traced_stack: EmbeddedStack, trace_directory: Path) -> None:
    earlier = len(version_checks(read_spans(trace_directory)))  # the stack's readiness probes
    async with aiohttp.ClientSession() as http, http.get(f"{traced_stack.registry_url}/v2/") as response:
        status = response.status  # 200, or 401 with a token challenge for an anonymous caller
    spans = await wait_for_spans(trace_directory, lambda spans: len(version_checks(spans)) > earlier)
    version_check = max(version_checks(spans), key=lambda span: span.start)
    assert version_check.kind == "SERVER"
    assert version_check.attributes["http.response.status_code"] == status


async def test_every_worker_answers_metrics_with_its_phases_and_consumer_lag(
    completed_build: int, traced_stack: EmbeddedStack
) -> None:
    phase_of = {"solver": "solve", "builder": "install", "packager": "lockfile"}
    consumed_by = {"solver": "build.submitted", "builder": "build.solved", "packager": "build.built"}
    for worker in WORKERS:
        series = await scrape(traced_stack.metrics_url(worker))
        phase = {"service": worker, "phase": phase_of[worker]}
        assert value(series, "envstore_phase_duration_seconds_count", **phase, outcome="ok") >= 1
        assert value(series, "envstore_phase_duration_seconds_bucket", **phase, outcome="ok", le="+Inf") >= 1
        handled = {"durable": worker, "event_type": consumed_by[worker], "outcome": "ok"}
        assert value(series, "envstore_events_handled_total", **handled) >= 1
        assert value(series, "envstore_consumer_pending_messages", durable=worker) >= 0
        assert value(series, "envstore_consumer_ack_pending_messages", durable=worker) >= 0

    registry = await scrape(traced_stack.metrics_url("registry"))
    assert value(registry, "envstore_registry_served_bytes_total", kind="blob") >= 0
    assert value(registry, "envstore_registry_served_bytes_total", kind="manifest") >= 0

    api = await scrape(traced_stack.metrics_url("api"))
    assert value(api, "envstore_builds", state="COMPLETED") >= 1
    assert value(api, "envstore_projection_lag_events") >= 0
    for worker in WORKERS:  # the API reports every durable consumer, even one whose workers are down
        assert value(api, "envstore_consumer_pending_messages", durable=worker) >= 0
    submitted = {"method": "POST", "route": "/api/v1/specification/", "status": "200"}
    assert value(api, "envstore_http_requests_total", **submitted) >= 1


async def test_every_series_the_dashboard_queries_is_exported(
    completed_build: int, traced_stack: EmbeddedStack
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    queried = {
        name
        for expression in expressions
        for name in re.findall(r"\b(?:envstore|conda_store)_[a-z0-9_]+", expression)
    }
    assert queried, "the dashboard queries no envstore series"
    exported: set[str] = set()
    for service in SERVICES:
        exported |= set(await scrape(traced_stack.metrics_url(service)))
    assert queried <= exported, f"queried but exported by no service: {sorted(queried - exported)}"
