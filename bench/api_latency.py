"""API latency and throughput over a large read model, and the projector's replay rate.

Writes a history straight onto the event bus: 10,000 environments in 100 namespaces, 5 builds
each (50,000 builds), every build recorded with the events the real pipeline emits for it
(build.submitted; solve progress and build.solved; install progress and build.built with its
installed packages; lockfile and yaml progress; artifact.ready for LOCKFILE, YAML and LOGS;
build.completed). Then:

1. replays that history into an empty read model with ``envstore projection rebuild``'s own
   function (the Projector class) and prints events/s;
2. starts the API on it and loads it from 50 concurrent clients on loopback, for a bounded time
   per route: ``wrk`` when installed (Debian: ``apt-get install -y wrk``), otherwise an asyncio
   load generator. Routes: ``GET /api/v1/environment/`` as conda-store's CLI asks it (no page:
   every environment in one answer), the same route one page at a time (``?page=N&size=100``),
   and ``GET /api/v1/build/{id}/`` for random builds.

Runs NATS and PostgreSQL of an embedded stack, and no worker (nothing builds). Prints the
figures; asserts nothing.

    python bench/api_latency.py [--environments 10000] [--builds-per-environment 5]
                                [--clients 50] [--seconds 15] [--load-generator wrk|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg

from envstore.api.rebuild import rebuild_projection
from envstore.common.bus_permissions import PROJECTION_REBUILD, SUPERUSER
from envstore.common.artifact_keys import artifact_key
from envstore.common.artifact_kinds import ArtifactKind
from envstore.common.build_keys import build_key
from envstore.common.transport import EventBus
from envstore.common.events import (
    ArtifactReady,
    BlobRef,
    BuildBuilt,
    BuildCompleted,
    BuildProgress,
    BuildRef,
    BuildSolved,
    BuildSubmitted,
    Event,
    InstalledPackage,
)
from envstore.common.hashing import specification_sha256
from envstore.common.settings import EnvstoreSettings
from envstore.launcher.stack import EmbeddedStack

NAMESPACES = 100
PLATFORM = "linux-64"
CHANNEL = "https://conda.anaconda.org/conda-forge"
ARTIFACTS = [ArtifactKind.LOCKFILE.value, ArtifactKind.YAML.value, ArtifactKind.LOGS.value]
PACKAGES_PER_BUILD = 5
PACKAGE_POOL = [f"package{index:03d}" for index in range(300)]
PUBLISH_WINDOW = 2000  # events awaiting their JetStream ack at once
READY_TIMEOUT_SECONDS = 60
REPLAY_STALL_SECONDS = 300  # the replay fails only if it stops moving this long
SAMPLED_BUILD_IDS = 2000


# --- the history ---------------------------------------------------------------------------------


def digest(*parts: object) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


@dataclass(frozen=True)
class PlannedBuild:
    namespace: str
    environment: str
    specification: dict
    spec_sha256: str
    scheduled_on: float
    packages: list[InstalledPackage]


def planned_builds(environments: int, builds_per_environment: int, seed: int = 7) -> Iterator[PlannedBuild]:
    """Environments' builds, oldest first; each build pins different versions (a new spec)."""
    randomness = random.Random(seed)
    started = time.time() - 90 * 24 * 3600
    for round_number in range(builds_per_environment):
        for index in range(environments):
            namespace = f"team{index % NAMESPACES:03d}"
            environment = f"env{index:05d}"
            names = sorted(randomness.sample(PACKAGE_POOL, PACKAGES_PER_BUILD))
            versions = [f"1.{randomness.randrange(20)}.{round_number}" for _ in names]
            specification = {
                "name": environment,
                "channels": ["conda-forge"],
                "dependencies": [f"{name} >={version}" for name, version in zip(names, versions, strict=True)],
                "description": f"environment {index} of the benchmark",
                "prefix": None,
                "variables": None,
            }
            packages = [
                InstalledPackage(
                    name=name,
                    version=version,
                    build="h1234567_0",
                    build_number=0,
                    channel=CHANNEL,
                    subdir=PLATFORM,
                    size=randomness.randrange(10_000, 5_000_000),
                    sha256=digest(name, version),
                    md5=digest(name, version)[:32],
                    license="BSD-3-Clause",
                    depends=[],
                    constrains=[],
                    timestamp=1_700_000_000_000,
                )
                for name, version in zip(names, versions, strict=True)
            ]
            yield PlannedBuild(
                namespace,
                environment,
                specification,
                specification_sha256(specification),
                started + (round_number * environments + index) * 30.0,
                packages,
            )


