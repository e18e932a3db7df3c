"""The PostgreSQL read model: connection pool, schema, and dropping it for a rebuild."""

from __future__ import annotations

import asyncio
from importlib import resources

import asyncpg

from envstore.common.readiness import ReadinessCheck

READ_MODEL_TABLES = (
    "projection_skipped_event",
    "webhook_delivery_attempt",
    "webhook",
    "setting_override",
    "build_package",
    "conda_package_build",
    "conda_package",
    "conda_channel",
    "namespace_role_mapping_v2",
    "namespace_role_mapping",
    "build_progress",
    "build_artifact",
    "build",
    "environment",
    "specification",
    "namespace",
    "projection_checkpoint",
)


def schema_sql() -> str:
    return resources.files("envstore.api").joinpath("schema.sql").read_text()


def database_check(pool: asyncpg.Pool) -> ReadinessCheck:
    """Ready when the read model's database answers a query."""

    async def answers() -> str | None:
        await pool.fetchval("SELECT 1")
        return None

    return answers


async def create_pool(dsn: str, attempts: int = 50) -> asyncpg.Pool:
    """A pool, waiting (bounded) for a database that is still starting."""
    for attempt in range(attempts):
        try:
            return await asyncpg.create_pool(dsn, min_size=1, max_size=10)
        except (OSError, asyncpg.CannotConnectNowError, asyncpg.PostgresConnectionError):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.2)
    raise AssertionError("unreachable")


async def ensure_schema(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as connection:
        # One migrator at a time when several API replicas start together.
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock(4242001)")
            await connection.execute(schema_sql())


async def drop_read_model(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as connection:
        await connection.execute(
            "DROP TABLE IF EXISTS " + ", ".join(READ_MODEL_TABLES) + " CASCADE"
        )
