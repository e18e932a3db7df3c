"""How each event changes the read model: one function per event type.

Most events are applied to rows held in memory for a whole batch (``read_model_rows.BatchRows``):
the projector loads the rows a batch needs in one query per table, runs these functions in stream
order, and writes the changed rows back with one statement per table (``BATCHED_APPLIERS``).
Events that change many rows at once or are rare (deletions of namespaces, environments and
builds, role mappings, settings, webhooks) run their own SQL on the transaction's connection
(``SQL_APPLIERS``); the projector writes the batch so far before one and reads rows again after
it. Everything runs inside the projector's transaction, so an event and the checkpoint that
records it commit together.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import msgspec

from envstore.api.naive_utc import utc
from envstore.api.archive_projection import ARCHIVE_APPLIERS
from envstore.api.audit import projection as audit_trail
from envstore.api.read_model_change import EVERYTHING, NOTHING, ReadModelChange
from envstore.api.read_model_rows import (
    ArtifactRow,
    BatchRows,
    BuildRow,
    ChannelRow,
    EnvironmentRow,
    NamespaceRow,
    PackageBuildRow,
    PlatformArtifactRow,
    PackageRow,
    ProgressRow,
    SpecificationRow,
    WantedRows,
)
from envstore.api.usage_projection import USAGE_APPLIERS
from envstore.api.webhooks.projection import WEBHOOK_APPLIERS
from envstore.common.artifact_kinds import ArtifactKind
from envstore.common.build_keys import build_key_of_submission
from envstore.common.events import (
    ArtifactFailed,
    ArtifactReady,
    BuildArchived,
    BuildArchiveRequested,
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
    BuildRehydrated,
    BuildRehydrationRequested,
    BuildSolved,
    BuildSubmitted,
    BuildUsed,
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
_JSON = msgspec.json.Encoder()


async def _next_id(connection: asyncpg.Connection, table: str) -> int:
    """Ids are assigned here, in stream order, never by a database sequence (sequences skip
    values on conflicts and crashes), so replaying the stream gives every row the same id."""
    return await connection.fetchval(f"SELECT COALESCE(MAX(id), 0) + 1 FROM {table}")



# --- events applied by their own SQL (rare, or changing many rows at once) -------------------------


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



# --- events applied to a batch's rows in memory -------------------------------------------------


def _json_text(value: Any) -> str:
    """JSON for a jsonb column (which keeps its own form of it, whatever the spacing)."""
    return _JSON.encode(value).decode()


def _namespace(rows: BatchRows, name: str, at: float) -> NamespaceRow:
    namespace = rows.namespaces.get(name)
    if namespace is not None:
        if namespace.deleted_on is not None:
            # Created again after a delete: a fresh namespace under the old id (the deleted
            # builds stay deleted; workers purge exactly the builds the delete listed).
            namespace.deleted_on = None
            namespace.metadata = None
            namespace.created_on = utc(at)
            namespace.changed = True
            namespace.role_mappings_cleared = True
        return namespace
    namespace = NamespaceRow(rows.next_id("namespace"), name, None, utc(at), None, new=True)
    rows.namespaces[name] = namespace
    return namespace


def namespace_created(rows: BatchRows, event: NamespaceCreated, sequence: int) -> None:
    _namespace(rows, event.namespace, event.occurred_at)


def build_submitted(rows: BatchRows, event: BuildSubmitted, sequence: int) -> None:
    namespace = _namespace(rows, event.namespace, event.occurred_at)
    environment = rows.environment(namespace.id, event.environment)
    if environment is None:
        environment = rows.add_environment(
            EnvironmentRow(rows.next_id("environment"), namespace.id, event.environment, event.description, None, None, new=True)
        )
    else:
        if environment.deleted_on is None:
            if event.description is not None:
                environment.description = event.description
        else:
            # Made again after a delete, the environment starts afresh: no description or
            # current build left over from the deleted one.
            environment.description = event.description
            environment.current_build_id = None
        environment.deleted_on = None
        environment.changed = True
    specification_id = rows.specifications.get(event.spec_sha256)
    if specification_id is None:
        specification_id = rows.next_id("specification")
        rows.specifications[event.spec_sha256] = specification_id
        rows.new_specifications.append(
            SpecificationRow(
                specification_id,
                event.specification.get("name", event.environment),
                _json_text(event.specification),
                event.spec_sha256,
                utc(event.occurred_at),
            )
        )
    if event.build_id in rows.builds:
        raise ValueError(f"build id {event.build_id} is taken by an earlier submission")
    rows.builds[event.build_id] = BuildRow(
        id=event.build_id,
        submission_sequence=sequence,
        environment_id=environment.id,
        specification_id=specification_id,
        status="QUEUED",
        status_info=None,
        size=0,
        package_count=None,
        build_key=build_key_of_submission(event),
        build_key_version=event.build_key_version,
        platforms=_json_text(event.platforms),
        artifacts_wanted=_json_text(event.artifacts),
        scheduled_on=utc(event.scheduled_on),
        started_on=None,
        ended_on=None,
        deleted_on=None,
        kept_artifacts=None,
        lock_digest=None,
        specification_blob_digest=event.specification_blob.digest if event.specification_blob is not None else None,
        new=True,
    )
    rows.build_scopes[event.build_id] = (event.namespace, event.environment)
    # The first build of a new environment is its current build at once (as in conda-store: there
    # is no earlier current build to keep); later builds become current only once COMPLETED.
    if environment.current_build_id is None:
        environment.current_build_id = event.build_id
        environment.changed = True


def _changed_build(rows: BatchRows, build_id: int) -> BuildRow | None:
    build = rows.builds.get(build_id)
    if build is not None:
        build.changed = True
    return build


def _mark_building(rows: BatchRows, build_id: int, at: float) -> None:
    build = rows.builds.get(build_id)
    if build is not None and build.status == "QUEUED":
        build.status = "BUILDING"
        if build.started_on is None:
            build.started_on = utc(at)
        build.changed = True


def _progress(rows: BatchRows, sequence: int, build_id: int, phase: str, state: str, message: str,
              duration_seconds: float | None, service: str, at: float) -> None:
    rows.progress.append(ProgressRow(sequence, build_id, phase, state, message, duration_seconds, service, utc(at)))


def build_progress(rows: BatchRows, event: BuildProgress, sequence: int) -> None:
    _mark_building(rows, event.build_id, event.occurred_at)
    _progress(rows, sequence, event.build_id, event.phase, event.state, event.message, event.duration_seconds,
              event.service, event.occurred_at)


def build_solved(rows: BatchRows, event: BuildSolved, sequence: int) -> None:
    _mark_building(rows, event.build.build_id, event.occurred_at)
    build = _changed_build(rows, event.build.build_id)
    if build is not None:
        build.package_count = event.package_count
        build.lock_digest = event.lock.digest


def build_built(rows: BatchRows, event: BuildBuilt, sequence: int) -> None:
    build = _changed_build(rows, event.build.build_id)
    if build is not None:
        build.size = event.size_bytes
        build.package_count = event.package_count
    elif event.packages:
        raise ValueError(f"build {event.build.build_id} is not in the read model: its packages cannot be listed")
    for package in event.packages:
        rows.build_packages[(event.build.build_id, _package_build(rows, package, event.occurred_at))] = None


def _channel(rows: BatchRows, url: str, at: float) -> ChannelRow:
    channel = rows.channels.get(url)
    if channel is None:
        channel = ChannelRow(rows.next_id("conda_channel"), url, utc(at), new=True)
        rows.channels[url] = channel
    elif channel.last_update is None or channel.last_update < utc(at):
        channel.last_update = utc(at)
        channel.changed = True
    return channel


def _package_build(rows: BatchRows, package: InstalledPackage, at: float) -> int:
    channel = _channel(rows, package.channel.rstrip("/"), at)
    package_key = (channel.id, package.name, package.version)
    package_id = rows.packages.get(package_key)
    if package_id is None:
        package_id = rows.next_id("conda_package")
        rows.packages[package_key] = package_id
        rows.new_packages.append(PackageRow(package_id, channel.id, package.name, package.version, package.license))
    build_key = (package_id, package.subdir, package.build)
    package_build_id = rows.package_builds.get(build_key)
    if package_build_id is None:
        package_build_id = rows.next_id("conda_package_build")
        rows.package_builds[build_key] = package_build_id
        rows.new_package_builds.append(
            PackageBuildRow(
                package_build_id,
                package_id,
                channel.id,
                package.build,
                package.build_number,
                _json_text(package.depends),
                _json_text(package.constrains),
                package.md5,
                package.sha256,
                package.size,
                package.subdir,
                package.timestamp,
            )
        )
    return package_build_id


def _record_artifact(
    rows: BatchRows,
    build_id: int,
    kind: str,
    key: str,
    digest: str,
    size: int,
    content_type: str,
    platform: str = "",
) -> None:
    if build_id not in rows.builds:
        raise ValueError(f"build {build_id} is not in the read model: its {kind} artifact cannot be recorded")
    artifact = rows.artifacts.get((build_id, kind))
    if artifact is not None:
        artifact.key, artifact.digest, artifact.size = key, digest, size
        artifact.content_type, artifact.platform = content_type, platform
        artifact.changed = True
        return
    rows.artifacts[(build_id, kind)] = ArtifactRow(
        rows.next_id("build_artifact"), build_id, kind, key, digest, size, content_type, platform, new=True
    )


def artifact_ready(rows: BatchRows, event: ArtifactReady, sequence: int) -> None:
    if event.additional:
        # A further platform's artifact (multi-platform builds): one row per platform.
        if event.build_id not in rows.builds:
            raise ValueError(f"build {event.build_id} is not in the read model: its {event.kind} artifact cannot be recorded")
        rows.platform_artifacts[(event.build_id, event.kind, event.platform)] = PlatformArtifactRow(
            event.build_id, event.kind, event.platform, event.key, event.blob.digest, event.blob.size, event.content_type
        )
        return
    _record_artifact(
        rows, event.build_id, event.kind, event.key, event.blob.digest, event.blob.size, event.content_type, event.platform
    )


def artifact_failed(rows: BatchRows, event: ArtifactFailed, sequence: int) -> None:
    """An optional artifact failed: the build's status stays, its log says why."""
    phase = event.kind.lower() if not event.additional else f"{event.kind.lower()} {event.platform}"
    _progress(rows, sequence, event.build_id, phase, "failed", event.reason, None, "packager", event.occurred_at)


