"""What reading the log costs the projector's one Python thread, by each ``projection_reader``.

The replay's applying thread also reads the log: nats-py parses every message and its headers in
Python, and msgspec decodes it. ``projection_reader = "child-process"`` (the default) moves the
nats-py part to a child process (``envstore.api.log_reader``) that hands each batch on as one
msgpack frame. This reads the same log (``api_latency.py``'s lean history of 2,000 environments,
50,000 events) through the projector's two intakes (``envstore.api.log_intake``) and decodes every
event as the projector does, printing the wall time and this process's CPU seconds for each,
several rounds, interleaved. Prints the figures; asserts nothing.

    python bench/projection_intake.py [--environments 2000] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from api_latency import own_cpu_seconds, rebuild_settings, write_history
from envstore.api.log_intake import configured_opener
from envstore.common.bus_permissions import PROJECTION_REBUILD, SUPERUSER
from envstore.common.events import EventCodec
from envstore.common.service_runtime import connect_bus
from envstore.common.settings import EnvstoreSettings
from envstore.launcher.stack import EmbeddedStack

BATCH = 2000
TAKE_WAIT_SECONDS = 30


async def read_through(settings: EnvstoreSettings, last: int) -> tuple[float, float]:
    """(seconds, CPU seconds of this process) to take and decode the log through the settings'
    intake, its start included."""
    bus = await connect_bus(settings, PROJECTION_REBUILD)
    codec = EventCodec()
    try:
        started, cpu_before = time.perf_counter(), own_cpu_seconds()
        intake = await configured_opener(settings, bus, PROJECTION_REBUILD)(1, BATCH, False)
        try:
            reached = 0
            while reached < last:
                for sequence, message in await intake.take(TAKE_WAIT_SECONDS):
                    codec.decode(message.subject, message.data, sequence)
                    reached = sequence
            return time.perf_counter() - started, own_cpu_seconds() - cpu_before
        finally:
            await intake.close()
    finally:
        await bus.close()


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
                figures = {}
                for reader in ("in-process", "child-process"):
                    figures[reader] = await read_through(settings.model_copy(update={"projection_reader": reader}), events)
                (alone_seconds, alone_cpu), (child_seconds, child_cpu) = figures["in-process"], figures["child-process"]
                print(
                    f"  in-process (nats-py, msgspec): {alone_seconds:.2f} s, CPU {alone_cpu:.2f} s | "
                    f"child-process (msgpack frames, msgspec here): {child_seconds:.2f} s, CPU here {child_cpu:.2f} s "
                    f"= {child_cpu / alone_cpu:.2f}x",
                    flush=True,
                )
        finally:
            await stack.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--environments", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    asyncio.run(main(parser.parse_args()))
