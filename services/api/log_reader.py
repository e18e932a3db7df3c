"""The projector's reader of the log, a child process of the API (or of ``projection rebuild``):
``python -m envstore.api.log_reader``, told what to read by one line of JSON on its stdin
(``log_frames.ReadingOrder``). It subscribes to the stream from that sequence on (nats-py's
ordered consumer) and writes whatever has arrived to its stdout, as one frame per batch: the
frame's length (4 bytes, big-endian), then a msgpack array of (sequence, subject, payload,
headers). It exits when its stdin ends (the projector closed it, or died) or its stdout is gone.

It decodes no event and writes nothing but the frames: the projector judges every event.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import stat
import sys

import msgspec

from envstore.api.log_frames import FRAME_HEADER, FramedMessage, ReadingOrder
from envstore.common.arrivals import Arrivals, subscribe_in_order
from envstore.common.bus_connection import connect_to_bus, tls_context_of
from envstore.common.collector_tuning import tune_collector_for_a_long_run

IDLE_WAIT_SECONDS = 5.0


class FramesOut(asyncio.BaseProtocol):
    """The write end of the pipe to the projector, written without blocking: while the projector
    is behind, the pipe is full and ``sent`` waits (this process still answers the server's
    pings; its arrivals fill up, then JetStream's flow control holds the server back)."""

    def __init__(self) -> None:
        self._room = asyncio.Event()
        self._room.set()
        self._gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def pause_writing(self) -> None:
        self._room.clear()

    def resume_writing(self) -> None:
        self._room.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._room.set()
        if not self._gone.done():
            self._gone.set_result(None)

    async def sent(self, transport: asyncio.WriteTransport, data: bytes) -> None:
        if self._gone.done():
            raise BrokenPipeError("the projector stopped reading")
        transport.write(data)
        await self._room.wait()


async def hand_on(order: ReadingOrder) -> None:
    """The log from ``order.start`` on, as frames on stdout, for ever."""
    loop = asyncio.get_running_loop()
    transport, frames_out = await loop.connect_write_pipe(FramesOut, sys.stdout.buffer)
    client = await connect_to_bus(order.nats_url, order.identity, seed=order.seed, tls=tls_context_of(order.tls_ca))
    try:
        arrivals = Arrivals(order.batch_limit * 2)
        subscription = await subscribe_in_order(
            client.jetstream(), order.stream, order.subjects, order.start, arrivals.receive
        )
        encoder = msgspec.msgpack.Encoder()
        try:
            while True:
                try:
                    taken = await arrivals.take(order.batch_limit, IDLE_WAIT_SECONDS)
                except TimeoutError:
                    continue
                frame = encoder.encode([
                    FramedMessage(
                        sequence, message.subject, message.data, message.headers if order.with_headers else None
                    )
                    for sequence, message in taken
                ])
                await frames_out.sent(transport, FRAME_HEADER.pack(len(frame)) + frame)
        finally:
            await subscription.unsubscribe()
    finally:
        await client.close()
        transport.close()


async def read_until_told_to_stop() -> None:
    loop = asyncio.get_running_loop()
    orders = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(orders), sys.stdin)
    line = await orders.readline()
    if not line:
        return
    order = ReadingOrder.decoded(line)
    tune_collector_for_a_long_run()
    reading = asyncio.create_task(hand_on(order))
    ending = asyncio.create_task(orders.read())  # stdin's end: the projector is done, or gone
    done, _ = await asyncio.wait({reading, ending}, return_when=asyncio.FIRST_COMPLETED)
    reading.cancel()
    ending.cancel()
    await asyncio.gather(reading, ending, return_exceptions=True)
    if reading in done and reading.exception() is not None:
        raise reading.exception()  # type: ignore[misc]


def main() -> None:
    mode = os.fstat(sys.stdin.fileno()).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        sys.exit("the log reader takes its order from a pipe on stdin: the projector starts it (envstore.api.log_intake)")
    # Ctrl-C in a terminal reaches the whole process group: the projector stops this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s log reader: %(message)s")
    try:
        asyncio.run(read_until_told_to_stop())
    except BrokenPipeError:
        pass  # the projector stopped reading


if __name__ == "__main__":
    main()
