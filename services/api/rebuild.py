"""``envstore projection rebuild``: drop the read model and replay the whole stream into it."""

from __future__ import annotations

import asyncio

import asyncpg

from envstore.api import database
from envstore.api.log_intake import IntakeOpener, configured_opener
from envstore.api.projector import BATCH_LIMIT, Projector
from envstore.common.bus_permissions import PROJECTION_REBUILD
from envstore.common.service_runtime import connect_bus
from envstore.common.transport import EventBus
from envstore.common.settings import EnvstoreSettings
from envstore.common.storage import Storage, open_storage
from envstore.common.task_cancellation import cancel_and_wait


async def rebuild_projection(
    settings: EnvstoreSettings, stall_seconds: float = 120, batch_limit: int = BATCH_LIMIT
) -> int:
    """Returns the sequence the rebuilt read model is at. Fails only if the replay stops moving
    for ``stall_seconds`` (a long history may take many minutes). ``batch_limit``: events per
    transaction at most."""
    pool = await database.create_pool(settings.database_url)
    bus = await connect_bus(settings, PROJECTION_REBUILD)
    try:
        async with open_storage(settings) as storage:
            intake = configured_opener(settings, bus, PROJECTION_REBUILD)
            return await _drop_and_replay(pool, bus, storage, stall_seconds, batch_limit, intake)
    finally:
        await bus.close()
        await pool.close()


async def _drop_and_replay(
    pool: asyncpg.Pool,
    bus: EventBus,
    storage: Storage,
    stall_seconds: float,
    batch_limit: int,
    intake: IntakeOpener,
) -> int:
    await database.recreate_read_model(pool)
    last = await bus.last_sequence()
    projector = Projector(pool, bus, storage, batch_limit, intake)
    running = asyncio.create_task(projector.run())
    try:
        reached = projector.applied_sequence
        while not await projector.wait_for(last, stall_seconds):
            if projector.applied_sequence == reached:
                raise TimeoutError(
                    f"replay stopped at sequence {reached} of {last} for {stall_seconds} s"
                )
            reached = projector.applied_sequence
    finally:
        await cancel_and_wait(running)
    return last
