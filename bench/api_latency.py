"""API reads over a large read model against a bare aiohttp handler, and the projector's replay rate.

Writes a history straight onto the event bus: 10,000 environments in 100 namespaces, 5 builds
each (50,000 builds), every build recorded with the events the real pipeline emits for it
("lean": build.submitted, artifact.ready for LOCKFILE, YAML and LOGS, build.completed;
"pipeline": also the progress events, build.solved and build.built with installed packages). Then:

1. replays that history into an empty read model with ``envstore projection rebuild``'s own
   function and prints events/s;
2. starts the API on it (no worker: nothing builds) and prints, for one request of each read
   route, the plan of every statement it runs (PostgreSQL's auto_explain, EXPLAIN ANALYZE);
3. times the CLI's full environment list (one request for all 10,000 rows, as conda-store's CLI
   asks) and ``conda-store list environment`` itself;
4. records every route's answers and serves them from a bare aiohttp handler in a process of its
   own (``http_load.py``): the ceiling. Each read route (build, environment, environment pages v1
   and v2 cursor, build pages, namespace pages, the CLI's full list) is loaded with ``wrk`` (50
   connections, closed loop), first on envstore and then on the bare handler: the ratio is
   envstore's share of the ceiling, measured in the same run;
5. offers a fixed load (300 req/s, open loop, every route in turn) to envstore and to the bare
   handler and prints the latency quantiles, counted from each request's scheduled send time;
6. with ``--profile WORD``, records the API with py-spy under wrk and prints where time went.

Needs ``wrk`` (Debian: ``apt-get install -y wrk``) and, for ``--profile``, ``py-spy`` (PyPI).
Other work on the machine shares its cores: the load average is printed at each step. Prints the
figures; asserts nothing.

    python bench/api_latency.py [--environments 10000] [--builds-per-environment 5] [--clients 50]
        [--seconds 10] [--rate 300] [--open-seconds 30] [--history lean|pipeline] [--routes WORD…]
        [--profile WORD…] [--replay-only] [--api-setting ENVSTORE_KEY=VALUE]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import hashlib
import os
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg

from envstore.api.rebuild import rebuild_projection
from envstore.common.collector_tuning import tune_collector_for_a_long_run
from envstore.common.bus_permissions import PROJECTION_REBUILD, SUPERUSER
from envstore.common.artifact_keys import artifact_key
from envstore.common.artifact_kinds import ArtifactKind
from envstore.common.build_keys import build_key
from envstore.common.service_runtime import connect_bus
from envstore.common.transport import Arrivals, EventBus
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
from envstore.launcher.free_ports import pick_free_port
from envstore.launcher.stack import EmbeddedStack
from http_load import BareServer, LoadResult, OpenLoopResult, RecordedAnswer, open_loop, wrk_load

NAMESPACES = 100
PLATFORM = "linux-64"
CHANNEL = "https://conda.anaconda.org/conda-forge"
ARTIFACTS = [ArtifactKind.LOCKFILE.value, ArtifactKind.YAML.value, ArtifactKind.LOGS.value]
PACKAGES_PER_BUILD = 5
PACKAGE_POOL = [f"package{index:03d}" for index in range(300)]
PUBLISH_WINDOW = 2000  # events awaiting their JetStream ack at once
READY_TIMEOUT_SECONDS = 60
REPLAY_STALL_SECONDS = 300  # the replay fails only if it stops moving this long
SAMPLED_IDS = 2000
CLI_LIST_PATH = "/api/v1/environment/"  # conda-store's CLI asks for no page: every row at once


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
        ids = list(range(start + 1, start + len(batch) + 1))  # as the API allocates them, in order
        submissions = [
            (
                BuildSubmitted(
                    namespace=plan.namespace,
                    environment=plan.environment,
                    build_id=build_id,
                    description=plan.specification["description"],
                    specification=plan.specification,
                    spec_sha256=plan.spec_sha256,
                    platforms=[PLATFORM],
                    artifacts=ARTIFACTS,
                    scheduled_on=plan.scheduled_on,
                ),
                f"bench-submit:{start + offset}",
            )
            for offset, (plan, build_id) in enumerate(zip(batch, ids, strict=True))
        ]
        await publish_all(bus, submissions)
        pipeline = [
            (event, f"bench:{build_id}:{number}")
            for plan, build_id in zip(batch, ids, strict=True)
            for number, event in enumerate(pipeline_events(plan, build_id, history))
        ]
        await publish_all(bus, pipeline)
        build_ids.extend(ids)
        total += len(submissions) + len(pipeline)
    return total, build_ids


# --- the routes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    label: str
    paths: list[str]


async def cursor_pages(http: aiohttp.ClientSession, first: str) -> list[str]:
    """Every page of a v2 cursor walk, as the URLs a client sends."""
    paths = [first]
    while True:
        async with http.get(paths[-1]) as response:
            document = await response.json()
        if not document["data"]:
            return paths[:-1] or paths
        paths.append(f"{first}&cursor={document['cursor']}")


async def read_routes(http: aiohttp.ClientSession, environments: int, build_ids: list[int]) -> list[Route]:
    randomness = random.Random(11)
    sampled_builds = randomness.sample(build_ids, min(SAMPLED_IDS, len(build_ids)))
    sampled_environments = randomness.sample(range(environments), min(SAMPLED_IDS, environments))
    environment_pages = -(-environments // 100)
    build_pages = -(-len(build_ids) // 100)
    return [
        Route("GET /api/v1/build/{id}/", [f"/api/v1/build/{build_id}/" for build_id in sampled_builds]),
        Route(
            "GET /api/v1/environment/{ns}/{name}/",
            [f"/api/v1/environment/team{index % NAMESPACES:03d}/env{index:05d}/" for index in sampled_environments],
        ),
        Route(
            "GET /api/v1/environment/?page=N&size=100",
            [f"/api/v1/environment/?page={page}&size=100" for page in range(1, environment_pages + 1)],
        ),
        Route("GET /api/v2/environment/?limit=100&cursor=…", await cursor_pages(http, "/api/v2/environment/?limit=100")),
        Route("GET /api/v1/build/?page=N&size=100", [f"/api/v1/build/?page={page}&size=100" for page in range(1, build_pages + 1)]),
        Route("GET /api/v1/namespace/?page=N&size=N", [f"/api/v1/namespace/?page=1&size={size}" for size in (10, 25, 50, 100)]),
        Route("GET /api/v1/environment/ (CLI: all rows)", [CLI_LIST_PATH]),
    ]


async def record_answers(http: aiohttp.ClientSession, routes: list[Route]) -> dict[str, RecordedAnswer]:
    """Each path's answer as the API gives it (which the bare handler then replays)."""
    answers: dict[str, RecordedAnswer] = {}
    for route in routes:
        for path in route.paths:
            async with http.get(path) as response:
                body = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{path} answered {response.status}: {body[:300]!r}")
                answers[path] = RecordedAnswer(response.status, response.content_type, body)
    return answers