def _ended_build(rows: BatchRows, build_id: int) -> BuildRow | None:
    """The build, if it has no outcome yet (the first outcome is its end)."""
    build = rows.builds.get(build_id)
    if build is None or build.status in TERMINAL_STATES:
        return None
    build.changed = True
    return build


def build_completed(rows: BatchRows, event: BuildCompleted, sequence: int) -> None:
    build = _ended_build(rows, event.build_id)
    if build is None:
        return
    build.status = "COMPLETED"
    build.ended_on = utc(event.occurred_at)
    build.size = max(build.size, event.size_bytes)
    build.status_info = None
    # Every build that completes becomes its environment's current build.
    environment = rows.environments_by_id.get(build.environment_id)
    if environment is not None:
        environment.current_build_id = event.build_id
        environment.changed = True


def build_failed(rows: BatchRows, event: BuildFailed, sequence: int) -> None:
    build = _ended_build(rows, event.build_id)
    if build is None:
        return
    build.status = "FAILED"
    build.status_info = event.reason
    build.ended_on = utc(event.occurred_at)
    if event.log is not None:
        _record_artifact(
            rows,
            event.build_id,
            ArtifactKind.LOGS,
            f"logs/{build.build_key}.log",
            event.log.digest,
            event.log.size,
            "text/plain; charset=utf-8",
        )


