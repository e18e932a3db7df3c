"""How each event changes the read model. One function per event type; all run inside the
projector's transaction, so an event and the checkpoint that records it commit together."""

from __future__ import annotations

import datetime
import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from envstore.common.artifact_kinds import ArtifactKind
from envstore.common.build_keys import build_key
from envstore.common.events import (
    ArtifactReady,
    BuildBuilt,
    BuildCompleted,
    BuildFailed,
    BuildProgress,
    BuildSolved,
    BuildSubmitted,
    EnvironmentCurrentBuildSet,
    EnvironmentUpdated,
    Event,
    NamespaceCreated,
    NamespaceUpdated,
)

TERMINAL_STATES = ("COMPLETED", "FAILED", "CANCELED")


def utc(timestamp: float) -> datetime.datetime:
    """Naive UTC, as conda-store stores and answers times."""
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).replace(tzinfo=None)


async def _next_id(connection: asyncpg.Connection, table: str) -> int:
    """Ids are assigned here, in stream order, never by a database sequence (sequences skip
    values on conflicts and crashes), so replaying the stream gives every row the same id."""
    return await connection.fetchval(f"SELECT COALESCE(MAX(id), 0) + 1 FROM {table}")


async def _ensure_namespace(connection: asyncpg.Connection, name: str, at: float) -> int:
    existing = await connection.fetchval("SELECT id FROM namespace WHERE name = $1", name)
    if existing is not None:
        return existing
    return await connection.fetchval(
        "INSERT INTO namespace (id, name, created_on) VALUES ($1, $2, $3) RETURNING id",
        await _next_id(connection, "namespace"),
        name,
        utc(at),
    )


async def namespace_created(connection: asyncpg.Connection, event: NamespaceCreated, sequence: int) -> None:
    await _ensure_namespace(connection, event.namespace, event.occurred_at)


async def namespace_updated(connection: asyncpg.Connection, event: NamespaceUpdated, sequence: int) -> None:
    if event.metadata is not None:
        await connection.execute(
            "UPDATE namespace SET metadata = $2 WHERE name = $1", event.namespace, json.dumps(event.metadata)
        )


async def build_submitted(connection: asyncpg.Connection, event: BuildSubmitted, sequence: int) -> None:
    namespace_id = await _ensure_namespace(connection, event.namespace, event.occurred_at)
    environment_id = await connection.fetchval(
        """UPDATE environment SET description = COALESCE($3, description), deleted_on = NULL
           WHERE namespace_id = $1 AND name = $2 RETURNING id""",
        namespace_id,
        event.environment,
        event.description,
    )
    if environment_id is None:
        environment_id = await connection.fetchval(
            """INSERT INTO environment (id, namespace_id, name, description) VALUES ($1, $2, $3, $4)
               RETURNING id""",
            await _next_id(connection, "environment"),
            namespace_id,
            event.environment,
            event.description,
        )
    specification_id = await connection.fetchval(
        "SELECT id FROM specification WHERE sha256 = $1", event.spec_sha256
    )
    if specification_id is None:
        specification_id = await connection.fetchval(
            """INSERT INTO specification (id, name, spec, sha256, created_on)
               VALUES ($1, $2, $3, $4, $5) RETURNING id""",
            await _next_id(connection, "specification"),
            event.specification.get("name", event.environment),
            json.dumps(event.specification),
            event.spec_sha256,
            utc(event.occurred_at),
        )
    key = build_key(
        event.build_key_version,
        event.spec_sha256,
        event.scheduled_on,
        sequence,
        event.environment,
        event.namespace,
    )
    await connection.execute(
        """INSERT INTO build (id, environment_id, specification_id, status, build_key,
                              build_key_version, platforms, artifacts_wanted, scheduled_on)
           VALUES ($1, $2, $3, 'QUEUED', $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING""",
        sequence,
        environment_id,
        specification_id,
        key,
        event.build_key_version,
        json.dumps(event.platforms),
        json.dumps(event.artifacts),
        utc(event.scheduled_on),
    )
    # The first build of a new environment is its current build at once (as in conda-store).
    await connection.execute(
        "UPDATE environment SET current_build_id = $2 WHERE id = $1 AND current_build_id IS NULL",
        environment_id,
        sequence,
    )


async def _mark_building(connection: asyncpg.Connection, build_id: int, at: float) -> None:
    await connection.execute(
        "UPDATE build SET status = 'BUILDING', started_on = COALESCE(started_on, $2) "
        "WHERE id = $1 AND status = 'QUEUED'",
        build_id,
        utc(at),
    )


