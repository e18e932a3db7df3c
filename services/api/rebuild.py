"""``envstore projection rebuild``: drop the read model and replay the whole stream into it."""

from __future__ import annotations

import asyncio

from envstore.api import database
from envstore.api.projector import Projector
from envstore.common.bus import EventBus
from envstore.common.settings import EnvstoreSettings


async def rebuild_projection(settings: EnvstoreSettings, timeout_seconds: float = 300) -> int:
    """Returns the sequence the rebuilt read model is at."""
    pool = await database.create_pool(settings.database_url)
    bus = await EventBus.connect(settings.nats_url, settings.nats_stream, name="projection-rebuild")
    try:
        async with pool.acquire() as connection:
            async with connection.transaction():
                # Hold the schema lock so a running API does not recreate tables half-way.
                await connection.execute("SELECT pg_advisory_xact_lock(4242001)")
                await connection.execute(
                    "DROP TABLE IF EXISTS " + ", ".join(database.READ_MODEL_TABLES) + " CASCADE"
                )
                await connection.execute(database.schema_sql())
        last = await bus.last_sequence()
        projector = Projector(pool, bus)
        running = asyncio.create_task(projector.run())
        try:
            if not await projector.wait_for(last, timeout_seconds):
                raise TimeoutError(f"replay did not reach sequence {last} in {timeout_seconds} s")
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        return last
    finally:
        await bus.close()
        await pool.close()
