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
import ssl
import stat
import sys
from typing import BinaryIO

import msgspec

from envstore.api.log_frames import FRAME_HEADER, FramedMessage, ReadingOrder
from envstore.common.arrivals import Arrivals, subscribe_in_order
from envstore.common.bus_connection import connect_to_bus
from envstore.common.collector_tuning import tune_collector_for_a_long_run

log = logging.getLogger(__name__)
IDLE_WAIT_SECONDS = 5.0


async def hand_on(order: ReadingOrder, output: BinaryIO) -> None:
    """The log from ``order.start`` on, as frames on ``output``, for ever."""
    tls = ssl.create_default_context(cadata=order.tls_ca) if order.tls_ca else None
    client = await connect_to_bus(order.nats_url, order.identity, seed=order.seed, tls=tls)
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
                # In a thread: while the projector is behind, the write waits, and this process
                # still answers the server's pings (arrivals fill up, then flow control holds
                # the server back).
                await asyncio.to_thread(_write, output, FRAME_HEADER.pack(len(frame)) + frame)
        finally:
            await subscription.unsubscribe()
    finally:
        await client.close()


def _write(output: BinaryIO, data: bytes) -> None:
    output.write(data)
    output.flush()


async def read_until_told_to_stop() -> None:
    loop = asyncio.get_running_loop()
    orders = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(orders), sys.stdin)
    line = await orders.readline()
    if not line:
        return
    order = ReadingOrder.decoded(line)
    tune_collector_for_a_long_run()
    reading = asyncio.create_task(hand_on(order, sys.stdout.buffer))
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
