"""What JetStream's sync policy costs envstore: events/s published through envstore's own transport
(``EventBus.publish``: de-duplication id, retries, an ack per event) with ``sync_interval: always``
(fsync before every ack: the embedded stack's default) against NATS' default (fsync every two
minutes), on one node and on a 3-node cluster on loopback (stream at 3 replicas), all in one run.

Two publishing patterns: one event at a time (a worker reporting a phase: every ack awaited before
the next), and 64 in flight (many builds' workers at once). Each figure is the median of
``--rounds`` rounds; ratios are to the default policy measured in the same run (the floor).

Then, on the 3-node cluster with ``sync_interval: always``, the stream's leader node is SIGKILLed
while events are published one at a time: the longest wait for an ack (the election, seen by a
publisher) and whether every acknowledged event is still in the stream.
Prints figures; asserts nothing.

    .venv/bin/python bench/nats_sync.py [--events 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from envstore.common.events import BuildProgress
from envstore.common.transport import EventBus
from envstore.launcher.nats_process import SYNC_ALWAYS, NatsCluster

IN_FLIGHT = 64


@dataclass(frozen=True)
class Setup:
    nodes: int
    sync_interval: str | None

    @property
    def label(self) -> str:
        topology = "1 node" if self.nodes == 1 else f"{self.nodes}-node cluster, R{self.nodes}"
        return f"{topology}, sync_interval: {self.sync_interval or 'default (2 min)'}"


def progress_event(build_id: int, index: int) -> BuildProgress:
    # The size of a typical progress event (a phase's line for the build log).
    return BuildProgress(build_id=build_id, phase="install", state="note", message=f"linked package {index:05d} " + "x" * 60, service="builder")


async def publish_sequentially(bus: EventBus, build_id: int, count: int) -> float:
    started = time.perf_counter()
    for index in range(count):
        await bus.publish(progress_event(build_id, index), f"bench-{build_id}-{index}")
    return count / (time.perf_counter() - started)


async def publish_concurrently(bus: EventBus, build_id: int, count: int) -> float:
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one(index: int) -> None:
        async with slots:
            await bus.publish(progress_event(build_id, index), f"bench-{build_id}-{index}")

    started = time.perf_counter()
    await asyncio.gather(*(one(index) for index in range(count)))
    return count / (time.perf_counter() - started)


async def measure(setup: Setup, directory: Path, events: int, rounds: int) -> dict[str, float]:
    cluster = NatsCluster(directory / "nats", node_count=setup.nodes)
    for node in cluster.nodes:
        node.sync_interval = setup.sync_interval
    await cluster.start()
    try:
        bus = await EventBus.connect(cluster.url, "BENCH", name="bench")
        try:
            await bus.ensure_stream(replicas=setup.nodes)
            sequential, concurrent = [], []
            for round_number in range(rounds):
                sequential.append(await publish_sequentially(bus, 2 * round_number + 1, events))
                concurrent.append(await publish_concurrently(bus, 2 * round_number + 2, events))
        finally:
            await bus.close()
    finally:
        await cluster.stop()
    return {"one at a time": statistics.median(sequential), f"{IN_FLIGHT} in flight": statistics.median(concurrent)}


async def leader_failover(directory: Path, seconds: float) -> None:
    cluster = NatsCluster(directory / "nats", node_count=3)
    await cluster.start()
    try:
        bus = await EventBus.connect(cluster.url, "BENCH", name="bench")
        try:
            await bus.ensure_stream(replicas=3)
            leader_name = (await bus.jetstream.stream_info("BENCH")).cluster.leader
            leader = next(node for node in cluster.nodes if node.server_name == leader_name)
            acknowledged: list[int] = []
            gaps: list[float] = []
            started = time.perf_counter()
            killed = False
            last_ack = started
            index = 0
            while time.perf_counter() - started < seconds:
                if not killed and time.perf_counter() - started > seconds / 3:
                    await leader.kill()
                    killed = True
                ack = await bus.publish(progress_event(1, index), f"failover-{index}")
                now = time.perf_counter()
                gaps.append(now - last_ack)
                last_ack = now
                acknowledged.append(ack.seq)
                index += 1
            stored = (await bus.jetstream.stream_info("BENCH")).state.messages
        finally:
            await bus.close()
    finally:
        await cluster.stop()
    print(
        f"\nleader SIGKILLed while publishing one at a time (3 nodes, R3, sync always): longest wait for an ack "
        f"{max(gaps):.2f} s; {len(acknowledged)} events acknowledged, {stored} in the stream after "
        f"({len(set(acknowledged)) - stored} acknowledged events missing)"
    )


async def main(arguments: argparse.Namespace) -> None:
    setups = [Setup(nodes, sync) for nodes in (1, 3) for sync in (None, SYNC_ALWAYS)]
    results: dict[Setup, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="envstore-bench-") as directory:
        for index, setup in enumerate(setups):
            results[setup] = await measure(setup, Path(directory) / str(index), arguments.events, arguments.rounds)
            print(f"{setup.label}: " + ", ".join(f"{mode} {rate:,.0f} events/s" for mode, rate in results[setup].items()), flush=True)
    print()
    print(f"events/s (median of {arguments.rounds} rounds of {arguments.events} events), and ratio to the default sync policy")
    modes = list(next(iter(results.values())))
    print("| setup | " + " | ".join(modes) + " |")
    print("|---|" + "---|" * len(modes))
    for setup, rates in results.items():
        floor = results[Setup(setup.nodes, None)]
        cells = [f"{rates[mode]:,.0f} ({rates[mode] / floor[mode]:.2f}x)" for mode in modes]
        print(f"| {setup.label} | " + " | ".join(cells) + " |")
    build_events = 26  # a build of the default artifacts publishes about this many events
    always_r3 = results[Setup(3, SYNC_ALWAYS)]["one at a time"]
    print(f"\na build's ~{build_events} events, one at a time, at 3 nodes and sync always: {build_events / always_r3 * 1000:.0f} ms")
    with tempfile.TemporaryDirectory(prefix="envstore-bench-") as directory:
        await leader_failover(Path(directory), arguments.failover_seconds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000, help="events per round and pattern")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--failover-seconds", type=float, default=15.0, help="how long to publish around the leader's death")
    asyncio.run(main(parser.parse_args()))
