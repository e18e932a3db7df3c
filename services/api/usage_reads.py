"""Queries on ``build_usage``: how each build, and each environment's builds, were used."""

from __future__ import annotations

from typing import Any

import asyncpg

USAGE_COLUMNS = """COALESCE(u.pulls, 0) AS pulls, COALESCE(u.downloads, 0) AS downloads,
       COALESCE(u.activations, 0) AS activations, u.first_used_at, u.last_used_at"""


def usage_document(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "build_id": row["build_id"],
        "pulls": row["pulls"],
        "downloads": row["downloads"],
        "activations": row["activations"],
        "first_used_at": row["first_used_at"],
        "last_used_at": row["last_used_at"],
    }


async def build_usage(pool: asyncpg.Pool, build_id: int) -> dict[str, Any]:
    row = await pool.fetchrow(
        f"SELECT b.id AS build_id, {USAGE_COLUMNS} FROM build b LEFT JOIN build_usage u ON u.build_id = b.id WHERE b.id = $1",
        build_id,
    )
    return usage_document(row)


async def environment_usage(pool: asyncpg.Pool, environment_id: int) -> dict[str, Any]:
    """Totals over the environment's builds (deleted ones too: their use happened), and each build's."""
    rows = await pool.fetch(
        f"""SELECT b.id AS build_id, {USAGE_COLUMNS} FROM build b LEFT JOIN build_usage u ON u.build_id = b.id
            WHERE b.environment_id = $1 ORDER BY b.id""",
        environment_id,
    )
    builds = [usage_document(row) for row in rows]
    used = [build["last_used_at"] for build in builds if build["last_used_at"] is not None]
    return {
        "pulls": sum(build["pulls"] for build in builds),
        "downloads": sum(build["downloads"] for build in builds),
        "activations": sum(build["activations"] for build in builds),
        "last_used_at": max(used) if used else None,
        "builds": builds,
    }
