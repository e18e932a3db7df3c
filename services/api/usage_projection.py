"""How ``build.used`` changes the read model: counts added to the build's row of ``build_usage``."""

from __future__ import annotations


import asyncpg

from envstore.api.naive_utc import utc
from envstore.common.events import BuildUsed


async def build_used(connection: asyncpg.Connection, event: BuildUsed, sequence: int) -> None:
    await connection.execute(
        """INSERT INTO build_usage (build_id, pulls, downloads, activations, first_used_at, last_used_at)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (build_id) DO UPDATE SET
               pulls = build_usage.pulls + EXCLUDED.pulls,
               downloads = build_usage.downloads + EXCLUDED.downloads,
               activations = build_usage.activations + EXCLUDED.activations,
               first_used_at = LEAST(build_usage.first_used_at, EXCLUDED.first_used_at),
               last_used_at = GREATEST(build_usage.last_used_at, EXCLUDED.last_used_at)""",
        event.build_id,
        event.pulls,
        event.downloads,
        event.activations,
        utc(event.first_used_at),
        utc(event.last_used_at),
    )


USAGE_APPLIERS = {BuildUsed: build_used}
