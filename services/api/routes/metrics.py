"""``/metrics``: conda-store's ``conda_store_*`` lines plus envstore's own, Prometheus text: the
read model's counts here, then the process's series (HTTP requests, every durable consumer's lag)."""

from __future__ import annotations

import asyncio
import shutil

from aiohttp import web

from envstore.api.context import context_of
from envstore.api.routes.paths import Routes
from envstore.api.storage_totals import storage_by_namespace
from envstore.common.http_telemetry import TELEMETRY
from envstore.common.metrics import CONTENT_TYPE

BUILD_STATES = ("QUEUED", "BUILDING", "COMPLETED", "FAILED", "CANCELED")


async def metrics(request: web.Request) -> web.Response:
    context = context_of(request)
    disk = await asyncio.to_thread(shutil.disk_usage, context.settings.environments_root.parent)
    counts = await context.read_model.build_status_counts()
    last_sequence = await context.bus.last_sequence()
    stall = await context.projector.recorded_stall()
    storage = await storage_by_namespace(context.read_model.pool)
    lines = [
        f"conda_store_disk_free {disk.free}",
        f"conda_store_disk_total {disk.total}",
        f"conda_store_disk_usage {disk.used}",
        *(f"conda_store_build_{state.lower()} {counts.get(state, 0)}" for state in BUILD_STATES),
        f"conda_store_environments {await context.read_model.environment_count()}",
        "# HELP envstore_builds Builds by state.",
        "# TYPE envstore_builds gauge",
        *(f'envstore_builds{{state="{state}"}} {counts.get(state, 0)}' for state in BUILD_STATES),
        "# HELP envstore_stream_last_sequence Last event sequence in the stream.",
        "# TYPE envstore_stream_last_sequence gauge",
        f"envstore_stream_last_sequence {last_sequence}",
        "# HELP envstore_projection_lag_events Events in the stream not yet in the read model.",
        "# TYPE envstore_projection_lag_events gauge",
        f"envstore_projection_lag_events {max(0, last_sequence - context.projector.applied_sequence)}",
        "# HELP envstore_projection_stalled The stream sequence of the event the projection is stopped at (0: not stalled).",
        "# TYPE envstore_projection_stalled gauge",
        f"envstore_projection_stalled {stall.sequence if stall is not None else 0}",
        "# HELP envstore_projection_dead_letters Events an operator decided to skip.",
        "# TYPE envstore_projection_dead_letters gauge",
        f"envstore_projection_dead_letters {len(await context.read_model.dead_letters())}",
        "# HELP envstore_storage_bytes Stored bytes per namespace: artifacts (distinct blobs) and installed prefixes.",
        "# TYPE envstore_storage_bytes gauge",
        *(
            line
            for entry in storage
            for line in (
                f'envstore_storage_bytes{{namespace="{_label(entry.namespace)}",kind="artifacts"}} {entry.artifact_bytes}',
                f'envstore_storage_bytes{{namespace="{_label(entry.namespace)}",kind="prefixes"}} {entry.prefix_bytes}',
            )
        ),
        "# HELP envstore_archived_builds Archived builds per namespace.",
        "# TYPE envstore_archived_builds gauge",
        *(
            f'envstore_archived_builds{{namespace="{_label(entry.namespace)}"}} {entry.archived_builds}'
            for entry in storage
        ),
    ]
    await context.bus.report_every_consumer_lag()
    process_series = await request.app[TELEMETRY].metrics.render()
    body = ("\n".join(lines) + "\n").encode() + process_series
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def register(routes: Routes) -> None:
    routes.add("GET", "/metrics", metrics, "Metrics in Prometheus text format")
