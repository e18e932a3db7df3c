"""A build's lock, read from storage by the digest the read model keeps (``build.solved``)."""

from __future__ import annotations

import asyncpg

from envstore.api.envelopes import ApiError
from envstore.common.lock import Lock
from envstore.common.storage import Storage


async def lock_of(storage: Storage, row: asyncpg.Record) -> Lock:
    """The lock of the build ``row``, or a 409 saying why it has none."""
    if row["lock_digest"] is None:
        raise ApiError(
            409,
            f"build {row['id']} has no lock (status {row['status']}): it was not solved; "
            "ask for builds that got past their solve",
        )
    return Lock.decode(await storage.get_bytes(row["lock_digest"]))
