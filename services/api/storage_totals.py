"""Storage per namespace, from the read model: its artifacts' blobs (each distinct blob once per
namespace; an image counts its manifest, whose layers may be shared), its installed prefixes
(builds neither deleted nor archived), and how many builds are archived."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class NamespaceStorage:
    namespace: str
    artifact_bytes: int
    prefix_bytes: int
    builds: int
    archived_builds: int

    def document(self) -> dict[str, object]:
        return {
            "namespace": self.namespace,
            "artifact_bytes": self.artifact_bytes,
            "prefix_bytes": self.prefix_bytes,
            "builds": self.builds,
            "archived_builds": self.archived_builds,
        }


async def storage_by_namespace(pool: asyncpg.Pool) -> list[NamespaceStorage]:
    rows = await pool.fetch(
        """WITH artifacts AS (
               SELECT n.name AS namespace, SUM(blob.size) AS bytes FROM (
                   SELECT DISTINCT e.namespace_id, a.digest, a.size
                   FROM (SELECT build_id, digest, size FROM build_artifact
                         UNION ALL SELECT build_id, digest, size FROM build_platform_artifact) a
                   JOIN build b ON b.id = a.build_id JOIN environment e ON e.id = b.environment_id
               ) blob JOIN namespace n ON n.id = blob.namespace_id GROUP BY n.name
           ), builds AS (
               SELECT n.name AS namespace,
                      SUM(CASE WHEN b.deleted_on IS NULL AND b.archived_on IS NULL THEN b.size ELSE 0 END) AS prefix_bytes,
                      COUNT(*) FILTER (WHERE b.deleted_on IS NULL) AS builds,
                      COUNT(*) FILTER (WHERE b.deleted_on IS NULL AND b.archived_on IS NOT NULL) AS archived
               FROM build b JOIN environment e ON e.id = b.environment_id JOIN namespace n ON n.id = e.namespace_id
               GROUP BY n.name
           )
           SELECT n.name, COALESCE(a.bytes, 0) AS artifact_bytes, COALESCE(b.prefix_bytes, 0) AS prefix_bytes,
                  COALESCE(b.builds, 0) AS builds, COALESCE(b.archived, 0) AS archived
           FROM namespace n LEFT JOIN artifacts a ON a.namespace = n.name LEFT JOIN builds b ON b.namespace = n.name
           WHERE n.deleted_on IS NULL ORDER BY n.name"""
    )
    return [
        NamespaceStorage(row["name"], int(row["artifact_bytes"]), int(row["prefix_bytes"]), int(row["builds"]), int(row["archived"]))
        for row in rows
    ]