def build_canceled(rows: BatchRows, event: BuildCanceled, sequence: int) -> None:
    _progress(rows, sequence, event.build_id, "cancel", "note", event.reason, None, "api", event.occurred_at)
    build = _ended_build(rows, event.build_id)
    if build is None:
        return
    build.status = "CANCELED"
    build.status_info = event.reason or None
    build.ended_on = utc(event.occurred_at)


def build_delete_requested(rows: BatchRows, event: BuildDeleteRequested, sequence: int) -> None:
    build = _changed_build(rows, event.build_id)
    if build is not None:
        if build.deleted_on is None:
            build.deleted_on = utc(event.occurred_at)
        build.kept_artifacts = _json_text(list(event.keep))


def _named_environment(rows: BatchRows, namespace: str, name: str) -> EnvironmentRow | None:
    """The environment of that name, deleted or not."""
    namespace_row = rows.namespaces.get(namespace)
    if namespace_row is None:
        return None
    environment = rows.environment(namespace_row.id, name)
    if environment is not None:
        environment.changed = True
    return environment


def environment_current_build_set(rows: BatchRows, event: EnvironmentCurrentBuildSet, sequence: int) -> None:
    environment = _named_environment(rows, event.namespace, event.environment)
    if environment is not None:
        environment.current_build_id = event.build_id


def environment_updated(rows: BatchRows, event: EnvironmentUpdated, sequence: int) -> None:
    environment = _named_environment(rows, event.namespace, event.environment)
    if environment is not None:
        environment.description = event.description


