"""How the commands' events enter the audit trail (``audit_event``): one row per event published by
the API (and the registry's dynamic-image submissions), with its principal, what it concerns and
its own fields (without specifications and secrets). Applied by the projector in its transaction,
beside the event's own applier, so a replay of the log gives the same trail."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from envstore.api.naive_utc import utc
from envstore.common.events import (
    EVENT_TYPES,
    BuildEvent,
    BuildUsed,
    EnvironmentEvent,
    Event,
    NamespaceEvent,
    SettingsChanged,
    WebhookDeleted,
    WebhookEvent,
    build_id_of,
)

# Commands: what a principal asked for (the pipeline's results are the workers'); usage counts
# are published by the api too, but ask for nothing.
AUDITED_TYPES: frozenset[type[Event]] = frozenset(
    event_type for event_type in EVENT_TYPES if "api" in event_type.PUBLISHED_BY and event_type is not BuildUsed
)
# Fields left out of the trail: documents (the build keeps its specification) and secrets.
LEFT_OUT = frozenset({"type", "version", "occurred_at", "principal", "specification", "specification_blob", "encrypted_secret"})


def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL: an event carrying one must not stop the projection."""
    return value.replace("\x00", "") if value is not None else None


def details_of(event: Event) -> str:
    fields: dict[str, Any] = msgspec.to_builtins(event)
    details = {name: value for name, value in fields.items() if name not in LEFT_OUT}
    if "builds" in details:  # the builds a deletion removes: their ids say enough
        details["builds"] = [build["build_id"] for build in details["builds"]]
    # jsonb cannot hold NUL either.
    return msgspec.json.encode(details, order="sorted").decode().replace("\\u0000", "")


async def _scope(connection: asyncpg.Connection, event: Event) -> tuple[str | None, str | None]:
    """The namespace and environment an event concerns."""
    if isinstance(event, (EnvironmentEvent, SettingsChanged)):
        return event.namespace, event.environment
    if isinstance(event, NamespaceEvent):
        return event.namespace, None
    if isinstance(event, BuildEvent):  # a cancel names the build only: where it is, the read model says
        row = await connection.fetchrow(
            """SELECT n.name AS namespace, e.name AS environment FROM build b
               JOIN environment e ON e.id = b.environment_id JOIN namespace n ON n.id = e.namespace_id
               WHERE b.id = $1""",
            build_id_of(event),
        )
        return (row["namespace"], row["environment"]) if row else (None, None)
    if isinstance(event, WebhookEvent):
        namespace = getattr(event, "namespace", None)
        environment = getattr(event, "environment", None)
        if isinstance(event, WebhookDeleted):  # the deleted webhook's filters
            row = await connection.fetchrow("SELECT namespace, environment FROM webhook WHERE id = $1", event.webhook_id)
            if row:
                namespace, environment = row["namespace"], row["environment"]
        return namespace, environment
    return None, None


def scope_of(event: Event, build_scopes: dict[int, tuple[str, str]]) -> tuple[str | None, str | None]:
    """``_scope`` for the projector's batches, which know where their builds are (``build_scopes``:
    build id → namespace and environment). Webhook events are not batched."""
    if isinstance(event, (EnvironmentEvent, SettingsChanged)):
        return event.namespace, event.environment
    if isinstance(event, NamespaceEvent):
        return event.namespace, None
    if isinstance(event, BuildEvent):
        return build_scopes.get(build_id_of(event) or 0, (None, None))
    return None, None


AUDIT_COLUMNS = ("sequence", "occurred_at", "principal", "event_type", "namespace", "environment", "build_id", "details")


def audit_row(event: Event, sequence: int, namespace: str | None, environment: str | None) -> tuple[Any, ...]:
    """The trail's row of ``event`` (``AUDIT_COLUMNS``)."""
    return (
        sequence,
        utc(event.occurred_at),
        _text(event.principal) or "unknown",
        event.tag(),
        _text(namespace),
        _text(environment),
        build_id_of(event),
        details_of(event),
    )


async def record(connection: asyncpg.Connection, event: Event, sequence: int) -> None:
    if type(event) not in AUDITED_TYPES:
        return
    namespace, environment = await _scope(connection, event)
    await connection.execute(
        """INSERT INTO audit_event (sequence, occurred_at, principal, event_type, namespace, environment, build_id, details)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (sequence) DO NOTHING""",
        *audit_row(event, sequence, namespace, environment),
    )
