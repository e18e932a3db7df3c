"""What the registry serves, read from the API's read model (PostgreSQL, read-only): the fold of
the log that every reader shares, so no rule of which tag names which build exists twice.

Tags, as conda-store names them: ``latest`` (the environment's current build), a build key, or a
build id — of a build of that environment. A deleted build (unless its deletion kept the image)
has no tags; a deleted environment or namespace has no repository until a build brings it back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import asyncpg

from envstore.common.artifact_kinds import ArtifactKind
from envstore.common.events import BlobRef

LATEST = "latest"
IMAGE = str(ArtifactKind.DOCKER_MANIFEST)
TERMINAL = ("COMPLETED", "FAILED", "CANCELED")

_BUILD_COLUMNS = f"""b.id, b.build_key, b.status, b.status_info, b.artifacts_wanted,
       (b.deleted_on IS NOT NULL AND NOT COALESCE(b.kept_artifacts ? '{IMAGE}', false)) AS deleted,
       b.lock_digest, b.archive_generation, b.rehydration_attempt, b.archive_freed_on IS NOT NULL AS archive_freed,
       (b.archived_on IS NOT NULL AND COALESCE(b.archived_kinds ? '{IMAGE}', false)) AS archived,
       b.rehydration_state, b.rehydration_info, b.archived_kinds, a.digest, a.size, a.content_type, e.name AS environment, n.name AS namespace"""
_BUILD_FROM = f"""FROM build b JOIN environment e ON e.id = b.environment_id JOIN namespace n ON n.id = e.namespace_id
     LEFT JOIN build_artifact a ON a.build_id = b.id AND a.artifact_type = '{IMAGE}'"""


@dataclass(frozen=True)
class BuildImage:
    """One build as the registry sees it: what it was asked for and how far it got."""

    build_id: int
    namespace: str
    environment: str
    build_key: str
    wants_image: bool
    status: str
    manifest: BlobRef | None
    manifest_type: str
    failure: str | None  # why it failed or was canceled, for users
    deleted: bool
    lock_digest: str | None = None
    # Archived (its image freed): a pull asks for its rehydration and waits for it.
    archived: bool = False
    archive_generation: int = 0
    rehydration_attempt: int = 0
    archive_freed: bool = False
    archived_kinds: tuple[str, ...] = ()
    rehydration_failure: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    @property
    def has_image(self) -> bool:
        return self.manifest is not None and not self.deleted

    @property
    def settled(self) -> bool:
        if self.archived and not self.deleted:
            return self.rehydration_failure is not None
        return self.has_image or self.deleted or self.finished


@dataclass(frozen=True)
class Repository:
    namespace: str
    environment: str
    environment_id: int
    current_build_id: int | None

    @property
    def name(self) -> str:
        return f"{self.namespace}/{self.environment}"


def _build_image(row: asyncpg.Record) -> BuildImage:
    wanted = json.loads(row["artifacts_wanted"]) if isinstance(row["artifacts_wanted"], str) else row["artifacts_wanted"]
    manifest = BlobRef(digest=row["digest"], size=row["size"]) if row["digest"] is not None else None
    return BuildImage(
        build_id=row["id"],
        namespace=row["namespace"],
        environment=row["environment"],
        build_key=row["build_key"],
        wants_image=IMAGE in wanted,
        status=row["status"],
        manifest=manifest,
        manifest_type=row["content_type"] or "",
        failure=row["status_info"] if row["status"] in ("FAILED", "CANCELED") else None,
        deleted=row["deleted"],
        lock_digest=row["lock_digest"],
        archived=row["archived"],
        archive_generation=row["archive_generation"],
        rehydration_attempt=row["rehydration_attempt"],
        archive_freed=row["archive_freed"],
        archived_kinds=tuple(json.loads(row["archived_kinds"]) if isinstance(row["archived_kinds"], str) else row["archived_kinds"] or ()),
        rehydration_failure=row["rehydration_info"] if row["rehydration_state"] == "FAILED" else None,
    )


class Catalog:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def repository(self, namespace: str, environment: str) -> Repository | None:
        row = await self.pool.fetchrow(
            """SELECT e.id, e.current_build_id FROM environment e JOIN namespace n ON n.id = e.namespace_id
               WHERE n.name = $1 AND e.name = $2 AND e.deleted_on IS NULL AND n.deleted_on IS NULL""",
            namespace,
            environment,
        )
        if row is None:
            return None
        return Repository(namespace, environment, row["id"], row["current_build_id"])

    async def namespace_exists(self, namespace: str) -> bool:
        return await self.pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM namespace WHERE name = $1 AND deleted_on IS NULL)", namespace
        )

    async def repositories_with_images(self) -> list[str]:
        rows = await self.pool.fetch(
            f"""SELECT DISTINCT n.name AS namespace, e.name AS environment {_BUILD_FROM}
                WHERE a.id IS NOT NULL AND e.deleted_on IS NULL AND n.deleted_on IS NULL
                  AND (b.deleted_on IS NULL OR COALESCE(b.kept_artifacts ? '{IMAGE}', false))"""
        )
        return sorted(f"{row['namespace']}/{row['environment']}" for row in rows)

    async def build(self, build_id: int) -> BuildImage | None:
        row = await self.pool.fetchrow(f"SELECT {_BUILD_COLUMNS} {_BUILD_FROM} WHERE b.id = $1", build_id)
        return None if row is None else _build_image(row)

    async def build_for(self, repository: Repository, tag: str) -> BuildImage | None:
        """The build a tag names in this repository (its image may not exist yet)."""
        if tag == LATEST:
            if repository.current_build_id is None:
                return None
            row = await self.pool.fetchrow(
                f"SELECT {_BUILD_COLUMNS} {_BUILD_FROM} WHERE b.id = $1 AND b.environment_id = $2",
                repository.current_build_id,
                repository.environment_id,
            )
        elif tag.isascii() and tag.isdigit() and len(tag) <= 18:
            row = await self.pool.fetchrow(
                f"SELECT {_BUILD_COLUMNS} {_BUILD_FROM} WHERE b.id = $1 AND b.environment_id = $2",
                int(tag),
                repository.environment_id,
            )
        else:
            row = await self.pool.fetchrow(
                f"SELECT {_BUILD_COLUMNS} {_BUILD_FROM} WHERE b.build_key = $1 AND b.environment_id = $2",
                tag,
                repository.environment_id,
            )
        if row is None:
            return None
        build = _build_image(row)
        return None if build.deleted else build

    async def images(self, repository: Repository) -> list[BuildImage]:
        """The builds of this repository that have an image."""
        rows = await self.pool.fetch(
            f"SELECT {_BUILD_COLUMNS} {_BUILD_FROM} WHERE b.environment_id = $1 AND a.id IS NOT NULL ORDER BY b.id",
            repository.environment_id,
        )
        return [build for build in map(_build_image, rows) if build.has_image]

    async def tags(self, repository: Repository) -> list[str]:
        """Every tag with an image, in lexical order (as the distribution spec lists them)."""
        images = await self.images(repository)
        tags = {tag for build in images for tag in (build.build_key, str(build.build_id))}
        if any(build.build_id == repository.current_build_id for build in images):
            tags.add(LATEST)
        return sorted(tags)

    async def checkpoint(self) -> int:
        return await self.pool.fetchval("SELECT last_sequence FROM projection_checkpoint WHERE name = 'read_model'") or 0