def mixed(routes: list[Route], count: int) -> list[str]:
    """Every route in turn, each cycling through its paths."""
    return [routes[index % len(routes)].paths[(index // len(routes)) % len(routes[index % len(routes)].paths)]
            for index in range(count)]


# --- EXPLAIN: the plans of the queries each route runs ------------------------------------------


async def set_auto_explain(superuser_dsn: str, on: bool, slower_than_ms: int = 0) -> None:
    """PostgreSQL's auto_explain logs the plan of every statement the API's connections run while
    on; new connections load it (``session_preload_libraries``), a reload switches it."""
    connection = await asyncpg.connect(superuser_dsn)
    try:
        await connection.execute("LOAD 'auto_explain'")
        await connection.execute("ALTER SYSTEM SET session_preload_libraries = 'auto_explain'")
        await connection.execute(f"ALTER SYSTEM SET auto_explain.log_min_duration = {slower_than_ms if on else -1}")
        await connection.execute("ALTER SYSTEM SET auto_explain.log_analyze = on")
        await connection.execute("ALTER SYSTEM SET auto_explain.log_buffers = on")
        await connection.execute("SELECT pg_reload_conf()")
    finally:
        await connection.close()


PLAN_ENTRY = re.compile(r"LOG:  duration: ([\d.]+) ms  plan:\n(.*?)(?=\n\S[^\n]*(?:LOG|ERROR|WARNING|FATAL):|\Z)", re.S)


def explained_plans(log_text: str) -> list[tuple[float, str, list[str]]]:
    plans = []
    for found in PLAN_ENTRY.finditer(log_text):
        lines = [line.strip() for line in found.group(2).splitlines() if line.strip()]
        query = " ".join(line.removeprefix("Query Text:").strip() for line in lines if line.startswith("Query Text:"))
        nodes = [line for line in lines if not line.startswith("Query Text:")]
        if query.startswith("SELECT pg_advisory_unlock_all()"):
            continue  # asyncpg's pool resetting a connection it took back (shown as a count)
        plans.append((float(found.group(1)), query, nodes))
    return plans


async def explain_routes(stack: EmbeddedStack, http: aiohttp.ClientSession, routes: list[Route]) -> None:
    log_path = stack.postgres.log_path
    await set_auto_explain(stack.postgres.superuser_dsn, True)
    await asyncio.sleep(0.5)
    try:
        for route in routes:
            # A URL not asked for before (answers may be cached by URL): what a first request costs.
            path = route.paths[-1]
            offset = log_path.stat().st_size
            started = time.perf_counter()
            async with http.get(path + ("&" if "?" in path else "?") + "explain=1") as response:
                await response.read()
            elapsed = (time.perf_counter() - started) * 1000
            await asyncio.sleep(0.3)  # the log is written by another process
            with log_path.open("rb") as log_file:
                log_file.seek(offset)
                log_text = log_file.read().decode(errors="replace")
            plans = explained_plans(log_text)
            resets = log_text.count("SELECT pg_advisory_unlock_all()")
            print(f"  {route.label}: {len(plans)} statements and {resets} connection resets, {elapsed:.1f} ms for "
                  "the request (with EXPLAIN ANALYZE)")
            for duration, query, nodes in plans:
                print(f"    {duration:7.2f} ms  {' '.join(query.split())[:150]}")
                for node in nodes[:14]:
                    print(f"               {node[:150]}")
    finally:
        await set_auto_explain(stack.postgres.superuser_dsn, False)


# --- profiles ------------------------------------------------------------------------------------


def profile_summary(raw_profile: Path, top: int = 25) -> list[str]:
    """py-spy's collapsed stacks → the functions holding the most samples, inclusive and own."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in raw_profile.read_text().splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [re.sub(r" \(.*?/(site-packages|services|libs)/", " (", frame) for frame in stack_text.split(";")]
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
        own[frames[-1]] = own.get(frames[-1], 0) + count
    lines = [f"{total} samples; own time:"]
    for frame, count in sorted(own.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"  {100 * count / total:5.1f} %  {frame}")
    lines.append("inclusive:")
    for frame, count in sorted(inclusive.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"  {100 * count / total:5.1f} %  {frame}")
    return lines


def start_py_spy(pid: int, output: Path, seconds: int | None = None) -> subprocess.Popen[bytes]:
    """py-spy recording ``pid`` (until SIGINT, or for ``seconds``) as collapsed stacks."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--rate", "250", "--format", "raw", "--output", str(output),
         "--nonblocking", *(("--duration", str(seconds)) if seconds else ())],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def profiled_wrk(pid: int, url: str, token: str, paths: list[str], connections: int, seconds: int, output: Path) -> LoadResult:
    recorder = start_py_spy(pid, output, seconds)
    try:
        return wrk_load(url, token, paths, connections, seconds)
    finally:
        recorder.wait(timeout=seconds + 60)


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


async def timed_requests(http: aiohttp.ClientSession, path: str, times: int) -> list[float]:
    seconds = []
    for _ in range(times):
        started = time.perf_counter()
        async with http.get(path) as response:
            await response.read()
        seconds.append(time.perf_counter() - started)
    return seconds


def timed_cli(api_url: str, token: str, *arguments: str) -> float:
    environment = {**os.environ, "CONDA_STORE_URL": api_url, "CONDA_STORE_AUTH": "token", "CONDA_STORE_TOKEN": token}
    started = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "conda-store"), *arguments], env=environment,
                   stdout=subprocess.DEVNULL, check=True, timeout=300)
    return time.perf_counter() - started


