"""Registry start time against the length of the log: a stack whose stream holds N events (default
100,000: builds' progress events, and submissions spread over many environments), then the
registry process is restarted and timed from spawn until ``/v2/`` answers.

Release 0.1.0's registry replayed the whole stream into its own index at every start; today's
reads the API's read model and starts in constant time. The script runs against whichever
release is checked out, so both can be measured the same way. Prints figures; asserts nothing.

    .venv/bin/python bench/registry_start.py [--events 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp

from envstore.common import events as catalogue
from envstore.common.bus_permissions import SUPERUSER
from envstore.launcher.stack import EmbeddedStack

PUBLISH_BATCH = 2000


def subject_of(event: catalogue.Event) -> str:
    # Today's events derive their subject; release 0.1.0's had one per type.
    return getattr(event, "subject", None) or type(event).SUBJECT  # type: ignore[attr-defined]


def synthetic_events(count: int) -> list[catalogue.Event]:
    """Submissions of one build in each of count/50 environments, then progress events."""
    made: list[catalogue.Event] = []
    builds = max(count // 50, 1)
    for index in range(builds):
        fields = dict(
            namespace=f"ns{index % 100}",
            environment=f"env{index}",
            specification={"name": f"env{index}", "dependencies": ["tinyjson"]},
            spec_sha256=f"{index:064x}",
            platforms=["linux-64"],
            artifacts=["LOCKFILE"],
            scheduled_on=1_700_000_000.0 + index,
        )
        if "build_id" in catalogue.BuildSubmitted.__struct_fields__:
            fields["build_id"] = index + 1
        made.append(catalogue.BuildSubmitted(**fields))
    while len(made) < count:
        build_id = len(made) % builds + 1
        made.append(catalogue.BuildProgress(build_id=build_id, phase="install", state="note", message="x" * 40))
    return made


async def fill(stack: EmbeddedStack, count: int) -> None:
    # Loading a synthetic log is an operator's import: the superuser's credentials.
    connection = await stack.connect_nats(SUPERUSER)
    jetstream = connection.jetstream()
    codec = catalogue.EventCodec()
    events = synthetic_events(count)
    for start in range(0, len(events), PUBLISH_BATCH):
        batch = events[start : start + PUBLISH_BATCH]
        await asyncio.gather(*(jetstream.publish(subject_of(event), codec.encode(event), stream="ENVSTORE") for event in batch))
    await connection.close()


async def wait_for_registry(url: str, timeout_seconds: float = 600) -> float:
    started = time.perf_counter()
    async with aiohttp.ClientSession() as http:
        while time.perf_counter() - started < timeout_seconds:
            try:
                async with http.get(f"{url}/v2/") as response:
                    if response.status in (200, 401):
                        return time.perf_counter() - started
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.01)
    raise TimeoutError("the registry did not answer")


async def main(event_count: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        async with EmbeddedStack(Path(directory) / "stack") as stack:
            empty = await restart_registry(stack)
            filled_at = time.perf_counter()
            await fill(stack, event_count)
            print(f"published {event_count:,} events in {time.perf_counter() - filled_at:.1f} s")
            full = await restart_registry(stack)
            print(f"registry start, empty log:          {empty * 1000:8.0f} ms")
            print(f"registry start, {event_count:,} events: {full * 1000:8.0f} ms  ({full / empty:.1f}x)")


async def restart_registry(stack: EmbeddedStack) -> float:
    await stack.stop_service("registry")
    await stack.start_service("registry")
    return await wait_for_registry(stack.registry_url)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    asyncio.run(main(parser.parse_args().events))
