"""The read model does not depend on how the log is cut into batches.

The projector applies one batch in memory while the batch before it is still being committed,
carrying the rows that batch writes into the next one, and reads the rest from PostgreSQL. A row
carried wrongly — or read from PostgreSQL before the batch that wrote it committed — shows as a
read model that differs with the batch size. So one synthetic log, in which builds' events are
interleaved, rows are read and changed again in later batches (builds, environments, artifacts,
shared packages) and events applied by SQL come between them, is replayed with batches of 1, 7,
64 and 2,000 events, and every table must be the same, row for row."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from pathlib import Path

import asyncpg
import pytest

from envstore.api.rebuild import rebuild_projection
from envstore.common.bus_permissions import PROJECTION_REBUILD, SUPERUSER
from envstore.common.events import (
    ArtifactReady,
    BlobRef,
    BuildBuilt,
    BuildCanceled,
    BuildCompleted,
    BuildDeleteRequested,
    BuildFailed,
    BuildProgress,
    BuildRef,
    BuildSolved,
    BuildSubmitted,
    EnvironmentCurrentBuildSet,
    EnvironmentDeleted,
    EnvironmentUpdated,
    Event,
    InstalledPackage,
    NamespaceCreated,
)
from envstore.common.hashing import specification_sha256
from envstore.common.settings import EnvstoreSettings
from envstore.launcher.stack import EmbeddedStack
from tests.log_readers import log_readers_of

CHANNEL = "https://conda.example.org/test-channel"
PLATFORM = "linux-64"
ARTIFACTS = ["LOCKFILE", "YAML"]
TABLES = {
    "namespace": "id",
    "environment": "id",
    "specification": "id",
    "build": "id",
    "build_artifact": "id",
    "build_progress": "sequence",
    "conda_channel": "id",
    "conda_package": "id",
    "conda_package_build": "id",
    "build_package": "build_id, package_build_id",
    "audit_event": "sequence",
    "aggregate_position": "subjects",
}


def package(name: str, version: str, build: str) -> InstalledPackage:
    return InstalledPackage(
        name=name, version=version, build=build, build_number=0, channel=CHANNEL, subdir=PLATFORM, size=1000,
        sha256=f"{name}-{version}".ljust(64, "0")[:64], md5=None, license="MIT", depends=[], constrains=[],
        timestamp=1_700_000_000_000,
    )


def blob(label: str) -> BlobRef:
    return BlobRef(digest="sha256:" + label.encode().hex().ljust(64, "0")[:64], size=100)


def pipeline(randomness: random.Random, build_id: int, namespace: str, environment: str, spec_sha256: str) -> list[Event]:
    """What the workers publish for one build, in order, ending in one of the three outcomes."""
    reference = BuildRef(build_id=build_id, namespace=namespace, environment=environment, build_key=f"key-{build_id}",
                         spec_sha256=spec_sha256, artifacts=ARTIFACTS, platforms=[PLATFORM])
    # Packages shared between builds, new versions and new builds of a known version now and
    # then: rows made in one batch and looked up again in the next.
    packages = [package(name, randomness.choice(["1.0", "1.1", f"2.{build_id % 5}"]), f"h{randomness.randrange(3)}_0")
                for name in randomness.sample(["alpha", "beta", "gamma", "delta", "eps"], 3)]
    events: list[Event] = [
        BuildProgress(build_id=build_id, phase="solve", state="started", service="solver"),
        BuildSolved(build=reference, lock=blob(f"lock{build_id}"), package_count=len(packages), solve_seconds=0.1),
        BuildProgress(build_id=build_id, phase="install", state="started", service="builder"),
        BuildBuilt(build=reference, lock=blob(f"lock{build_id}"), prefix=f"/envs/{build_id}", size_bytes=3000,
                   package_count=len(packages), install_seconds=0.2, packages=packages),
    ]
    outcome = randomness.random()
    if outcome < 0.15:
        return [*events, BuildFailed(build_id=build_id, phase="install", reason="no space", log=blob(f"log{build_id}"))]
    if outcome < 0.25:
        return [*events, BuildCanceled(build_id=build_id, reason="asked to")]
    for kind in ("LOCKFILE", "YAML"):
        events.append(ArtifactReady(build_id=build_id, kind=kind, key=f"{kind.lower()}/{build_id}", blob=blob(f"{kind}{build_id}")))
    # An artifact published again (a retried packager): the same row, changed.
    events.append(ArtifactReady(build_id=build_id, kind="YAML", key=f"yaml/{build_id}-again", blob=blob(f"again{build_id}")))
    events.append(BuildCompleted(build_id=build_id, namespace=namespace, environment=environment, size_bytes=5000,
                                 artifacts=ARTIFACTS))
    return events


def synthetic_log(seed: int = 20261206) -> list[Event]:
    """Builds whose events interleave (per build, in order), with environment commands between."""
    randomness = random.Random(seed)
    namespaces = ["carry-a", "carry-b", "carry-c"]
    log: list[Event] = [NamespaceCreated(namespace=namespace) for namespace in namespaces[:2]]
    running: list[list[Event]] = []
    build_id = 0
    for _ in range(150):
        namespace = randomness.choice(namespaces)
        environment = f"env-{randomness.randrange(6)}"
        if randomness.random() < 0.7 or not running:
            build_id += 1
            specification = {"name": environment, "channels": [CHANNEL],
                             "dependencies": [f"alpha >={build_id % 3}"], "description": None}
            digest = specification_sha256(specification)
            log.append(BuildSubmitted(namespace=namespace, environment=environment, build_id=build_id,
                                      description=f"build {build_id}" if build_id % 4 else None,
                                      specification=specification, spec_sha256=digest, platforms=[PLATFORM],
                                      scheduled_on=1_790_000_000.0 + build_id,
                                      artifacts=ARTIFACTS))
            running.append(pipeline(randomness, build_id, namespace, environment, digest))
        choice = randomness.random()
        if choice < 0.08:
            log.append(EnvironmentUpdated(namespace=namespace, environment=environment, description=f"now {len(log)}"))
        elif choice < 0.12 and build_id > 3:
            log.append(EnvironmentCurrentBuildSet(namespace=namespace, environment=environment,
                                                  build_id=randomness.randrange(1, build_id)))
        elif choice < 0.15 and build_id > 3:
            log.append(BuildDeleteRequested(namespace=namespace, environment=environment,
                                            build_id=randomness.randrange(1, build_id), keep=["LOCKFILE"]))
        elif choice < 0.17:
            # Applied by SQL, between batched events: the batch is cut there.
            log.append(EnvironmentDeleted(namespace=namespace, environment=environment))
        # A few steps of a few running builds.
        for _ in range(randomness.randrange(1, 6)):
            if running:
                steps = randomness.choice(running)
                log.append(steps.pop(0))
                if not steps:
                    running.remove(steps)
    for steps in running:
        log.extend(steps)
    return log


async def table_rows(dsn: str) -> dict[str, list[tuple]]:
    connection = await asyncpg.connect(dsn)
    try:
        return {
            table: [tuple(row) for row in await connection.fetch(f"SELECT * FROM {table} ORDER BY {order}")]
            for table, order in TABLES.items()
        }
    finally:
        await connection.close()


@pytest.fixture(scope="module")
async def log_stack(session_directory: Path):  # type: ignore[no-untyped-def]
    """NATS and PostgreSQL only: no worker reacts to the synthetic builds."""
    stack = EmbeddedStack(session_directory / "projection-batches")
    try:
        await stack.start_infrastructure()
        bus = await stack.connect_bus(SUPERUSER)
        try:
            await bus.ensure_stream()
            for number, event in enumerate(synthetic_log()):
                await bus.publish(event, f"carry-{number}")
        finally:
            await bus.close()
        yield stack
    finally:
        await stack.stop()


async def test_every_batch_size_gives_the_same_read_model(
    log_stack: EmbeddedStack, caplog: pytest.LogCaptureFixture
) -> None:
    settings = EnvstoreSettings(
        data_dir=log_stack.data_directory,
        nats_url=log_stack.nats.url,
        nats_credentials=log_stack.nats_credentials.seed(PROJECTION_REBUILD),
        database_url=log_stack.postgres.dsn,
    )
    read_models = {}
    for batch_limit in (1, 7, 64, 2000):
        await rebuild_projection(settings, stall_seconds=30, batch_limit=batch_limit)
        read_models[batch_limit] = await table_rows(log_stack.postgres.dsn)

    # Every batch went the quick way: none was refused and applied again the careful way (which
    # would hide a row carried wrongly behind a correct result).
    assert "the careful way" not in caplog.text
    reference = read_models[1]
    # The log made what the comparison needs: builds of every outcome, current builds, packages.
    statuses = {row[4] for row in reference["build"]}
    assert statuses == {"COMPLETED", "FAILED", "CANCELED"}, statuses
    assert len(reference["build"]) > 80
    assert len(reference["conda_package_build"]) > 5
    assert any(row[5] is not None for row in reference["environment"]), "some environment was deleted"
    for batch_limit, read_model in read_models.items():
        for table in TABLES:
            assert read_model[table] == reference[table], f"{table} with batches of {batch_limit} events"


async def applied(connection: asyncpg.Connection) -> int:
    return await connection.fetchval("SELECT last_sequence FROM projection_checkpoint WHERE name = 'read_model'") or 0


async def test_a_killed_log_reader_is_replaced_and_the_read_model_is_the_same(
    log_stack: EmbeddedStack, caplog: pytest.LogCaptureFixture
) -> None:
    """The projector's events come from a child process (``projection_reader``): SIGKILL it in the
    middle of a replay, and the projector starts another one from its checkpoint; nothing is lost
    or applied twice: the read model is the one nats-py in the projector's own process makes."""
    settings = EnvstoreSettings(
        data_dir=log_stack.data_directory,
        nats_url=log_stack.nats.url,
        nats_credentials=log_stack.nats_credentials.seed(PROJECTION_REBUILD),
        database_url=log_stack.postgres.dsn,
    )
    assert settings.projection_reader == "child-process"  # the default
    await rebuild_projection(settings.model_copy(update={"projection_reader": "in-process"}), stall_seconds=30)
    assert not log_readers_of(os.getpid())
    reference = await table_rows(log_stack.postgres.dsn)

    # One event per transaction: slow enough to be killed mid-way.
    rebuilding = asyncio.create_task(rebuild_projection(settings, stall_seconds=30, batch_limit=1))
    connection = await asyncpg.connect(log_stack.postgres.dsn)
    try:
        deadline = time.monotonic() + 30
        # The reader starts once the read model is dropped: then the checkpoint is the replay's.
        while not log_readers_of(os.getpid()) or await applied(connection) < 100:
            assert time.monotonic() < deadline and not rebuilding.done(), "the replay did not start"
            await asyncio.sleep(0.02)
        (reader,) = log_readers_of(os.getpid())
        os.kill(reader, signal.SIGKILL)
        killed_at = await applied(connection)
    finally:
        await connection.close()
    async with asyncio.timeout(60):
        last = await rebuilding
    assert killed_at < last, "the replay ended before its reader was killed"
    assert "the log's reader process ended" in caplog.text
    assert not log_readers_of(os.getpid()), "the replay's reader outlived it"
    assert await table_rows(log_stack.postgres.dsn) == reference