async def build_progress(connection: asyncpg.Connection, event: BuildProgress, sequence: int) -> None:
    await _mark_building(connection, event.build_id, event.occurred_at)
    await connection.execute(
        """INSERT INTO build_progress (sequence, build_id, phase, state, message, duration_seconds,
                                       service, occurred_on)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING""",
        sequence,
        event.build_id,
        event.phase,
        event.state,
        event.message,
        event.duration_seconds,
        event.service,
        utc(event.occurred_at),
    )


async def build_solved(connection: asyncpg.Connection, event: BuildSolved, sequence: int) -> None:
    await _mark_building(connection, event.build.build_id, event.occurred_at)
    await connection.execute(
        "UPDATE build SET package_count = $2 WHERE id = $1", event.build.build_id, event.package_count
    )


async def build_built(connection: asyncpg.Connection, event: BuildBuilt, sequence: int) -> None:
    await connection.execute(
        "UPDATE build SET size = $2, package_count = $3 WHERE id = $1",
        event.build.build_id,
        event.size_bytes,
        event.package_count,
    )


async def _record_artifact(
    connection: asyncpg.Connection, build_id: int, kind: str, key: str, digest: str, size: int, content_type: str
) -> None:
    updated = await connection.fetchval(
        """UPDATE build_artifact SET key = $3, digest = $4, size = $5, content_type = $6
           WHERE build_id = $1 AND artifact_type = $2 RETURNING id""",
        build_id,
        kind,
        key,
        digest,
        size,
        content_type,
    )
    if updated is not None:
        return
    await connection.execute(
        """INSERT INTO build_artifact (id, build_id, artifact_type, key, digest, size, content_type)
           VALUES ($7, $1, $2, $3, $4, $5, $6)""",
        build_id,
        kind,
        key,
        digest,
        size,
        content_type,
        await _next_id(connection, "build_artifact"),
    )


async def artifact_ready(connection: asyncpg.Connection, event: ArtifactReady, sequence: int) -> None:
    await _record_artifact(
        connection, event.build_id, event.kind, event.key, event.blob.digest, event.blob.size, event.content_type
    )


async def build_completed(connection: asyncpg.Connection, event: BuildCompleted, sequence: int) -> None:
    updated = await connection.fetchval(
        """UPDATE build SET status = 'COMPLETED', ended_on = $2, size = GREATEST(size, $3),
                            status_info = NULL
           WHERE id = $1 AND status NOT IN ('COMPLETED', 'FAILED', 'CANCELED') RETURNING environment_id""",
        event.build_id,
        utc(event.occurred_at),
        event.size_bytes,
    )
    if updated is not None:
        # Every build that completes becomes its environment's current build.
        await connection.execute(
            "UPDATE environment SET current_build_id = $2 WHERE id = $1", updated, event.build_id
        )


async def build_failed(connection: asyncpg.Connection, event: BuildFailed, sequence: int) -> None:
    key = await connection.fetchval(
        """UPDATE build SET status = 'FAILED', status_info = $2, ended_on = $3
           WHERE id = $1 AND status NOT IN ('COMPLETED', 'FAILED', 'CANCELED') RETURNING build_key""",
        event.build_id,
        event.reason,
        utc(event.occurred_at),
    )
    if key is not None and event.log is not None:
        await _record_artifact(
            connection,
            event.build_id,
            ArtifactKind.LOGS,
            f"logs/{key}.log",
            event.log.digest,
            event.log.size,
            "text/plain; charset=utf-8",
        )


async def environment_current_build_set(
    connection: asyncpg.Connection, event: EnvironmentCurrentBuildSet, sequence: int
) -> None:
    await connection.execute(
        """UPDATE environment e SET current_build_id = $3
           FROM namespace n WHERE e.namespace_id = n.id AND n.name = $1 AND e.name = $2""",
        event.namespace,
        event.environment,
        event.build_id,
    )


async def environment_updated(connection: asyncpg.Connection, event: EnvironmentUpdated, sequence: int) -> None:
    await connection.execute(
        """UPDATE environment e SET description = $3
           FROM namespace n WHERE e.namespace_id = n.id AND n.name = $1 AND e.name = $2""",
        event.namespace,
        event.environment,
        event.description,
    )


Apply = Callable[[asyncpg.Connection, Any, int], Awaitable[None]]

APPLIERS: dict[type[Event], Apply] = {
    NamespaceCreated: namespace_created,
    NamespaceUpdated: namespace_updated,
    BuildSubmitted: build_submitted,
    BuildProgress: build_progress,
    BuildSolved: build_solved,
    BuildBuilt: build_built,
    ArtifactReady: artifact_ready,
    BuildCompleted: build_completed,
    BuildFailed: build_failed,
    EnvironmentCurrentBuildSet: environment_current_build_set,
    EnvironmentUpdated: environment_updated,
}


async def apply_event(connection: asyncpg.Connection, event: Event, sequence: int) -> None:
    applier = APPLIERS.get(type(event))
    if applier is not None:
        await applier(connection, event, sequence)
