"""A reader of a subscription's arrivals stops when it is told to, even at the moment a message
arrives (the projector waits for its reader to stop before it records a stall or resumes; a
reader that read on made it wait for ever)."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.msg import Msg

from envstore.common.transport import Arrivals


def _message(sequence: int) -> Msg:
    # A JetStream delivery's reply subject carries the stream sequence (6th token).
    return Msg(_client=None, subject="envstore.test", reply=f"$JS.ACK.events.reader.1.{sequence}.{sequence}.0.0", data=b"")  # type: ignore[arg-type]


async def test_arrivals_are_taken_in_order_in_batches() -> None:
    arrivals = Arrivals(limit=10)
    for sequence in (1, 2, 3):
        await arrivals.receive(_message(sequence))
    assert [sequence for sequence, _ in await arrivals.take(2, 1)] == [1, 2]
    assert [sequence for sequence, _ in await arrivals.take(2, 1)] == [3]
    with pytest.raises(TimeoutError):
        await arrivals.take(2, 0.05)


async def test_a_reader_cancelled_as_a_message_arrives_stops() -> None:
    arrivals = Arrivals(limit=10)

    async def read_for_ever() -> None:
        while True:
            try:
                await arrivals.take(10, 5)
            except TimeoutError:
                pass

    reader = asyncio.create_task(read_for_ever())
    await asyncio.sleep(0)  # the reader waits for a first arrival
    await arrivals.receive(_message(1))  # it is woken …
    reader.cancel()  # … and told to stop in the same turn of the loop
    done, _ = await asyncio.wait({reader}, timeout=2)
    assert reader in done and reader.cancelled(), "the reader went on reading after it was cancelled"
