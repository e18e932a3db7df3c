"""The PostgreSQL read model: connection pool, schema, and dropping it for a rebuild."""

from __future__ import annotations

import asyncio
from importlib import resources

import asyncpg

from envstore.common.readiness import ReadinessCheck

# Raise when the read model's tables or the meaning of an event in them change: a read model of
# another version is dropped and replayed from the stream at start (the log is the truth).
SCHEMA_VERSION = 8

READ_MODEL_TABLES = (
    "build_usage",
    "audit_event",
    "projection_skipped_event",
    "projection_dead_letter",
    "aggregate_position",
    "projection_schema",
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
    "build_platform_artifact",
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


async def _keep_session(connection: asyncpg.Connection) -> None:
    """No reset query when a reading connection goes back to its pool (see ``create_pool``)."""


async def create_pool(dsn: str, attempts: int = 50, *, for_reads: bool = False, max_size: int = 10) -> asyncpg.Pool:
    """A pool, waiting (bounded) for a database that is still starting.

    ``for_reads``: the connections only run queries (and transactions, whose locks end with them),
    never LISTEN, session locks or settings, so nothing is left to reset when one is released; by
    default asyncpg sends a reset query then, which doubled the round trips of every request."""
    for attempt in range(attempts):
        try:
            return await asyncpg.create_pool(
                dsn, min_size=1, max_size=max_size, reset=_keep_session if for_reads else None
            )
        except (OSError, asyncpg.CannotConnectNowError, asyncpg.PostgresConnectionError):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.2)
    raise AssertionError("unreachable")


async def ensure_schema(pool: asyncpg.Pool) -> bool:
    """The read model's tables, at this release's schema version; True if an older read model was
    dropped (the projector then replays the stream into the new one)."""
    async with pool.acquire() as connection:
        # One migrator at a time when several API replicas start together.
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock(4242001)")
            existing = await connection.fetchval("SELECT to_regclass('projection_checkpoint') IS NOT NULL")
            version = None
            if existing and await connection.fetchval("SELECT to_regclass('projection_schema') IS NOT NULL"):
                version = await connection.fetchval("SELECT max(version) FROM projection_schema")
            dropped = bool(existing) and version != SCHEMA_VERSION
            if dropped:
                await connection.execute("DROP TABLE IF EXISTS " + ", ".join(READ_MODEL_TABLES) + " CASCADE")
            await _create_tables(connection)
            return dropped


async def _create_tables(connection: asyncpg.Connection) -> None:
    await connection.execute(schema_sql())
    if await connection.fetchval("SELECT count(*) FROM projection_schema") == 0:
        await connection.execute("INSERT INTO projection_schema (version) VALUES ($1)", SCHEMA_VERSION)


async def recreate_read_model(pool: asyncpg.Pool) -> None:
    """An empty read model (for a replay of the whole stream)."""
    async with pool.acquire() as connection:
        async with connection.transaction():
            # Hold the schema lock so a running API does not recreate tables half-way.
            await connection.execute("SELECT pg_advisory_xact_lock(4242001)")
            await connection.execute("DROP TABLE IF EXISTS " + ", ".join(READ_MODEL_TABLES) + " CASCADE")
            await _create_tables(connection)
