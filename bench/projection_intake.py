"""What reading the log costs the projector's one Python thread, in its process or from a child.

The replay's applying thread also reads the log: nats-py parses every message and its headers in
Python, and msgspec decodes it. This measures that share and what would be left of it if a child
process read the stream and handed each batch on as one msgpack frame of (sequence, subject,
payload): the same log (``api_latency.py``'s lean history of 2,000 environments, 50,000 events)
read and decoded

1. in this process, by nats-py's ordered consumer and msgspec (``api_latency.read_stream_alone``,
   the replay's floor), and
2. by a child process running this script with ``--child`` (nats-py there), this process only
   reading the frames from a pipe and decoding the events with msgspec;

printing the wall time and this process's CPU seconds for each, several rounds, interleaved.
Prints the figures; asserts nothing.

    python bench/projection_intake.py [--environments 2000] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

import msgspec

from api_latency import own_cpu_seconds, read_stream_alone, rebuild_settings, write_history
from envstore.common.bus_permissions import PROJECTION_REBUILD, SUPERUSER
from envstore.common.events import EventCodec
from envstore.common.service_runtime import connect_bus
from envstore.common.settings import EnvstoreSettings
from envstore.common.transport import Arrivals
from envstore.launcher.stack import EmbeddedStack

FRAME_HEADER = struct.Struct(">I")  # the frame's length
BATCH = 2000
TAKE_WAIT_SECONDS = 30


async def hand_on_the_log(last: int) -> None:
    """The child: the log up to ``last`` from the bus, one msgpack frame per batch on stdout."""
    bus = await connect_bus(EnvstoreSettings(), PROJECTION_REBUILD)
    try:
        arrivals = Arrivals(BATCH * 2)
        subscription = await bus.replay(1, arrivals=arrivals)
        encoder = msgspec.msgpack.Encoder()
        output = sys.stdout.buffer
        reached = 0
        while reached < last:
            taken = await arrivals.take(BATCH, TAKE_WAIT_SECONDS)
            frame = encoder.encode([(sequence, message.subject, message.data) for sequence, message in taken])
            await asyncio.to_thread(_write, output, FRAME_HEADER.pack(len(frame)) + frame)
            reached = taken[-1][0]
        await subscription.unsubscribe()
    finally:
        await bus.close()


def _write(output: BinaryIO, data: bytes) -> None:
    output.write(data)
    output.flush()


async def read_from_a_child(settings: EnvstoreSettings, last: int) -> tuple[float, float]:
    """(seconds, CPU seconds of this process) to get and decode the log through a child."""
    assert settings.nats_credentials is not None
    environment = dict(
        os.environ,
        ENVSTORE_NATS_URL=settings.nats_url,
        ENVSTORE_NATS_CREDENTIALS=settings.nats_credentials.get_secret_value(),
        ENVSTORE_DATA_DIR=str(settings.data_dir),
    )
    codec, frames = EventCodec(), msgspec.msgpack.Decoder()
    started, cpu_before = time.perf_counter(), own_cpu_seconds()
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--child", str(last), stdout=asyncio.subprocess.PIPE, env=environment, limit=2**26
    )
    assert child.stdout is not None
    reached = 0
    while reached < last:
        (size,) = FRAME_HEADER.unpack(await child.stdout.readexactly(FRAME_HEADER.size))
        for sequence, subject, payload in frames.decode(await child.stdout.readexactly(size)):
            codec.decode(subject, payload, sequence)
            reached = sequence
    seconds, cpu = time.perf_counter() - started, own_cpu_seconds() - cpu_before
    await child.wait()
    return seconds, cpu


async def main(arguments: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="envstore-bench-") as directory:
        stack = EmbeddedStack(Path(directory) / "stack")
        await stack.start_infrastructure()
        try:
            settings = rebuild_settings(stack)
            bus = await stack.connect_bus(SUPERUSER)
            try:
                await bus.ensure_stream()
                events, _ = await write_history(bus, arguments.environments, 5, "lean")
            finally:
                await bus.close()
            print(f"log: {events} events ({arguments.environments} environments)")
            for _ in range(arguments.rounds):
                alone_seconds, alone_cpu = await read_stream_alone(settings, events)
                child_seconds, child_cpu = await read_from_a_child(settings, events)
                print(
                    f"  in this process (nats-py, msgspec): {alone_seconds:.2f} s, CPU {alone_cpu:.2f} s | "
                    f"from a child (msgpack frames, msgspec here): {child_seconds:.2f} s, CPU here {child_cpu:.2f} s "
                    f"= {child_cpu / alone_cpu:.2f}x",
                    flush=True,
                )
        finally:
            await stack.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        asyncio.run(hand_on_the_log(int(sys.argv[2])))
    else:
        parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
        parser.add_argument("--environments", type=int, default=2000)
        parser.add_argument("--rounds", type=int, default=4)
        asyncio.run(main(parser.parse_args()))