def pipeline_events(plan: PlannedBuild, build_id: int, history: str) -> list[Event]:
    """What the solver, builder and packager publish for one build, after its submission: all of
    it ("pipeline"), or only what the two measured routes show ("lean": artifacts, completion)."""
    key = build_key(2, plan.spec_sha256, plan.scheduled_on, build_id, plan.environment, plan.namespace)
    size = sum(package.size or 0 for package in plan.packages)
    artifacts: list[Event] = [
        ArtifactReady(
            build_id=build_id,
            kind=kind.value,
            key=artifact_key(kind, key),
            blob=BlobRef(digest=f"sha256:{digest(kind.value, build_id)}", size=2048),
            content_type="text/plain; charset=utf-8" if kind is ArtifactKind.LOGS else "application/yaml",
        )
        for kind in (ArtifactKind.LOCKFILE, ArtifactKind.YAML, ArtifactKind.LOGS)
    ]
    completed = BuildCompleted(
        build_id=build_id, namespace=plan.namespace, environment=plan.environment, size_bytes=size, artifacts=ARTIFACTS
    )
    if history == "lean":
        return [*artifacts, completed]
    reference = BuildRef(
        build_id=build_id,
        namespace=plan.namespace,
        environment=plan.environment,
        build_key=key,
        spec_sha256=plan.spec_sha256,
        artifacts=ARTIFACTS,
        platforms=[PLATFORM],
    )
    lock = BlobRef(digest=f"sha256:{digest('lock', build_id)}", size=4096)
    events: list[Event] = [
        BuildProgress(build_id=build_id, phase="solve", state="started", service="solver"),
        BuildProgress(build_id=build_id, phase="solve", state="ended", duration_seconds=0.02, service="solver"),
        BuildProgress(build_id=build_id, phase="solve", state="note", message="5 packages", service="solver"),
        BuildSolved(build=reference, lock=lock, package_count=len(plan.packages), solve_seconds=0.02),
        BuildProgress(build_id=build_id, phase="install", state="started", service="builder"),
        BuildProgress(build_id=build_id, phase="install", state="ended", duration_seconds=0.1, service="builder"),
        BuildProgress(build_id=build_id, phase="install", state="note", message="linked", service="builder"),
        BuildBuilt(
            build=reference,
            lock=lock,
            prefix=f"/srv/envstore/envs/{plan.namespace}/{key}",
            size_bytes=size,
            package_count=len(plan.packages),
            install_seconds=0.1,
            packages=plan.packages,
        ),
    ]
    for kind in (ArtifactKind.LOCKFILE, ArtifactKind.YAML):
        events.append(BuildProgress(build_id=build_id, phase=kind.value.lower(), state="started", service="packager"))
        events.append(BuildProgress(build_id=build_id, phase=kind.value.lower(), state="ended", service="packager"))
    return [*events, *artifacts, completed]


async def publish_all(bus: EventBus, events: list[tuple[Event, str]]) -> list[int]:
    """Publish with a bounded window of unacknowledged messages; the stream sequences, in order."""
    sequences: list[int] = []
    for start in range(0, len(events), PUBLISH_WINDOW):
        window = events[start : start + PUBLISH_WINDOW]
        acknowledgements = await asyncio.gather(*(bus.publish(event, message_id) for event, message_id in window))
        sequences.extend(acknowledgement.seq for acknowledgement in acknowledgements)
    return sequences


async def write_history(
    bus: EventBus, environments: int, builds_per_environment: int, history: str
) -> tuple[int, list[int]]:
    """Every build's submission, then its pipeline; returns the event count and the build ids.
    Submissions and pipelines go in batches, so builds interleave as they do on a busy server."""
    plans = list(planned_builds(environments, builds_per_environment))
    build_ids: list[int] = []
    total = 0
    for start in range(0, len(plans), 1000):
        batch = plans[start : start + 1000]
        submissions = [
            (
                BuildSubmitted(
                    namespace=plan.namespace,
                    environment=plan.environment,
                    description=plan.specification["description"],
                    specification=plan.specification,
                    spec_sha256=plan.spec_sha256,
                    platforms=[PLATFORM],
                    artifacts=ARTIFACTS,
                    scheduled_on=plan.scheduled_on,
                ),
                f"bench-submit:{start + offset}",
            )
            for offset, plan in enumerate(batch)
        ]
        ids = await publish_all(bus, submissions)
        pipeline = [
            (event, f"bench:{build_id}:{number}")
            for plan, build_id in zip(batch, ids, strict=True)
            for number, event in enumerate(pipeline_events(plan, build_id, history))
        ]
        await publish_all(bus, pipeline)
        build_ids.extend(ids)
        total += len(submissions) + len(pipeline)
    return total, build_ids


# --- load ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadResult:
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


WRK_SCRIPT = """
local paths = {%s}
local index = 0
request = function()
    index = index + 1
    return wrk.format("GET", paths[(index %% #paths) + 1], {["Authorization"] = "Bearer %s"})
end
done = function(summary, latency, requests)
    io.write(string.format("ENVSTORE p50_us=%%d p99_us=%%d requests=%%d errors=%%d seconds=%%f\\n",
        latency:percentile(50), latency:percentile(99), summary.requests,
        summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write
            + summary.errors.timeout,
        summary.duration / 1e6))
end
"""


