"""How a webhook POST is signed, and how a receiver checks it.

``X-Envstore-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`` with the
Unix time of the attempt in ``X-Envstore-Timestamp``: a receiver recomputes the HMAC over exactly
the bytes it received and rejects old timestamps, so a captured request cannot be replayed later.
``X-Envstore-Event-Id`` (the event's stream sequence) identifies redelivered duplicates."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Envstore-Signature"
TIMESTAMP_HEADER = "X-Envstore-Timestamp"
EVENT_ID_HEADER = "X-Envstore-Event-Id"
EVENT_TYPE_HEADER = "X-Envstore-Event-Type"
WEBHOOK_ID_HEADER = "X-Envstore-Webhook-Id"
ATTEMPT_HEADER = "X-Envstore-Delivery-Attempt"
SIGNATURE_SCHEME = "sha256="


def signature(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return SIGNATURE_SCHEME + digest


def signature_is_valid(
    secret: str, timestamp_header: str, signature_header: str, body: bytes, now: float, tolerance_seconds: float = 300
) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent."""
    if (
        not (timestamp_header.isascii() and timestamp_header.isdigit())
        or abs(now - int(timestamp_header)) > tolerance_seconds
    ):
        return False
    return hmac.compare_digest(signature(secret, int(timestamp_header), body), signature_header)
