"""The projector's side of the log reader's pipe (``log_intake.ReceivedFrames``): frames cut
anywhere by the pipe come out whole and in order, everything waiting is taken at once up to the
limit, and reading pauses while too much waits (so the reader's writes, and JetStream, wait)."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from envstore.api.log_frames import FRAME_HEADER, FramedMessage
from envstore.api.log_intake import ReceivedFrames


def framed(messages: list[FramedMessage]) -> bytes:
    body = msgspec.msgpack.encode(messages)
    return FRAME_HEADER.pack(len(body)) + body


def messages(first: int, count: int) -> list[FramedMessage]:
    return [
        FramedMessage(sequence, f"envstore.ns.n{sequence}.namespace.created", b"\x81\xa1a" + bytes([sequence % 256]),
                      {"traceparent": f"00-{sequence:032x}-{sequence:016x}-01"} if sequence % 2 else None)
        for sequence in range(first, first + count)
    ]


class PipeEnd(asyncio.ReadTransport):
    """The read end of a pipe, as far as ``ReceivedFrames`` uses it."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


async def test_frames_cut_anywhere_by_the_pipe_come_out_whole_and_in_order() -> None:
    sent = messages(1, 7) + messages(8, 1) + messages(9, 30)
    stream = framed(sent[:7]) + framed(sent[7:8]) + framed(sent[8:])
    for cut in (1, 2, 3, 5, 64, len(stream)):
        frames = ReceivedFrames(batch_limit=1000)
        frames.connection_made(PipeEnd())
        for start in range(0, len(stream), cut):
            frames.data_received(stream[start:start + cut])
        assert await frames.take(1) == sent, f"chunks of {cut} bytes"


async def test_everything_waiting_is_taken_at_once_up_to_the_limit() -> None:
    frames = ReceivedFrames(batch_limit=10)
    frames.connection_made(PipeEnd())
    for first in range(1, 26, 5):
        frames.data_received(framed(messages(first, 5)))
    assert [message.sequence for message in await frames.take(1)] == list(range(1, 11))
    assert [message.sequence for message in await frames.take(1)] == list(range(11, 21))
    assert [message.sequence for message in await frames.take(1)] == list(range(21, 26))
    with pytest.raises(TimeoutError):
        await frames.take(0.05)


async def test_reading_pauses_while_twice_the_limit_waits_and_resumes_once_taken() -> None:
    pipe = PipeEnd()
    frames = ReceivedFrames(batch_limit=10)
    frames.connection_made(pipe)
    frames.data_received(framed(messages(1, 15)))
    assert pipe.reading
    frames.data_received(framed(messages(16, 10)))
    assert not pipe.reading  # 25 wait: the pipe fills, the reader's writes wait
    await frames.take(1)
    assert not pipe.reading  # 15 still wait
    await frames.take(1)
    assert pipe.reading


async def test_the_end_of_the_readers_output_is_told_after_what_it_sent() -> None:
    frames = ReceivedFrames(batch_limit=10)
    frames.connection_made(PipeEnd())
    frames.data_received(framed(messages(1, 3)))
    frames.eof_received()
    assert len(await frames.take(1)) == 3
    assert await frames.take(1) == []  # at once, not after the wait
