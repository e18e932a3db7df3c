"""The rules every reader of the read model applies the same way — the API and the registry alike —
so that none exists twice: whose role mappings grant a caller what, and which stored settings apply
to a namespace or environment. Queries run on the PostgreSQL projection the API's projector keeps.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from envstore.common.permissions import Principal
from envstore.common.settings import GLOBAL_ONLY_SETTINGS, EnvstoreSettings


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
