"""A burst of builds: how many builds per minute the stack finishes with 1, 2 and 4 replicas of
every service, where the time goes, whether memory stays flat, and what faults do to latency.

For each replica count a fresh embedded stack gets N distinct environments submitted at once
(default 500; five small package sets, so solves are mostly cache hits and the work is install
and packaging). While they build, the script samples every second: each worker's consumer lag
(pending + unacknowledged), the CPU seconds of every envstore process and of the whole machine
(/proc), and each service's resident memory. It prints builds per minute, p50/p99 submit →
COMPLETED, the lag's peak, CPU use against the machine's cores (the ceiling: when the stack uses
all of them, only more CPU makes it faster), and RSS before and after the burst per service.

``--chaos`` runs the burst again on the 2-replica stack while replicas are SIGKILLed (and
PostgreSQL restarted), and prints p99 submit → COMPLETED with faults against without.

    .venv/bin/python bench/burst.py [--builds 500] [--replicas 1,2,4] [--artifacts LOCKFILE,YAML,CONDA_PACK] [--chaos]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from envstore.common.demo_channel import make_channel
from envstore.launcher.stack import EmbeddedStack

PACKAGE_SETS = (["tinyjson"], ["configlib"], ["textutils"], ["hello"], ["units"])
WORKERS = ("solver", "builder", "packager")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def resident_megabytes(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far."""
    values = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / CLOCK_TICKS, sum(values) / CLOCK_TICKS


def service_pids(stack: EmbeddedStack) -> dict[str, int]:
    return {
        process.name: process.pid
        for process in stack.processes()
        if process.pid is not None and process.role not in ("nats", "postgres", "s3")
    }


@dataclass
class Samples:
    lag: dict[str, int] = field(default_factory=dict)  # worker → peak lag
    stack_cpu_start: float = 0.0
    machine_start: tuple[float, float] = (0.0, 0.0)


async def sample_lag(stack: EmbeddedStack, samples: Samples, stop: asyncio.Event) -> None:
    # Each worker's own credentials read its consumer (no identity reads another's).
    connections = {worker: await stack.connect_nats(worker) for worker in WORKERS}
    try:
        while not stop.is_set():
            for worker in WORKERS:
                try:
                    info = await connections[worker].jetstream().consumer_info(stack.nats_stream, worker)
                except Exception:
                    continue
                lag = (info.num_pending or 0) + (info.num_ack_pending or 0)
                samples.lag[worker] = max(samples.lag.get(worker, 0), lag)
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                pass
    finally:
        for connection in connections.values():
            await connection.close()


async def burst(stack: EmbeddedStack, builds: int, label: str, faults: bool = False) -> dict[str, float]:
    token = stack.admin_token
    headers = {"Authorization": f"Bearer {token}"}
    pids = service_pids(stack)
    rss_before = {name: resident_megabytes(pid) for name, pid in pids.items()}
    cpu_before = sum(process_cpu_seconds(pid) for pid in pids.values())
    busy_before, total_before = machine_cpu_seconds()
    stop = asyncio.Event()
    samples = Samples()
    sampling = asyncio.create_task(sample_lag(stack, samples, stop))
    fault_log: list[str] = []
    chaos_task = None
    if faults:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's root
        from tests.chaos.faults import chaos  # the chaos test's faults


        chaos_task = asyncio.create_task(chaos(stack, stop, fault_log))
    started = time.monotonic()
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=50)
    async with aiohttp.ClientSession(stack.api_url, headers=headers, connector=connector) as http:

        async def one(index: int) -> None:
            text = "name: {}\ndependencies:\n{}".format(
                f"{label}-{index}", "".join(f"  - {package}\n" for package in PACKAGE_SETS[index % len(PACKAGE_SETS)])
            )
            submitted = time.monotonic()
            while True:
                try:
                    async with http.post(
                        "/api/v1/specification/",
                        json={"namespace": label, "specification": text},
                        headers={"Idempotency-Key": f"{label}-{index}"},
                    ) as response:
                        if response.status == 200:
                            build_id = (await response.json())["data"]["build_id"]
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
            while True:
                try:
                    async with http.get(f"/api/v1/build/{build_id}/") as response:
                        if response.status == 200:
                            status = (await response.json())["data"]["status"]
                            if status in ("COMPLETED", "FAILED", "CANCELED"):
                                if status == "COMPLETED":
                                    latencies.append(time.monotonic() - submitted)
                                return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.25)

        await asyncio.gather(*(one(index) for index in range(builds)))
    elapsed = time.monotonic() - started
    stop.set()
    await sampling
    if chaos_task is not None:
        await chaos_task
    pids_after = service_pids(stack)
    cpu_after = sum(process_cpu_seconds(pid) for pid in pids_after.values())
    busy_after, total_after = machine_cpu_seconds()
    rss_after = {name: resident_megabytes(pid) for name, pid in pids_after.items()}
    latencies.sort()
    cores = os.cpu_count() or 1
    result = {
        "elapsed": elapsed,
        "completed": len(latencies),
        "per_minute": len(latencies) / elapsed * 60,
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else float("nan"),
        "stack_cpu_share": (cpu_after - cpu_before) / (elapsed * cores),
        "machine_busy": (busy_after - busy_before) / max(total_after - total_before, 1e-9),
    }
    print(
        f"  {label}: {result['completed']}/{builds} COMPLETED in {elapsed:.1f} s = {result['per_minute']:.0f} builds/min; "
        f"submit→COMPLETED p50 {result['p50']:.1f} s, p99 {result['p99']:.1f} s"
    )
    print(
        f"    CPU: envstore's processes used {result['stack_cpu_share']:.0%} of the {cores} cores, "
        f"the machine was {result['machine_busy']:.0%} busy; peak consumer lag "
        + ", ".join(f"{worker} {samples.lag.get(worker, 0)}" for worker in WORKERS)
    )
    print("    RSS MB before → after: " + ", ".join(
        f"{name} {rss_before.get(name, 0):.0f}→{rss_after.get(name, 0):.0f}" for name in sorted(rss_after)
    ))
    if fault_log:
        print(f"    faults: {len(fault_log)}: " + "; ".join(line.split(" s  ", 1)[1] for line in fault_log))
    return result


async def main(arguments: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as directory:
        channel = await make_channel(Path(directory) / "channel")
        settings = {
            "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel,
            "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel,
            "ENVSTORE_BUILD_ARTIFACTS": arguments.artifacts,
            "ENVSTORE_WORKER_ACK_WAIT_SECONDS": "10",
        }
        print(f"{arguments.builds} builds, artifacts {arguments.artifacts}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
        for replicas in [int(value) for value in arguments.replicas.split(",")]:
            async with EmbeddedStack(Path(directory) / f"stack-{replicas}", settings=settings, replicas=replicas) as stack:
                print(f"{replicas} replica(s) of every service:")
                calm = await burst(stack, arguments.builds, f"burst-r{replicas}")
                if arguments.chaos and replicas == 2:
                    stormy = await burst(stack, arguments.builds, "burst-chaos", faults=True)
                    print(f"    p99 submit→COMPLETED under faults {stormy['p99']:.1f} s vs {calm['p99']:.1f} s without "
                          f"({stormy['p99'] / calm['p99']:.1f}x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--builds", type=int, default=500)
    parser.add_argument("--replicas", default="1,2,4")
    parser.add_argument("--artifacts", default="LOCKFILE,YAML,CONDA_PACK")
    parser.add_argument("--chaos", action="store_true")
    asyncio.run(main(parser.parse_args()))