def rows_wanted(event: Event, wanted: WantedRows) -> None:
    """Add the keys of the rows ``event``'s batched applier looks at."""
    if isinstance(event, NamespaceCreated):
        wanted.namespaces.add(event.namespace)
    elif isinstance(event, BuildSubmitted):
        wanted.namespaces.add(event.namespace)
        wanted.environments.add((event.namespace, event.environment))
        wanted.specifications.add(event.spec_sha256)
        wanted.builds.add(event.build_id)
    elif isinstance(event, (EnvironmentCurrentBuildSet, EnvironmentUpdated)):
        wanted.environments.add((event.namespace, event.environment))
    else:
        build_id = build_id_of(event)
        if build_id is not None:
            wanted.builds.add(build_id)
            if type(event) in audit_trail.AUDITED_TYPES:
                wanted.build_scopes.add(build_id)
        if isinstance(event, BuildBuilt):
            for package in event.packages:
                wanted.packages.add((package.channel.rstrip("/"), package.name, package.version))


# --- the appliers of every event type -------------------------------------------------------------

BatchedApply = Callable[[BatchRows, Any, int], None]
SqlApply = Callable[[asyncpg.Connection, Any, int], Awaitable[None]]

BATCHED_APPLIERS: dict[type[Event], BatchedApply] = {
    NamespaceCreated: namespace_created,
    BuildSubmitted: build_submitted,
    BuildProgress: build_progress,
    BuildSolved: build_solved,
    BuildBuilt: build_built,
    ArtifactReady: artifact_ready,
    ArtifactFailed: artifact_failed,
    BuildCompleted: build_completed,
    BuildFailed: build_failed,
    BuildCanceled: build_canceled,
    BuildDeleteRequested: build_delete_requested,
    EnvironmentCurrentBuildSet: environment_current_build_set,
    EnvironmentUpdated: environment_updated,
}

SQL_APPLIERS: dict[type[Event], SqlApply] = {
    NamespaceUpdated: namespace_updated,
    NamespaceRoleMappingChanged: namespace_role_mapping_changed,
    NamespaceDeleted: namespace_deleted,
    # Deleting artifact rows: ids after it are assigned as max + 1 again (as they always were).
    BuildDeleted: build_deleted,
    EnvironmentDeleted: environment_deleted,
    SettingsChanged: settings_changed,
    **WEBHOOK_APPLIERS,
    **USAGE_APPLIERS,
    **ARCHIVE_APPLIERS,
}


async def apply_with_sql(connection: asyncpg.Connection, event: Event, sequence: int) -> None:
    """An event of ``SQL_APPLIERS``, and its row of the audit trail."""
    await SQL_APPLIERS[type(event)](connection, event, sequence)
    await audit_trail.record(connection, event, sequence)


def apply_to_rows(rows: BatchRows, event: Event, sequence: int) -> None:
    """Any other event (one without an applier changes nothing), and its row of the audit trail."""
    applier = BATCHED_APPLIERS.get(type(event))
    if applier is not None:
        applier(rows, event, sequence)
    if type(event) in audit_trail.AUDITED_TYPES:
        namespace, environment = audit_trail.scope_of(event, rows.build_scopes)
        rows.audit.append(audit_trail.audit_row(event, sequence, namespace, environment))


# --- what an event applied by SQL changes, for the caches of answers ------------------------------
# (Batched events report what they changed from their rows: ``BatchRows.change``.)

# Events whose appliers change exactly the build they name (and what lists it).
CHANGE_ONE_BUILD = (
    BuildProgress, BuildCancelRequested, BuildSolved, BuildBuilt, ArtifactReady, ArtifactFailed, BuildCompleted,
    BuildFailed, BuildCanceled, BuildDeleteRequested, BuildDeleted, BuildArchiveRequested, BuildArchived,
    BuildRehydrationRequested, BuildRehydrated,
)
# Events whose appliers change nothing any cached answer shows.
CHANGE_NO_ANSWER = (WebhookEvent, ProjectionEventSkipped)
CHANGE_ACCESS = (NamespaceCreated, NamespaceUpdated, NamespaceRoleMappingChanged)


def change_of(event: Event) -> ReadModelChange:
    """What ``event``'s SQL applier may change. An event type not named here may change anything
    (so a new applier is safe before it is listed)."""
    if isinstance(event, CHANGE_ONE_BUILD):
        return ReadModelChange(builds=frozenset({build_id_of(event) or 0}), listings=True)
    if isinstance(event, BuildUsed):
        return ReadModelChange(builds=frozenset({event.build_id}))
    if isinstance(event, CHANGE_ACCESS):
        return ReadModelChange(listings=True, access=True)
    if isinstance(event, CHANGE_NO_ANSWER):
        return NOTHING
    if isinstance(event, SettingsChanged):
        return ReadModelChange(listings=True)
    return EVERYTHING
