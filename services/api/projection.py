"""How each event changes the read model. One function per event type; all run inside the
projector's transaction, so an event and the checkpoint that records it commit together."""

from __future__ import annotations

import datetime
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from envstore.api.archive_projection import ARCHIVE_APPLIERS
from envstore.api.audit import projection as audit_trail
from envstore.api.usage_projection import USAGE_APPLIERS
from envstore.api.webhooks.projection import WEBHOOK_APPLIERS
from envstore.common.artifact_kinds import ArtifactKind
from envstore.common.build_keys import build_key_of_submission
from envstore.common.events import (
    ArtifactFailed,
    ArtifactReady,
    BuildCancelRequested,
    BuildCanceled,
    BuildDeleted,
    BuildDeleteRequested,
    EnvironmentDeleted,
    InstalledPackage,
    NamespaceDeleted,
    NamespaceRoleMappingChanged,
    SettingsChanged,
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
    ProjectionEventSkipped,
    WebhookEvent,
    build_id_of,
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
    existing = await connection.fetchrow("SELECT id, deleted_on FROM namespace WHERE name = $1", name)
    if existing is not None:
        if existing["deleted_on"] is not None:
            # Created again after a delete: a fresh namespace under the old id (the deleted
            # builds stay deleted; workers purge exactly the builds the delete listed).
            await connection.execute(
                "UPDATE namespace SET deleted_on = NULL, metadata = NULL, created_on = $2 WHERE id = $1",
                existing["id"],
                utc(at),
            )
            await connection.execute("DELETE FROM namespace_role_mapping WHERE namespace_id = $1", existing["id"])
        return existing["id"]
    return await connection.fetchval(
        "INSERT INTO namespace (id, name, created_on) VALUES ($1, $2, $3) RETURNING id",
        await _next_id(connection, "namespace"),
        name,
        utc(at),
    )


async def namespace_created(connection: asyncpg.Connection, event: NamespaceCreated, sequence: int) -> None:
    await _ensure_namespace(connection, event.namespace, event.occurred_at)


async def namespace_updated(connection: asyncpg.Connection, event: NamespaceUpdated, sequence: int) -> None:
    namespace_id = await connection.fetchval(
        "SELECT id FROM namespace WHERE name = $1 AND deleted_on IS NULL", event.namespace
    )
    if namespace_id is None:
        return
    if event.metadata is not None:
        await connection.execute(
            "UPDATE namespace SET metadata = $2 WHERE id = $1", namespace_id, json.dumps(event.metadata)
        )
    if event.role_mappings is not None:
        # v1 role mappings: the update replaces them all.
        await connection.execute("DELETE FROM namespace_role_mapping WHERE namespace_id = $1", namespace_id)
        for entity, roles in sorted(event.role_mappings.items()):
            for role in roles:
                await connection.execute(
                    "INSERT INTO namespace_role_mapping (id, namespace_id, entity, role) VALUES ($1, $2, $3, $4)",
                    await _next_id(connection, "namespace_role_mapping"),
                    namespace_id,
                    entity,
                    role,
                )


async def namespace_role_mapping_changed(
    connection: asyncpg.Connection, event: NamespaceRoleMappingChanged, sequence: int
) -> None:
    namespace_id = await connection.fetchval(
        "SELECT id FROM namespace WHERE name = $1 AND deleted_on IS NULL", event.namespace
    )
    if namespace_id is None:
        return
    if event.other_namespace is None:
        await connection.execute("DELETE FROM namespace_role_mapping_v2 WHERE namespace_id = $1", namespace_id)
        return
    other_id = await connection.fetchval(
        "SELECT id FROM namespace WHERE name = $1 AND deleted_on IS NULL", event.other_namespace
    )
    if other_id is None:
        return
    if event.role is None:
        await connection.execute(
            "DELETE FROM namespace_role_mapping_v2 WHERE namespace_id = $1 AND other_namespace_id = $2",
            namespace_id,
            other_id,
        )
        return
    updated = await connection.fetchval(
        """UPDATE namespace_role_mapping_v2 SET role = $3
           WHERE namespace_id = $1 AND other_namespace_id = $2 RETURNING id""",
        namespace_id,
        other_id,
        event.role,
    )
    if updated is None:
        await connection.execute(
            """INSERT INTO namespace_role_mapping_v2 (id, namespace_id, other_namespace_id, role)
               VALUES ($1, $2, $3, $4)""",
            await _next_id(connection, "namespace_role_mapping_v2"),
            namespace_id,
            other_id,
            event.role,
        )


async def namespace_deleted(connection: asyncpg.Connection, event: NamespaceDeleted, sequence: int) -> None:
    at = utc(event.occurred_at)
    namespace_id = await connection.fetchval(
        "UPDATE namespace SET deleted_on = $2 WHERE name = $1 AND deleted_on IS NULL RETURNING id",
        event.namespace,
        at,
    )
    if namespace_id is None:
        return
    await connection.execute(
        "UPDATE environment SET deleted_on = COALESCE(deleted_on, $2) WHERE namespace_id = $1", namespace_id, at
    )
    await connection.execute(
        """UPDATE build SET deleted_on = COALESCE(deleted_on, $2)
           WHERE environment_id IN (SELECT id FROM environment WHERE namespace_id = $1)""",
        namespace_id,
        at,
    )


async def build_submitted(connection: asyncpg.Connection, event: BuildSubmitted, sequence: int) -> None:
    namespace_id = await _ensure_namespace(connection, event.namespace, event.occurred_at)
    environment_id = await connection.fetchval(
        # Made again after a delete, the environment starts afresh: no description or current
        # build left over from the deleted one (the right-hand sides read the old row).
        """UPDATE environment SET
               description = CASE WHEN deleted_on IS NULL THEN COALESCE($3, description) ELSE $3 END,
               current_build_id = CASE WHEN deleted_on IS NULL THEN current_build_id END,
               deleted_on = NULL
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
    key = build_key_of_submission(event)
    inserted = await connection.fetchval(
        """INSERT INTO build (id, submission_sequence, environment_id, specification_id, status, build_key,
                              build_key_version, platforms, artifacts_wanted, scheduled_on)
           VALUES ($1, $9, $2, $3, 'QUEUED', $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING RETURNING id""",
        event.build_id,
        environment_id,
        specification_id,
        key,
        event.build_key_version,
        json.dumps(event.platforms),
        json.dumps(event.artifacts),
        utc(event.scheduled_on),
        sequence,
    )
    if inserted is None:
        raise ValueError(f"build id {event.build_id} is taken by an earlier submission")
    if event.specification_blob is not None:
        await connection.execute(
            "UPDATE build SET specification_blob_digest = $2 WHERE id = $1", event.build_id, event.specification_blob.digest
        )
    # The first build of a new environment is its current build at once (as in conda-store: there
    # is no earlier current build to keep); later builds become current only once COMPLETED.
    await connection.execute(
        "UPDATE environment SET current_build_id = $2 WHERE id = $1 AND current_build_id IS NULL",
        environment_id,
        event.build_id,
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
        "UPDATE build SET package_count = $2, lock_digest = $3 WHERE id = $1",
        event.build.build_id,
        event.package_count,
        event.lock.digest,
    )


async def build_built(connection: asyncpg.Connection, event: BuildBuilt, sequence: int) -> None:
    await connection.execute(
        "UPDATE build SET size = $2, package_count = $3 WHERE id = $1",
        event.build.build_id,
        event.size_bytes,
        event.package_count,
    )
    for package in event.packages:
        package_build_id = await _ensure_package_build(connection, package, event.occurred_at)
        await connection.execute(
            "INSERT INTO build_package (build_id, package_build_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            event.build.build_id,
            package_build_id,
        )


async def ensure_channel(connection: asyncpg.Connection, url: str, at: float | None = None) -> int:
    existing = await connection.fetchval("SELECT id FROM conda_channel WHERE name = $1", url)
    if existing is not None:
        if at is not None:
            await connection.execute(
                "UPDATE conda_channel SET last_update = GREATEST(last_update, $2) WHERE id = $1", existing, utc(at)
            )
        return existing
    return await connection.fetchval(
        "INSERT INTO conda_channel (id, name, last_update) VALUES ($1, $2, $3) RETURNING id",
        await _next_id(connection, "conda_channel"),
        url,
        utc(at) if at is not None else None,
    )


async def _ensure_package_build(connection: asyncpg.Connection, package: InstalledPackage, at: float) -> int:
    channel_id = await ensure_channel(connection, package.channel.rstrip("/"), at)
    package_id = await connection.fetchval(
        "SELECT id FROM conda_package WHERE channel_id = $1 AND name = $2 AND version = $3",
        channel_id,
        package.name,
        package.version,
    )
    if package_id is None:
        package_id = await connection.fetchval(
            """INSERT INTO conda_package (id, channel_id, name, version, license, summary)
               VALUES ($1, $2, $3, $4, $5, NULL) RETURNING id""",
            await _next_id(connection, "conda_package"),
            channel_id,
            package.name,
            package.version,
            package.license,
        )
    package_build_id = await connection.fetchval(
        "SELECT id FROM conda_package_build WHERE package_id = $1 AND subdir = $2 AND build = $3",
        package_id,
        package.subdir,
        package.build,
    )
    if package_build_id is None:
        package_build_id = await connection.fetchval(
            """INSERT INTO conda_package_build (id, package_id, channel_id, build, build_number, depends,
                                                constrains, md5, sha256, size, subdir, timestamp)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id""",
            await _next_id(connection, "conda_package_build"),
            package_id,
            channel_id,
            package.build,
            package.build_number,
            json.dumps(package.depends),
            json.dumps(package.constrains),
            package.md5,
            package.sha256,
            package.size,
            package.subdir,
            package.timestamp,
        )
    return package_build_id


async def _record_artifact(
    connection: asyncpg.Connection,
    build_id: int,
    kind: str,
    key: str,
    digest: str,
    size: int,
    content_type: str,
    platform: str = "",
) -> None:
    updated = await connection.fetchval(
        """UPDATE build_artifact SET key = $3, digest = $4, size = $5, content_type = $6, platform = $7
           WHERE build_id = $1 AND artifact_type = $2 RETURNING id""",
        build_id,
        kind,
        key,
        digest,
        size,
        content_type,
        platform,
    )
    if updated is not None:
        return
    await connection.execute(
        """INSERT INTO build_artifact (id, build_id, artifact_type, key, digest, size, content_type, platform)
           VALUES ($7, $1, $2, $3, $4, $5, $6, $8)""",
        build_id,
        kind,
        key,
        digest,
        size,
        content_type,
        await _next_id(connection, "build_artifact"),
        platform,
    )


async def artifact_ready(connection: asyncpg.Connection, event: ArtifactReady, sequence: int) -> None:
    if event.additional:
        await connection.execute(
            """INSERT INTO build_platform_artifact (build_id, artifact_type, platform, key, digest, size, content_type)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
               ON CONFLICT (build_id, artifact_type, platform) DO UPDATE
               SET key = EXCLUDED.key, digest = EXCLUDED.digest, size = EXCLUDED.size, content_type = EXCLUDED.content_type""",
            event.build_id,
            event.kind,
            event.platform,
            event.key,
            event.blob.digest,
            event.blob.size,
            event.content_type,
        )
        return
    await _record_artifact(
        connection, event.build_id, event.kind, event.key, event.blob.digest, event.blob.size, event.content_type, event.platform
    )


async def artifact_failed(connection: asyncpg.Connection, event: ArtifactFailed, sequence: int) -> None:
    """An optional artifact failed: the build's status stays, its log says why."""
    await connection.execute(
        """INSERT INTO build_progress (sequence, build_id, phase, state, message, duration_seconds,
                                       service, occurred_on)
           VALUES ($1, $2, $3, 'failed', $4, NULL, 'packager', $5) ON CONFLICT DO NOTHING""",
        sequence,
        event.build_id,
        event.kind.lower() if not event.additional else f"{event.kind.lower()} {event.platform}",
        event.reason,
        utc(event.occurred_at),
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


async def build_canceled(connection: asyncpg.Connection, event: BuildCanceled, sequence: int) -> None:
    await connection.execute(
        """INSERT INTO build_progress (sequence, build_id, phase, state, message, duration_seconds,
                                       service, occurred_on)
           VALUES ($1, $2, 'cancel', 'note', $3, NULL, 'api', $4) ON CONFLICT DO NOTHING""",
        sequence,
        event.build_id,
        event.reason,
        utc(event.occurred_at),
    )
    await connection.execute(
        """UPDATE build SET status = 'CANCELED', status_info = $2, ended_on = $3
           WHERE id = $1 AND status NOT IN ('COMPLETED', 'FAILED', 'CANCELED')""",
        event.build_id,
        event.reason or None,
        utc(event.occurred_at),
    )


async def build_delete_requested(
    connection: asyncpg.Connection, event: BuildDeleteRequested, sequence: int
) -> None:
    await connection.execute(
        "UPDATE build SET deleted_on = COALESCE(deleted_on, $2), kept_artifacts = $3 WHERE id = $1",
        event.build_id,
        utc(event.occurred_at),
        json.dumps(list(event.keep)),
    )


async def build_deleted(connection: asyncpg.Connection, event: BuildDeleted, sequence: int) -> None:
    for table in ("build_artifact", "build_platform_artifact"):
        await connection.execute(
            f"DELETE FROM {table} WHERE build_id = $1 AND NOT (artifact_type = ANY($2::text[]))",
            event.build_id,
            list(event.kept),
        )
    await connection.execute(
        "UPDATE build SET size = 0, deleted_on = COALESCE(deleted_on, $2), kept_artifacts = $3 WHERE id = $1",
        event.build_id,
        utc(event.occurred_at),
        json.dumps(list(event.kept)),
    )


async def environment_deleted(connection: asyncpg.Connection, event: EnvironmentDeleted, sequence: int) -> None:
    at = utc(event.occurred_at)
    environment_id = await connection.fetchval(
        """UPDATE environment e SET deleted_on = COALESCE(e.deleted_on, $3)
           FROM namespace n WHERE e.namespace_id = n.id AND n.name = $1 AND e.name = $2
             AND n.deleted_on IS NULL
           RETURNING e.id""",
        event.namespace,
        event.environment,
        at,
    )
    if environment_id is not None:
        await connection.execute(
            "UPDATE build SET deleted_on = COALESCE(deleted_on, $2) WHERE environment_id = $1", environment_id, at
        )


async def settings_changed(connection: asyncpg.Connection, event: SettingsChanged, sequence: int) -> None:
    scope = "/".join(part for part in (event.namespace, event.environment) if part)
    current = await connection.fetchval("SELECT data FROM setting_override WHERE scope = $1", scope)
    merged = {**(json.loads(current) if current else {}), **event.values}
    await connection.execute(
        """INSERT INTO setting_override (scope, data) VALUES ($1, $2)
           ON CONFLICT (scope) DO UPDATE SET data = EXCLUDED.data""",
        scope,
        json.dumps(merged),
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
    NamespaceRoleMappingChanged: namespace_role_mapping_changed,
    NamespaceDeleted: namespace_deleted,
    BuildCanceled: build_canceled,
    BuildDeleteRequested: build_delete_requested,
    BuildDeleted: build_deleted,
    EnvironmentDeleted: environment_deleted,
    SettingsChanged: settings_changed,
    BuildSubmitted: build_submitted,
    BuildProgress: build_progress,
    BuildSolved: build_solved,
    BuildBuilt: build_built,
    ArtifactReady: artifact_ready,
    ArtifactFailed: artifact_failed,
    BuildCompleted: build_completed,
    BuildFailed: build_failed,
    EnvironmentCurrentBuildSet: environment_current_build_set,
    EnvironmentUpdated: environment_updated,
    **WEBHOOK_APPLIERS,
    **USAGE_APPLIERS,
    **ARCHIVE_APPLIERS,
}


async def apply_event(connection: asyncpg.Connection, event: Event, sequence: int) -> None:
    applier = APPLIERS.get(type(event))
    if applier is not None:
        await applier(connection, event, sequence)
    await audit_trail.record(connection, event, sequence)


# --- what an event changes, for the caches of answers (answer_cache.py) ----------------------------


@dataclass(frozen=True)
class ReadModelChange:
    """What applying some events may have changed, beyond listings: the builds whose rows or
    artifacts it touched, whether access (namespaces, role mappings) changed, or anything at all."""

    builds: frozenset[int] = frozenset()
    access: bool = False
    everything: bool = False

    def __or__(self, other: ReadModelChange) -> ReadModelChange:
        return ReadModelChange(self.builds | other.builds, self.access or other.access, self.everything or other.everything)


EVERYTHING = ReadModelChange(everything=True)

# Events whose appliers change exactly the build they name (and listings).
CHANGE_ONE_BUILD = (
    BuildProgress, BuildCancelRequested, BuildSolved, BuildBuilt, ArtifactReady, ArtifactFailed, BuildCompleted,
    BuildFailed, BuildCanceled, BuildDeleteRequested, BuildDeleted,
)
# Events whose appliers change no build's row (only listings, environments, settings, webhooks).
CHANGE_NO_BUILD = (EnvironmentCurrentBuildSet, EnvironmentUpdated, SettingsChanged, WebhookEvent, ProjectionEventSkipped)
CHANGE_ACCESS = (NamespaceCreated, NamespaceUpdated, NamespaceRoleMappingChanged)


def change_of(event: Event) -> ReadModelChange:
    """What ``event``'s applier may change. An event type not named here may change anything (so
    a new applier is safe before it is listed)."""
    if isinstance(event, CHANGE_ONE_BUILD):
        return ReadModelChange(builds=frozenset({build_id_of(event) or 0}))
    if isinstance(event, BuildSubmitted):
        # Its namespace may be made again after a delete, with no role mappings.
        return ReadModelChange(builds=frozenset({event.build_id}), access=True)
    if isinstance(event, CHANGE_ACCESS):
        return ReadModelChange(access=True)
    if isinstance(event, CHANGE_NO_BUILD):
        return ReadModelChange()
    return EVERYTHING
