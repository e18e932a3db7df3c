"""Planner statistics are refreshed as the log doubles — counted from what the read model already
holds, so a restarted API does not re-analyze big tables on its first live events."""

from __future__ import annotations

import asyncio

from envstore.api.read_model_rows import StatisticsUpkeep


class RecordingPool:
    """The pool's one call the upkeep makes, recorded (PostgreSQL itself is not the unit here)."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    async def execute(self, statement: str) -> None:
        self.statements.append(statement)


async def analyzed_after(upkeep: StatisticsUpkeep, pool: RecordingPool, events: int, per_batch: int = 500) -> int:
    for _ in range(events // per_batch):
        upkeep.applied(pool, per_batch)  # type: ignore[arg-type]
        await asyncio.sleep(0)  # let a started ANALYZE finish before the next batch
    await upkeep.stop()
    return len(pool.statements)


async def test_a_replay_from_empty_is_analyzed_as_it_doubles() -> None:
    pool = RecordingPool()
    # 1,000, 2,000, 4,000, 8,000 events
    assert await analyzed_after(StatisticsUpkeep(), pool, 10_000) == 4
    assert all(statement.startswith("ANALYZE namespace, environment") for statement in pool.statements)


async def test_a_projection_resumed_on_a_big_read_model_is_not_analyzed_again_until_the_log_doubles() -> None:
    upkeep, pool = StatisticsUpkeep(), RecordingPool()
    upkeep.resume_at(250_000)
    assert await analyzed_after(upkeep, pool, 30_000) == 0

    upkeep, pool = StatisticsUpkeep(), RecordingPool()
    upkeep.resume_at(250_000)
    assert await analyzed_after(upkeep, pool, 260_000) == 1
