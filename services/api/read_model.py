"""Queries on the read model, shaped as conda-store serializes its objects."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

BUILD_COLUMNS = """b.id, b.environment_id, b.status, b.status_info, b.size, b.scheduled_on,
    b.started_on, b.ended_on, b.deleted_on, b.build_key, b.specification_id,
    e.name AS environment_name, n.name AS namespace_name"""


def namespace_document(row: asyncpg.Record, full: bool = True) -> dict[str, Any]:
    document: dict[str, Any] = {"id": row["id"], "name": row["name"]}
    if full:
        document["metadata_"] = json.loads(row["metadata"]) if row["metadata"] else None
        document["role_mappings"] = []
    return document


class ReadModel:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def namespace(self, name: str) -> asyncpg.Record | None:
        return await self.pool.fetchrow(
            "SELECT * FROM namespace WHERE name = $1 AND deleted_on IS NULL", name
        )

    async def namespaces(self) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            "SELECT * FROM namespace WHERE deleted_on IS NULL ORDER BY name, id"
        )

    async def environment(self, namespace: str, name: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(
            """SELECT e.*, n.id AS ns_id, n.name AS ns_name, n.metadata AS ns_metadata
               FROM environment e JOIN namespace n ON n.id = e.namespace_id
               WHERE n.name = $1 AND e.name = $2 AND n.deleted_on IS NULL""",
            namespace,
            name,
        )
        if row is None:
            return None
        return {
            "id": row["id"],
            "namespace": {
                "id": row["ns_id"],
                "name": row["ns_name"],
                "metadata_": json.loads(row["ns_metadata"]) if row["ns_metadata"] else None,
                "role_mappings": [],
            },
            "name": row["name"],
            "current_build_id": row["current_build_id"],
            "current_build": None,
            "description": row["description"],
        }

    async def build_row(self, build_id: int) -> asyncpg.Record | None:
        return await self.pool.fetchrow(
            f"""SELECT {BUILD_COLUMNS} FROM build b
                JOIN environment e ON e.id = b.environment_id
                JOIN namespace n ON n.id = e.namespace_id WHERE b.id = $1""",
            build_id,
        )

    async def build(self, build_id: int) -> dict[str, Any] | None:
        row = await self.build_row(build_id)
        if row is None:
            return None
        specification = await self.pool.fetchrow(
            "SELECT * FROM specification WHERE id = $1", row["specification_id"]
        )
        artifacts = await self.pool.fetch(
            "SELECT id, artifact_type, key FROM build_artifact WHERE build_id = $1 ORDER BY id",
            build_id,
        )
        return {
            "id": row["id"],
            "environment_id": row["environment_id"],
            "specification": {
                "id": specification["id"],
                "name": specification["name"],
                "spec": json.loads(specification["spec"]),
                "sha256": specification["sha256"],
                "created_on": specification["created_on"],
            },
            "packages": None,
            "status": row["status"],
            "status_info": row["status_info"],
            "size": row["size"],
            "scheduled_on": row["scheduled_on"],
            "started_on": row["started_on"],
            "ended_on": row["ended_on"],
            "build_artifacts": [dict(artifact) for artifact in artifacts],
        }

    async def artifact(self, build_id: int, kind: str) -> asyncpg.Record | None:
        return await self.pool.fetchrow(
            "SELECT * FROM build_artifact WHERE build_id = $1 AND artifact_type = $2", build_id, kind
        )

    async def artifact_by_key(self, key: str) -> asyncpg.Record | None:
        return await self.pool.fetchrow("SELECT * FROM build_artifact WHERE key = $1 LIMIT 1", key)

    async def progress_lines(self, build_id: int) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            "SELECT * FROM build_progress WHERE build_id = $1 ORDER BY sequence", build_id
        )