def tree_cpu_seconds(root_pid: int) -> float:
    """CPU seconds of a process and all its descendants, the exited ones included (PostgreSQL's
    postmaster reaps its backends: their time is in its cutime/cstime)."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = sum(int(value) for value in fields[11:15]) / ticks
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        tree.update(children)
        frontier.extend(children)
    return sum(times.get(pid, 0.0) for pid in tree)


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def ended_children_cpu_seconds() -> float:
    """CPU of this process's children that ended (and were waited for): the projector's log
    reader process, once the replay is done (the stack's servers still run)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def print_open_loop(name: str, result: OpenLoopResult) -> None:
    print(f"  {name:<9} p50 {result.p50_ms:6.1f} ms  p99 {result.p99_ms:6.1f} ms  "
          f"p99.9 {result.p999_ms:6.1f} ms  max {result.max_ms:6.1f} ms  "
          f"({result.requests} requests, {result.errors} errors, {result.timeouts} unanswered after "
          f"10 s, {result.late_sends} sent late)")


async def live_projection(
    stack: EmbeddedStack, build_ids: list[int], rate: float, seconds: float
) -> tuple[tuple[float, float, float, int], tuple[float, float, float, int]]:
    """Publish ``rate`` events a second (on schedule, not waiting for each other) to the running
    API's projector; each event's lag is from its scheduled send (and, second, from JetStream's
    acknowledgement, which leaves out this process's own delays in publishing) to the read model's
    commit that holds it (the projector's NOTIFY, which carries the last sequence of each commit)."""
    listener = await asyncpg.connect(stack.postgres.dsn)
    committed: list[tuple[float, int]] = []
    listener_callback = lambda _c, _p, _ch, payload: committed.append((time.perf_counter(), int(payload)))  # noqa: E731
    await listener.add_listener("envstore_projection", listener_callback)
    bus = await stack.connect_bus(SUPERUSER)
    published: list[tuple[int, float, float]] = []
    randomness = random.Random(3)
    try:
        async def one(number: int, scheduled: float) -> None:
            event = BuildProgress(build_id=randomness.choice(build_ids), phase="install", state="note",
                                  message=f"live {number}", service="builder")
            acknowledgement = await bus.publish(event, f"live:{number}:{scheduled}")
            published.append((acknowledgement.seq, scheduled, time.perf_counter()))

        tasks = []
        start = time.perf_counter() + 0.1
        for number in range(int(rate * seconds)):
            scheduled = start + number / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(number, scheduled)))
        await asyncio.gather(*tasks)
        last = max(sequence for sequence, _, _ in published)
        deadline = time.perf_counter() + 60
        while (not committed or committed[-1][1] < last) and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
    finally:
        await bus.close()
        await listener.close()
    commits = sorted(committed, key=lambda item: item[1])  # commits' sequences grow with time
    throughs = [through for _, through in commits]
    from_schedule, from_acknowledgement = [], []
    for sequence, scheduled, acknowledged in published:
        index = bisect.bisect_left(throughs, sequence)  # the first commit that holds it
        if index < len(commits):
            from_schedule.append((commits[index][0] - scheduled) * 1000)
            from_acknowledgement.append(max(0.0, commits[index][0] - acknowledged) * 1000)

    def summary(lags: list[float]) -> tuple[float, float, float, int]:
        lags.sort()
        quantiles = statistics.quantiles(lags, n=100)
        return quantiles[49], quantiles[98], lags[-1], len(lags)

    return summary(from_schedule), summary(from_acknowledgement)


