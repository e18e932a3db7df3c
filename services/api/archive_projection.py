"""How archiving and rehydration change the read model (each event in its own small function)."""

from __future__ import annotations

import json

import asyncpg

from envstore.api.naive_utc import utc
from envstore.common.events import BuildArchived, BuildArchiveRequested, BuildRehydrated, BuildRehydrationRequested


async def build_archive_requested(connection: asyncpg.Connection, event: BuildArchiveRequested, sequence: int) -> None:
    # The archived artifacts are gone for readers at once: asking for one rehydrates it.
    await connection.execute(
        "DELETE FROM build_artifact WHERE build_id = $1 AND artifact_type = ANY($2::text[])", event.build_id, list(event.kinds)
    )
    await connection.execute(
        """UPDATE build SET archived_on = $2, archive_generation = $3, archived_kinds = $4, archive_freed_on = NULL,
                            rehydration_state = NULL, rehydration_info = NULL, rehydration_attempt = 0
           WHERE id = $1""",
        event.build_id,
        utc(event.occurred_at),
        event.generation,
        json.dumps(list(event.kinds)),
    )


async def build_archived(connection: asyncpg.Connection, event: BuildArchived, sequence: int) -> None:
    await connection.execute(
        "UPDATE build SET archive_freed_on = $2 WHERE id = $1 AND archive_generation = $3",
        event.build_id,
        utc(event.occurred_at),
        event.generation,
    )


async def build_rehydration_requested(
    connection: asyncpg.Connection, event: BuildRehydrationRequested, sequence: int
) -> None:
    await connection.execute(
        """UPDATE build SET rehydration_state = 'REHYDRATING', rehydration_info = NULL, rehydration_attempt = $3
           WHERE id = $1 AND archive_generation = $2 AND archived_on IS NOT NULL""",
        event.build_id,
        event.generation,
        event.attempt,
    )


async def build_rehydrated(connection: asyncpg.Connection, event: BuildRehydrated, sequence: int) -> None:
    current = await connection.fetchrow(
        "SELECT archive_generation, rehydration_attempt FROM build WHERE id = $1 AND archived_on IS NOT NULL", event.build_id
    )
    if current is None or (current["archive_generation"], current["rehydration_attempt"]) != (event.generation, event.attempt):
        return
    if event.failed:
        await connection.execute(
            "UPDATE build SET rehydration_state = 'FAILED', rehydration_info = $2, rehydration_seconds = $3 WHERE id = $1",
            event.build_id,
            event.failed,
            event.seconds,
        )
        return
    for artifact in event.artifacts:
        next_id = await connection.fetchval("SELECT COALESCE(MAX(id), 0) + 1 FROM build_artifact")
        await connection.execute(
            """INSERT INTO build_artifact (id, build_id, artifact_type, key, digest, size, content_type)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
               ON CONFLICT (build_id, artifact_type) DO UPDATE SET key = EXCLUDED.key, digest = EXCLUDED.digest,
                   size = EXCLUDED.size, content_type = EXCLUDED.content_type""",
            next_id,
            event.build_id,
            artifact.kind,
            artifact.key,
            artifact.blob.digest,
            artifact.blob.size,
            artifact.content_type,
        )
    await connection.execute(
        """UPDATE build SET archived_on = NULL, archived_kinds = NULL, archive_freed_on = NULL,
                            rehydration_state = NULL, rehydration_info = NULL, rehydration_seconds = $2
           WHERE id = $1""",
        event.build_id,
        event.seconds,
    )


ARCHIVE_APPLIERS = {
    BuildArchiveRequested: build_archive_requested,
    BuildArchived: build_archived,
    BuildRehydrationRequested: build_rehydration_requested,
    BuildRehydrated: build_rehydrated,
}
