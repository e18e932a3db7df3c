"""What the projector and its log reader process say to each other (``log_intake``,
``log_reader``): the reading order, one line of JSON on the reader's stdin; then frames on its
stdout, each its length (4 bytes, big-endian) and a msgpack array of messages.

Lean on purpose (msgspec alone): the reader process imports it and starts fast.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass

import msgspec

FRAME_HEADER = struct.Struct(">I")  # a frame's length in bytes


class FramedMessage(msgspec.Struct, array_like=True, frozen=True):
    """A message of the log as the reader process hands it on."""

    sequence: int
    subject: str
    data: bytes
    headers: dict[str, str] | None = None


@dataclass(frozen=True)
class ReadingOrder:
    """What the reader process reads, and from where."""

    nats_url: str
    stream: str
    subjects: str
    identity: str  # the bus identity it reads as: the API's, or the rebuild's
    seed: str | None
    tls_ca: str | None
    start: int
    batch_limit: int
    with_headers: bool  # only when spans are exported (headers carry the trace context)

    def encoded(self) -> bytes:
        return json.dumps(asdict(self)).encode() + b"\n"

    @classmethod
    def decoded(cls, line: bytes) -> ReadingOrder:
        return cls(**json.loads(line))