def rebuild_settings(stack: EmbeddedStack) -> EnvstoreSettings:
    """Settings of ``envstore projection rebuild`` against the stack's bus and database."""
    return EnvstoreSettings(
        data_dir=stack.data_directory,
        nats_url=stack.nats.url,
        nats_credentials=stack.nats_credentials.seed(PROJECTION_REBUILD),
        database_url=stack.postgres.dsn,
    )


async def read_stream_alone(settings: EnvstoreSettings, last: int) -> tuple[float, float]:
    """The replay's floor: the same log read from JetStream and decoded, by the same libraries
    (nats-py's ordered consumer, msgspec) in batches as the projector takes them, with nothing
    applied or written. Returns (seconds, CPU seconds of this process)."""
    bus = await connect_bus(settings, PROJECTION_REBUILD)
    try:
        arrivals = Arrivals(4000)
        started, cpu_before = time.perf_counter(), own_cpu_seconds()
        subscription = await bus.replay(1, arrivals=arrivals)
        reached = 0
        while reached < last:
            for sequence, message in await arrivals.take(2000, REPLAY_STALL_SECONDS):
                bus.codec.decode(message.subject, message.data, sequence)
                reached = sequence
        seconds, cpu = time.perf_counter() - started, own_cpu_seconds() - cpu_before
        await subscription.unsubscribe()
        return seconds, cpu
    finally:
        await bus.close()


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def main(arguments: argparse.Namespace) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed (Debian: apt-get install -y wrk)")
    print(f"load average at start: {load_average()} ({os.cpu_count()} cores)")
    with tempfile.TemporaryDirectory(prefix="envstore-bench-") as directory:
        stack = EmbeddedStack(Path(directory) / "stack", settings=arguments.api_setting and dict(
            setting.split("=", 1) for setting in arguments.api_setting))
        try:
            # The event log and the read model's database; no worker, so nothing builds.
            await stack.start_infrastructure()
            settings = rebuild_settings(stack)
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

            postgres_pid = stack.postgres.pid
            if arguments.slow_statements_ms is not None:
                await set_auto_explain(stack.postgres.superuser_dsn, True, arguments.slow_statements_ms)
                log_offset = stack.postgres.log_path.stat().st_size
            if not arguments.default_collector:
                # As ``envstore projection rebuild`` and every service do at their start; here it
                # also takes this process's own history objects out of the collector's walks.
                tune_collector_for_a_long_run()
            for replay in range(arguments.replays):
                print(f"load average before the replay: {load_average()}")
                profiling = arguments.profile_replay and replay == arguments.replays - 1
                recorder = start_py_spy(os.getpid(), Path(directory) / "replay-profile.txt") if profiling else None
                started = time.perf_counter()
                own_before, postgres_before = own_cpu_seconds(), tree_cpu_seconds(postgres_pid)
                reader_before = ended_children_cpu_seconds()
                nats_before = tree_cpu_seconds(stack.nats.nodes[0].pid)
                last = await rebuild_projection(settings, stall_seconds=REPLAY_STALL_SECONDS)
                replayed = time.perf_counter() - started
                own = own_cpu_seconds() - own_before
                reader = ended_children_cpu_seconds() - reader_before
                postgres = tree_cpu_seconds(postgres_pid) - postgres_before
                nats = tree_cpu_seconds(stack.nats.nodes[0].pid) - nats_before
                print(f"replay (envstore projection rebuild): {last} events in {replayed:.1f} s = "
                      f"{last / replayed:,.0f} events/s; CPU: projector {own:.1f} s (its log reader process "
                      f"{reader:.1f} s), PostgreSQL {postgres:.1f} s, nats-server {nats:.1f} s = "
                      f"{last / (own + reader + postgres):,.0f} events per CPU second of projector, reader and "
                      "PostgreSQL", flush=True)
                floor_seconds, floor_cpu = await read_stream_alone(settings, last)
                print(f"  floor, the same log read and decoded alone (nats-py, msgspec): {last / floor_seconds:,.0f} "
                      f"events/s (CPU {floor_cpu:.1f} s); replay / floor = {floor_seconds / replayed:.2f}", flush=True)
                if recorder is not None:
                    recorder.send_signal(signal.SIGINT)
                    await asyncio.to_thread(recorder.wait, 60)
                    shutil.copyfile(Path(directory) / "replay-profile.txt", arguments.profile_output)
                    print(f"  py-spy profile of the replay (this process; collapsed stacks in {arguments.profile_output}):")
                    for line in profile_summary(Path(directory) / "replay-profile.txt"):
                        print("    " + line)
            if arguments.slow_statements_ms is not None:
                await set_auto_explain(stack.postgres.superuser_dsn, False)
                with stack.postgres.log_path.open("rb") as log_file:
                    log_file.seek(log_offset)
                    slow = explained_plans(log_file.read().decode(errors="replace"))
                print(f"  statements of the replays slower than {arguments.slow_statements_ms} ms: {len(slow)}")
                for duration, query, nodes in sorted(slow, key=lambda plan: -plan[0])[:8]:
                    print(f"    {duration:8.1f} ms  {' '.join(query.split())[:160]}")
                    for node in nodes[:10]:
                        print(f"                 {node[:150]}")
            counts = await row_counts(settings.database_url)
            print("read model: " + ", ".join(f"{count} {table} rows" for table, count in counts.items()))
            if arguments.replay_only:
                return

            await set_auto_explain(stack.postgres.superuser_dsn, False)
            await stack.start_service("api")
            await wait_for_api(stack.api_url)
            headers = {"Authorization": f"Bearer {stack.admin_token}"}
            timeout = aiohttp.ClientTimeout(total=120)
            async with aiohttp.ClientSession(stack.api_url, headers=headers, timeout=timeout) as http:
                routes = await read_routes(http, arguments.environments, build_ids)
                if arguments.routes:
                    routes = [route for route in routes if any(word in route.label for word in arguments.routes)]
                print("\nEXPLAIN ANALYZE of every statement one request of each route runs (auto_explain):")
                await explain_routes(stack, http, routes)

                # The CLI's full listing, one request at a time, the first one included.
                cli_seconds = await timed_requests(http, CLI_LIST_PATH, 5)
                answers = await record_answers(http, [*routes, Route("CLI", [CLI_LIST_PATH])])
            print(f"\nthe CLI's full environment list ({len(answers[CLI_LIST_PATH].body) / 1e6:.1f} MB), one request at "
                  f"a time: first {cli_seconds[0] * 1000:.0f} ms, then median "
                  f"{statistics.median(cli_seconds[1:]) * 1000:.0f} ms, max {max(cli_seconds[1:]) * 1000:.0f} ms")
            cli = await asyncio.to_thread(
                timed_cli, stack.api_url, stack.admin_token, "list", "environment", "--output", "json"
            )
            cli_floor = await asyncio.to_thread(timed_cli, stack.api_url, stack.admin_token, "--version")
            print(f"  `conda-store list environment --output json`: {cli:.2f} s (the CLI's own start, "
                  f"`conda-store --version`: {cli_floor:.2f} s)")
            answers.pop(CLI_LIST_PATH) if not any(route.paths == [CLI_LIST_PATH] for route in routes) else None

            async with BareServer(answers, Path(directory), pick_free_port("127.0.0.1")) as bare:
                print(f"\nclosed loop: wrk, {arguments.clients} connections, {arguments.seconds} s per route and server, "
                      f"loopback, admin token; bare = an aiohttp handler returning the same bytes "
                      f"(load average {load_average()})")
                print(f"  {'route':<46} {'envstore req/s':>14} {'bare req/s':>11} {'ratio':>6}   "
                      f"{'p50 ms':>7} {'p99 ms':>7}   (bare p50, p99)")
                for route in routes:
                    ours = await asyncio.to_thread(
                        wrk_load, stack.api_url, stack.admin_token, route.paths, arguments.clients, arguments.seconds
                    )
                    ceiling = await asyncio.to_thread(
                        wrk_load, bare.url, stack.admin_token, route.paths, arguments.clients, arguments.seconds
                    )
                    print(f"  {route.label:<46} {ours.per_second:14,.0f} {ceiling.per_second:11,.0f} "
                          f"{ours.per_second / ceiling.per_second:6.0%}   {ours.p50_ms:7.1f} {ours.p99_ms:7.1f}   "
                          f"({ceiling.p50_ms:.1f}, {ceiling.p99_ms:.1f})"
                          + (f"  {ours.errors} ERRORS" if ours.errors else ""))

                paths = mixed(routes, 3000)
                print(f"\nopen loop: {arguments.rate} req/s offered for {arguments.open_seconds} s, every route in turn "
                      f"(load average {load_average()})")
                for name, url in (("envstore", stack.api_url), ("bare", bare.url)):
                    result = await asyncio.to_thread(
                        open_loop, url, stack.admin_token, paths, arguments.rate, arguments.open_seconds
                    )
                    print_open_loop(name, result)
                if arguments.live_rate:
                    # The same reads while events arrive: the projector's batches share the API's
                    # process, and every change empties the cache of listings.
                    print(f"\nlive projection: {arguments.live_rate:.0f} events/s published for {arguments.open_seconds} s "
                          f"(build.progress of random builds) while the open loop runs (load average {load_average()})")
                    reads = asyncio.create_task(asyncio.to_thread(
                        open_loop, stack.api_url, stack.admin_token, paths, arguments.rate, arguments.open_seconds
                    ))
                    lag, after_ack = await live_projection(stack, build_ids, arguments.live_rate, arguments.open_seconds)
                    print_open_loop("envstore", await reads)
                    print(f"  projection lag (scheduled publish → read model, per event): p50 {lag[0]:.1f} ms, "
                          f"p99 {lag[1]:.1f} ms, max {lag[2]:.1f} ms ({lag[3]} events)")
                    print(f"  projection lag (JetStream's ack → read model, per event): p50 {after_ack[0]:.1f} ms, "
                          f"p99 {after_ack[1]:.1f} ms, max {after_ack[2]:.1f} ms")

            if arguments.profile:
                print(f"\npy-spy profile of the API under wrk ({arguments.seconds} s per route):")
                for route in routes:
                    if not any(word in route.label for word in arguments.profile):
                        continue
                    output = Path(directory) / "profile.txt"
                    result = await asyncio.to_thread(
                        profiled_wrk, stack.process("api").pid, stack.api_url, stack.admin_token, route.paths, arguments.clients,
                        arguments.seconds, output,
                    )
                    print(f"  {route.label}: {result.per_second:,.0f} req/s while profiled")
                    for line in profile_summary(output):
                        print("    " + line)
            print(f"\nload average at the end: {load_average()}")
        finally:
            await stack.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--environments", type=int, default=10_000)
    parser.add_argument("--builds-per-environment", type=int, default=5)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=10, help="of wrk per route and server")
    parser.add_argument("--rate", type=float, default=300, help="the open loop's offered requests per second")
    parser.add_argument("--open-seconds", type=float, default=30)
    parser.add_argument("--live-rate", type=float, default=1000, help="events/s published during the last open loop (0: none)")
    parser.add_argument("--history", choices=["lean", "pipeline"], default="lean")
    parser.add_argument("--routes", nargs="*", help="only routes whose label has one of these words")
    parser.add_argument("--profile", nargs="*", help="py-spy the API under wrk on routes whose label has one of these words")
    parser.add_argument("--replay-only", action="store_true")
    parser.add_argument("--default-collector", action="store_true",
                        help="replay with Python's default garbage-collector settings (A/B)")
    parser.add_argument("--replays", type=int, default=1, help="replay the history this many times")
    parser.add_argument("--profile-replay", action="store_true", help="py-spy the last replay")
    parser.add_argument("--profile-output", default="/tmp/envstore-replay-profile.txt")
    parser.add_argument("--slow-statements-ms", type=int, help="print the plans of the replay's statements slower than this")
    parser.add_argument("--api-setting", action="append", help="KEY=VALUE given to the API (e.g. ENVSTORE_…)")
    asyncio.run(main(parser.parse_args()))
