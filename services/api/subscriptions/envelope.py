"""The JSON document one event is sent as, on the live stream (``data:``) and as a webhook's body:
its stream sequence (the event id: a resumption point, and how duplicates are recognized), type,
subject, what it concerns, who caused it, and the event itself as stored."""

from __future__ import annotations

import msgspec

from envstore.api.subscriptions.event_scope import EventScope


class EventEnvelope(msgspec.Struct, frozen=True):
    id: int  # the event's stream sequence
    type: str
    subject: str
    namespace: str | None
    environment: str | None
    build_id: int | None
    occurred_at: float
    # Who caused it: ``user:<name>``, ``service-account:<namespace>``, ``anonymous`` for a command
    # (as the API authenticated the caller), ``service:<name>`` for a worker's event.
    principal: str
    event: msgspec.Raw  # the event's JSON exactly as published


def envelope_json(
    sequence: int, event_type: str, subject: str, occurred_at: float, principal: str, scope: EventScope, payload: bytes
) -> bytes:
    """One line of compact JSON (no newlines, so it fits one SSE ``data:`` field)."""
    if b"\n" in payload or b"\r" in payload:
        # Published pretty-printed by some other producer: make it one line.
        payload = msgspec.json.encode(msgspec.json.decode(payload))
    return msgspec.json.encode(
        EventEnvelope(
            id=sequence,
            type=event_type,
            subject=subject,
            namespace=scope.namespace,
            environment=scope.environment,
            build_id=scope.build_id,
            occurred_at=occurred_at,
            principal=principal,
            event=msgspec.Raw(payload),
        )
    )
