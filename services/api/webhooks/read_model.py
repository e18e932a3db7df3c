"""Reading webhooks and their delivery log from the read model."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from envstore.api.read_model import Page

WEBHOOK_COLUMNS = """id, url, namespace, environment, build_id, event_types, description, registered_by,
created_on, updated_on, secret_changed_on, last_event_id, last_attempt, last_succeeded, last_status_code,
last_error, last_attempt_on, delivered_count, failed_count"""


def webhook_document(row: asyncpg.Record) -> dict[str, Any]:
    document = dict(row)
    document["event_types"] = json.loads(row["event_types"])
    return document


def attempt_document(row: asyncpg.Record) -> dict[str, Any]:
    return dict(row)


class WebhookReadModel:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def webhook(self, webhook_id: int) -> asyncpg.Record | None:
        return await self.pool.fetchrow(
            f"SELECT {WEBHOOK_COLUMNS} FROM webhook WHERE id = $1 AND deleted_on IS NULL", webhook_id
        )

    async def webhooks(self) -> list[asyncpg.Record]:
        return await self.pool.fetch(f"SELECT {WEBHOOK_COLUMNS} FROM webhook WHERE deleted_on IS NULL ORDER BY id")

    async def attempts(self, webhook_id: int, event_id: int | None, page: Page) -> tuple[list[asyncpg.Record], int]:
        condition = "webhook_id = $1" + (" AND event_id = $2" if event_id is not None else "")
        parameters: list[object] = [webhook_id] + ([event_id] if event_id is not None else [])
        order = "DESC" if page.descending else "ASC"
        async with self.pool.acquire() as connection:
            count = await connection.fetchval(
                f"SELECT count(*) FROM webhook_delivery_attempt WHERE {condition}", *parameters
            )
            rows = await connection.fetch(
                f"""SELECT sequence, event_id, event_type, attempt, succeeded, status_code, error, duration_seconds,
                           final, retry_in_seconds, attempted_on
                    FROM webhook_delivery_attempt WHERE {condition}
                    ORDER BY sequence {order} LIMIT {page.size} OFFSET {page.offset}""",
                *parameters,
            )
        return list(rows), count
