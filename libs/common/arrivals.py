"""Reading a stream in order, in batches: an ordered JetStream subscription from a sequence on,
whose messages wait in ``Arrivals`` until taken.

Lean on purpose (nats-py alone): the projector's log reader process imports it and starts fast.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy


async def subscribe_in_order(
    jetstream: JetStreamContext,
    stream: str,
    subjects: str,
    start_sequence: int,
    receive: Callable[[Msg], Awaitable[None]] | None = None,
) -> Any:
    """An ordered, unacknowledged subscription to ``subjects`` of ``stream`` from
    ``start_sequence`` on: every message once, in stream order; into ``receive`` when given."""
    return await jetstream.subscribe(
        subjects,
        stream=stream,
        ordered_consumer=True,
        cb=receive,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(start_sequence, 1)),
    )


class Arrivals:
    """The messages of a subscription as they arrive, taken in batches (``take``): far cheaper than
    ``next_msg`` per message, which costs a task and a timer each. At most ``limit`` wait here; past
    that the subscription waits too, and JetStream's flow control holds the server back."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._waiting: collections.deque[tuple[int, Msg]] = collections.deque()
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()

    async def receive(self, message: Msg) -> None:
        while len(self._waiting) >= self.limit:
            self._room.clear()
            await self._room.wait()
        self._waiting.append((stream_sequence_of(message), message))
        self._arrived.set()

    async def take(self, most: int, timeout_seconds: float) -> list[tuple[int, Msg]]:
        """Up to ``most`` (stream sequence, message) pairs, in order; waits (bounded) for the
        first; TimeoutError if none came."""
        if not self._waiting:
            self._arrived.clear()
            # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that comes as the
            # awaited event is set, and a reader told to stop would read on (seen: the projector
            # waited for ever for its reader to stop).
            async with asyncio.timeout(timeout_seconds):
                await self._arrived.wait()
        taken = [self._waiting.popleft() for _ in range(min(most, len(self._waiting)))]
        self._room.set()
        return taken


def stream_sequence_of(message: Msg) -> int:
    """A JetStream message's stream sequence, read from its reply subject
    (``$JS.ACK.[<domain>.<account hash>.]<stream>.<consumer>.<delivered>.<sequence>…``) alone:
    nats-py's full metadata (a timestamp and five numbers) costs several times more per message."""
    tokens = (message.reply or "").split(".")
    if len(tokens) == 9 and tokens[0] == "$JS":
        return int(tokens[5])
    if len(tokens) >= 11 and tokens[0] == "$JS":
        return int(tokens[7])
    return message.metadata.sequence.stream
