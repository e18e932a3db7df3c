"""The rules every reader of the read model applies the same way — the API and the registry alike —
so that none exists twice: whose role mappings grant a caller what, and which stored settings apply
to a namespace or environment. Queries run on the PostgreSQL projection the API's projector keeps.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg

from envstore.common.events import DoomedBuild, EnvironmentDeleted
from envstore.common.permissions import Principal
from envstore.common.settings import GLOBAL_ONLY_SETTINGS, EnvstoreSettings


DATABASE_ATTEMPTS = 50


async def open_read_model(dsn: str) -> asyncpg.Pool:
    """A pool on the read model, waiting (bounded) for a database that is still starting."""
    for attempt in range(DATABASE_ATTEMPTS):
        try:
            return await asyncpg.create_pool(dsn, min_size=1, max_size=10)
        except (OSError, asyncpg.CannotConnectNowError, asyncpg.PostgresConnectionError):
            if attempt == DATABASE_ATTEMPTS - 1:
                raise
            await asyncio.sleep(0.2)
    raise AssertionError("unreachable")


async def role_mapping_bindings(pool: asyncpg.Pool, primary_namespace: str, version: int) -> dict[str, list[str]]:
    """Role bindings granted through role mappings to a caller of ``primary_namespace``.

    - v1 (``namespace.updated`` with ``role_mappings``): rows attached to a namespace; a caller
      whose primary namespace is that namespace is granted ``role`` on each row's ARN.
    - v2 (``namespace.role_mapping_changed``): namespace N grants ``role`` to namespace O; a caller
      whose primary namespace is O is granted ``role`` on ``N/*``.
    Deleted namespaces grant nothing."""
    bindings: dict[str, list[str]] = {}
    if version == 2:
        rows = await pool.fetch(
            """SELECT n.name AS namespace, m.role FROM namespace_role_mapping_v2 m
               JOIN namespace n ON n.id = m.namespace_id JOIN namespace o ON o.id = m.other_namespace_id
               WHERE o.name = $1 AND n.deleted_on IS NULL ORDER BY m.id""",
            primary_namespace,
        )
        for row in rows:
            bindings.setdefault(f"{row['namespace']}/*", []).append(row["role"])
        return bindings
    rows = await pool.fetch(
        """SELECT m.entity, m.role FROM namespace_role_mapping m JOIN namespace n ON n.id = m.namespace_id
           WHERE n.name = $1 AND n.deleted_on IS NULL ORDER BY m.id""",
        primary_namespace,
    )
    for row in rows:
        bindings.setdefault(row["entity"], []).append(row["role"])
    return bindings


async def with_role_mappings(pool: asyncpg.Pool, principal: Principal, version: int) -> Principal:
    """A token's principal with what role mappings grant its namespace (defaults ← token ← role
    mappings)."""
    if not principal.authenticated:
        return principal
    bindings = await role_mapping_bindings(pool, principal.primary_namespace, version)
    return principal.with_database_bindings(bindings) if bindings else principal


async def setting_overrides(pool: asyncpg.Pool, scopes: list[str]) -> list[dict[str, Any]]:
    rows = await pool.fetch("SELECT scope, data FROM setting_override WHERE scope = ANY($1::text[])", scopes)
    by_scope = {row["scope"]: json.loads(row["data"]) if isinstance(row["data"], str) else row["data"] for row in rows}
    return [by_scope.get(scope, {}) for scope in scopes]


async def effective_settings(
    pool: asyncpg.Pool, settings: EnvstoreSettings, namespace: str | None = None, environment: str | None = None
) -> EnvstoreSettings:
    """Deployment settings, overridden by stored global, namespace and environment values
    (global-only keys are taken from the global level only; lists replace, not merge)."""
    scopes = [""]
    if namespace:
        scopes.append(namespace)
        if environment:
            scopes.append(f"{namespace}/{environment}")
    overrides: dict[str, Any] = {}
    for scope, values in zip(scopes, await setting_overrides(pool, scopes)):
        for key, value in values.items():
            if scope and key in GLOBAL_ONLY_SETTINGS:
                continue
            overrides[key] = value
    if not overrides:
        return settings
    return settings.model_validate({**settings.model_dump(), **overrides})


# --- positions and environments, for processes that publish commands decided on the read model ---


async def read_model_checkpoint(pool: asyncpg.Pool) -> int:
    """The stream sequence of the last event the read model applied."""
    return await pool.fetchval("SELECT last_sequence FROM projection_checkpoint WHERE name = 'read_model'") or 0


async def aggregate_position(pool: asyncpg.Pool, subjects: str) -> int:
    """The stream sequence of the last event the read model applied on an aggregate's subjects
    (what a command decided on that state expects; 0: none)."""
    return await pool.fetchval("SELECT last_sequence FROM aggregate_position WHERE subjects = $1", subjects) or 0


async def latest_specification_sha256(pool: asyncpg.Pool, namespace: str, environment: str) -> str | None:
    """The specification hash of an environment's most recently submitted build, whatever became
    of it; None when the environment does not exist (or was deleted)."""
    return await pool.fetchval(
        """SELECT s.sha256 FROM build b JOIN environment e ON e.id = b.environment_id
               JOIN namespace n ON n.id = e.namespace_id JOIN specification s ON s.id = b.specification_id
           WHERE n.name = $1 AND e.name = $2 AND n.deleted_on IS NULL AND e.deleted_on IS NULL
           ORDER BY b.submission_sequence DESC LIMIT 1""",
        namespace,
        environment,
    )


async def environment_deletion(pool: asyncpg.Pool, namespace: str, environment: str) -> EnvironmentDeleted | None:
    """The deletion of an environment as the read model stands: every build with something left to
    remove (not deleted, or deleted keeping some artifacts). None when there is no such environment."""
    environment_id = await pool.fetchval(
        """SELECT e.id FROM environment e JOIN namespace n ON n.id = e.namespace_id
           WHERE n.name = $1 AND e.name = $2 AND n.deleted_on IS NULL AND e.deleted_on IS NULL""",
        namespace,
        environment,
    )
    if environment_id is None:
        return None
    rows = await pool.fetch(
        """SELECT b.id, b.build_key FROM build b WHERE b.environment_id = $1
             AND (b.deleted_on IS NULL OR COALESCE(jsonb_array_length(b.kept_artifacts), 0) > 0)
           ORDER BY b.id""",
        environment_id,
    )
    builds = [DoomedBuild(build_id=row["id"], namespace=namespace, build_key=row["build_key"]) for row in rows]
    return EnvironmentDeleted(namespace=namespace, environment=environment, builds=builds)


async def environments_of_namespace(pool: asyncpg.Pool, namespace: str) -> list[str]:
    """The names of a namespace's environments (not deleted)."""
    rows = await pool.fetch(
        """SELECT e.name FROM environment e JOIN namespace n ON n.id = e.namespace_id
           WHERE n.name = $1 AND n.deleted_on IS NULL AND e.deleted_on IS NULL ORDER BY e.name""",
        namespace,
    )
    return [row["name"] for row in rows]
