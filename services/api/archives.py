"""Archiving a build and asking for its rehydration: the decisions the routes and the retention
policy share. An archived build keeps its spec, lock, YAML and logs; its prefix, tarball,
installer and image go, and are made again from the lock when asked for."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from envstore.api.context import ApiContext
from envstore.api.envelopes import ApiError
from envstore.common.artifact_kinds import ArtifactKind
from envstore.common.events import BuildArchiveRequested, BuildRehydrationRequested, environment_tree

# What an archive frees (the rest stays: LOGS, LOCKFILE, YAML, and the lock itself).
ARCHIVABLE_KINDS = (ArtifactKind.CONDA_PACK, ArtifactKind.CONSTRUCTOR_INSTALLER, ArtifactKind.DOCKER_MANIFEST)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def archive_state(row: asyncpg.Record) -> str:
    """AVAILABLE, ARCHIVING (its files are being freed), ARCHIVED, REHYDRATING or FAILED (the
    last rehydration could not be made; asking again retries with the next archive)."""
    if row["archived_on"] is None:
        return "AVAILABLE"
    if row["rehydration_state"] is not None:
        return row["rehydration_state"]
    return "ARCHIVED" if row["archive_freed_on"] is not None else "ARCHIVING"


def archive_document(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "build_id": row["id"],
        "state": archive_state(row),
        "archived_on": row["archived_on"],
        "archived_artifacts": _json(row["archived_kinds"]) or [],
        "rehydration_info": row["rehydration_info"],
        "rehydration_seconds": row["rehydration_seconds"],
    }


def is_archived(row: asyncpg.Record, kind: str | None = None) -> bool:
    if row["archived_on"] is None:
        return False
    return kind is None or kind in (_json(row["archived_kinds"]) or [])


async def archive_build(context: ApiContext, build_id: int, principal: str, reason: str) -> list[str]:
    """Archive one build (a command on its environment); the kinds it frees."""
    first = await context.read_model.build_row(build_id)
    if first is None:
        raise ApiError(404, "build id does not exist")
    freed: list[str] = []

    async def decide() -> BuildArchiveRequested:
        row = await context.read_model.build_row(build_id)
        if row is None:
            raise ApiError(404, "build id does not exist")
        if row["status"] != "COMPLETED" or row["deleted_on"] is not None:
            raise ApiError(409, f"build {build_id} is {row['status'] if row['deleted_on'] is None else 'deleted'}; only completed builds are archived")
        if row["archived_on"] is not None:
            raise ApiError(409, f"build {build_id} is archived already")
        current = await context.read_model.pool.fetchval(
            "SELECT current_build_id FROM environment WHERE id = $1", row["environment_id"]
        )
        if current == build_id:
            raise ApiError(409, f"build {build_id} is its environment's current build, which is never archived; make another build current first")
        present = {
            artifact["artifact_type"]
            for artifact in await context.read_model.pool.fetch("SELECT artifact_type FROM build_artifact WHERE build_id = $1", build_id)
        }
        freed[:] = [str(kind) for kind in ARCHIVABLE_KINDS if kind in present]
        return BuildArchiveRequested(
            namespace=row["namespace_name"],
            environment=row["environment_name"],
            build_id=build_id,
            build_key=row["build_key"],
            generation=row["archive_generation"] + 1,
            kinds=list(freed),
            reason=reason,
        )

    await context.command(
        environment_tree(first["namespace_name"], first["environment_name"]),
        decide,
        f"archive:{build_id}:{first['archive_generation'] + 1}",
        principal,
    )
    return freed


async def request_rehydration(context: ApiContext, row: asyncpg.Record, principal: str, retry_failed: bool = False) -> None:
    """Ask for an archived build's rehydration (once per archive: later asks add nothing; a failed
    one is asked again, as its next attempt, only when ``retry_failed``). Not before the builder
    freed its files, or it could free the rehydrated ones."""
    state = archive_state(row)
    if state == "FAILED" and retry_failed:
        attempt = row["rehydration_attempt"] + 1
    elif state == "ARCHIVED":
        attempt = row["rehydration_attempt"]
    else:
        return
    await context.bus.publish_once(
        BuildRehydrationRequested(
            build_id=row["id"], generation=row["archive_generation"], attempt=attempt, kinds=_json(row["archived_kinds"]) or []
        ),
        message_id=f"rehydrate:{row['id']}:{row['archive_generation']}:{attempt}",
    )
    await context.projector.wait_for(await context.bus.last_sequence(), context.settings.projection_wait_seconds)