def wrk_load(base_url: str, token: str, paths: list[str], clients: int, seconds: int, directory: Path) -> LoadResult:
    script = directory / "paths.lua"
    script.write_text(WRK_SCRIPT % (", ".join(f'"{path}"' for path in paths), token))
    command = [
        "wrk", f"--threads={min(2, clients)}", f"--connections={clients}", f"--duration={seconds}s",
        "--timeout=30s", f"--script={script}", base_url + paths[0],
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    found = re.search(r"ENVSTORE p50_us=(\d+) p99_us=(\d+) requests=(\d+) errors=(\d+) seconds=([\d.]+)", output)
    if found is None:
        raise RuntimeError(f"wrk printed no summary:\n{output}")
    p50, p99, requests, errors, elapsed = found.groups()
    return LoadResult(int(requests), int(errors), float(elapsed), int(p50) / 1000, int(p99) / 1000)


async def asyncio_load(base_url: str, token: str, paths: list[str], clients: int, seconds: int) -> LoadResult:
    """``clients`` connections, each sending its next request when the last one is answered."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(base_url, connector=connector, headers=headers) as http:

        async def client(number: int) -> None:
            nonlocal errors
            index = number
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with http.get(paths[index % len(paths)]) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - started)
                index += clients

        started = time.perf_counter()
        await asyncio.gather(*(client(number) for number in range(clients)))
        elapsed = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100)
    return LoadResult(len(latencies), errors, elapsed, quantiles[49] * 1000, quantiles[98] * 1000)


# --- the run -------------------------------------------------------------------------------------


async def wait_for_api(url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(f"{url}/api/v1/") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API did not answer at {url} within {READY_TIMEOUT_SECONDS} s")
            await asyncio.sleep(0.1)


async def row_counts(dsn: str) -> dict[str, int]:
    connection = await asyncpg.connect(dsn)
    try:
        return {
            table: await connection.fetchval(f"SELECT count(*) FROM {table}")
            for table in ("namespace", "environment", "build", "build_artifact", "build_package")
        }
    finally:
        await connection.close()


async def main(arguments: argparse.Namespace) -> None:
    generator = arguments.load_generator or ("wrk" if shutil.which("wrk") else "asyncio")
    with tempfile.TemporaryDirectory(prefix="envstore-bench-") as directory:
        stack = EmbeddedStack(Path(directory) / "stack")
        try:
            # The event log and the read model's database; no worker, so nothing builds.
            await stack.start_infrastructure()
            settings = EnvstoreSettings(
                data_dir=stack.data_directory,
                nats_url=stack.nats.url,
                nats_credentials=stack.nats_credentials.seed(PROJECTION_REBUILD),
                database_url=stack.postgres.dsn,
            )
            # A synthetic history of every service's events is an import: the superuser's credentials.
            bus = await stack.connect_bus(SUPERUSER)
            try:
                await bus.ensure_stream()
                started = time.perf_counter()
                events, build_ids = await write_history(
                    bus, arguments.environments, arguments.builds_per_environment, arguments.history
                )
                published = time.perf_counter() - started
            finally:
                await bus.close()
            print(f"history ({arguments.history}): {events} events for {len(build_ids)} builds of {arguments.environments} "
                  "environments, "
                  f"published in {published:.1f} s ({events / published:,.0f} events/s)")

            started = time.perf_counter()
            last = await rebuild_projection(settings, stall_seconds=REPLAY_STALL_SECONDS)
            replayed = time.perf_counter() - started
            print(f"replay (envstore projection rebuild): {last} events in {replayed:.1f} s = "
                  f"{last / replayed:,.0f} events/s")
            counts = await row_counts(settings.database_url)
            print("read model: " + ", ".join(f"{count} {table} rows" for table, count in counts.items()))

            await stack.start_service("api")
            await wait_for_api(stack.api_url)
            randomness = random.Random(11)
            sampled = randomness.sample(build_ids, min(SAMPLED_BUILD_IDS, len(build_ids)))
            pages = -(-arguments.environments // 100)
            routes = {
                "GET /api/v1/environment/ (CLI: all rows)": ["/api/v1/environment/"],
                "GET /api/v1/environment/?page=N&size=100": [
                    f"/api/v1/environment/?page={page}&size=100" for page in range(1, pages + 1)
                ],
                "GET /api/v1/build/{id}/": [f"/api/v1/build/{build_id}/" for build_id in sampled],
            }
            print(f"load: {arguments.clients} concurrent clients, {arguments.seconds} s per route, {generator}, "
                  f"loopback, admin token")
            for label, paths in routes.items():
                if generator == "wrk":
                    result = await asyncio.to_thread(
                        wrk_load, stack.api_url, stack.admin_token, paths, arguments.clients, arguments.seconds,
                        Path(directory),
                    )
                else:
                    result = await asyncio_load(stack.api_url, stack.admin_token, paths, arguments.clients, arguments.seconds)
                print(f"  {label:<44} p50 {result.p50_ms:8.1f} ms   p99 {result.p99_ms:8.1f} ms   "
                      f"{result.per_second:8.1f} req/s   ({result.requests} requests, {result.errors} errors)")
        finally:
            await stack.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--environments", type=int, default=10_000)
    parser.add_argument("--builds-per-environment", type=int, default=5)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--load-generator", choices=["wrk", "asyncio"])
    parser.add_argument("--history", choices=["lean", "pipeline"], default="lean")
    asyncio.run(main(parser.parse_args()))
