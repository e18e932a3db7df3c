"""How webhook events change the read model: the webhooks (never their secrets) and their
delivery log. Applied by the projector in its transaction, like every other event."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from envstore.api.naive_utc import utc
from envstore.common.events import (
    Event,
    WebhookDeleted,
    WebhookDeliveryAttempted,
    WebhookRegistered,
    WebhookUpdated,
)


def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL: an event carrying one must not stop the projection."""
    return value.replace("\x00", "") if value is not None else None


def _types(event_types: list[str]) -> str:
    return json.dumps([_text(name) for name in event_types])


async def webhook_registered(connection: asyncpg.Connection, event: WebhookRegistered, sequence: int) -> None:
    await connection.execute(
        """INSERT INTO webhook (id, registered_sequence, url, namespace, environment, build_id, event_types,
                                description, registered_by, created_on)
           VALUES ($1, $10, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING""",
        event.webhook_id,
        _text(event.url),
        _text(event.namespace),
        _text(event.environment),
        event.build_id,
        _types(event.event_types),
        _text(event.description),
        _text(event.registered_by),
        utc(event.occurred_at),
        sequence,
    )


async def webhook_updated(connection: asyncpg.Connection, event: WebhookUpdated, sequence: int) -> None:
    await connection.execute(
        """UPDATE webhook SET url = $2, namespace = $3, environment = $4, build_id = $5, event_types = $6,
                              description = $7, updated_on = $8,
                              secret_changed_on = CASE WHEN $9 THEN $8 ELSE secret_changed_on END
           WHERE id = $1 AND deleted_on IS NULL""",
        event.webhook_id,
        _text(event.url),
        _text(event.namespace),
        _text(event.environment),
        event.build_id,
        _types(event.event_types),
        _text(event.description),
        utc(event.occurred_at),
        event.encrypted_secret is not None,
    )


async def webhook_deleted(connection: asyncpg.Connection, event: WebhookDeleted, sequence: int) -> None:
    await connection.execute(
        "UPDATE webhook SET deleted_on = COALESCE(deleted_on, $2) WHERE id = $1",
        event.webhook_id,
        utc(event.occurred_at),
    )


async def webhook_delivery_attempted(
    connection: asyncpg.Connection, event: WebhookDeliveryAttempted, sequence: int
) -> None:
    attempted_on = utc(event.occurred_at)
    await connection.execute(
        """INSERT INTO webhook_delivery_attempt (sequence, webhook_id, event_id, event_type, attempt, succeeded,
                                                 status_code, error, duration_seconds, final, retry_in_seconds,
                                                 attempted_on)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING""",
        sequence,
        event.webhook_id,
        event.event_id,
        _text(event.event_type),
        event.attempt,
        event.succeeded,
        event.status_code,
        _text(event.error),
        event.duration_seconds,
        event.final,
        event.retry_in_seconds,
        attempted_on,
    )
    await connection.execute(
        """UPDATE webhook SET last_event_id = $2, last_attempt = $3, last_succeeded = $4, last_status_code = $5,
                              last_error = $6, last_attempt_on = $7,
                              delivered_count = delivered_count + CASE WHEN $4 THEN 1 ELSE 0 END,
                              failed_count = failed_count + CASE WHEN $8 AND NOT $4 THEN 1 ELSE 0 END
           WHERE id = $1""",
        event.webhook_id,
        event.event_id,
        event.attempt,
        event.succeeded,
        event.status_code,
        _text(event.error),
        attempted_on,
        event.final,
    )


WEBHOOK_APPLIERS: dict[type[Event], Callable[[asyncpg.Connection, Any, int], Awaitable[None]]] = {
    WebhookRegistered: webhook_registered,
    WebhookUpdated: webhook_updated,
    WebhookDeleted: webhook_deleted,
    WebhookDeliveryAttempted: webhook_delivery_attempted,
}
