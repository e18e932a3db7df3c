"""A real cluster, as `envstore up --nats-nodes 3 --replicas 2` runs it: three NATS nodes routed on
loopback with the stream, the id counters and the consumers on all three, two processes of every
replicated service, API and registry replicas sharing one port each. Builds complete; killing the
NATS node that leads the stream in the middle of a build loses nothing (the build completes, each of
its effects once), and the node comes back with the stream current."""

from __future__ import annotations

import asyncio
import collections
import json
from pathlib import Path

import aiohttp
import nats
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from envstore.common.bus_permissions import PROJECTION_REBUILD
from envstore.common.events import BuildBuilt, BuildCompleted, BuildFailed, BuildProgress, BuildSolved
from envstore.launcher.stack import REPLICATED_SERVICES, EmbeddedStack
from tests.api_client import ApiClient, environment_yaml
from tests.stream_reader import events_of_build

pytestmark = pytest.mark.faults

NODES, REPLICAS = 3, 2


@pytest.fixture(scope="module")
async def cluster_stack(session_directory: Path, channel_url: str):  # type: ignore[no-untyped-def]
    settings = {
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel_url,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel_url,
        "ENVSTORE_BUILD_ARTIFACTS": "LOCKFILE,YAML,CONDA_PACK",
        # A killed builder's build comes back to the other replica after this (outlasting an election).
        "ENVSTORE_WORKER_ACK_WAIT_SECONDS": "10",
    }
    async with EmbeddedStack(session_directory / "cluster", settings=settings, replicas=REPLICAS, nats_nodes=NODES) as stack:
        yield stack


async def requests_counted(url: str) -> float:
    """HTTP requests a replica answered so far (its own listener's metrics)."""
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as response:
        text = await response.text()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("envstore_http_requests_total{")
    )


async def test_three_nats_nodes_and_two_replicas_of_every_service_build(cluster_stack: EmbeddedStack) -> None:
    stack = cluster_stack
    for name in REPLICATED_SERVICES:
        assert [process.replica for process in stack.replicas(name)] == list(range(REPLICAS)), name
    assert len(stack.replicas("nats")) == NODES and len(stack.nats.urls) == NODES

    connection = await stack.connect_nats("api")
    try:
        jetstream = connection.jetstream()
        for stream in ("ENVSTORE", "ENVSTORE_IDS"):
            info = await jetstream.stream_info(stream)
            assert info.config.num_replicas == NODES and len(info.cluster.replicas) == NODES - 1, stream
    finally:
        await connection.close()

    before = {(name, replica): await requests_counted(stack.replica_url(name, replica)) for name in ("api", "registry") for replica in range(REPLICAS)}
    async with ApiClient(stack.api_url, token=stack.admin_token) as api:
        build_ids = [
            await api.submit(environment_yaml(f"clustered-{index}", packages), "cluster")
            for index, packages in enumerate((["tinyjson"], ["configlib"], ["textutils"], ["hello"]))
        ]
        for build_id in build_ids:
            build = await api.wait_for_build(build_id, timeout_seconds=120)
            assert build["status"] == "COMPLETED", build["status_info"]
    # The durable consumers are on every node too (they inherit the stream's replicas).
    for durable in ("solver", "builder", "packager"):
        # Each worker's own credentials read its consumer.
        connection = await stack.connect_nats(durable)
        try:
            info = await connection.jetstream().consumer_info("ENVSTORE", durable)
            assert len(info.cluster.replicas) == NODES - 1, durable
        finally:
            await connection.close()

    # One port each for the API and the registry, shared by their replicas (SO_REUSEPORT): fresh
    # connections reach both.
    for _ in range(24):
        async with aiohttp.ClientSession() as http:  # a new connection each time
            async with http.get(f"{stack.api_url}/api/v1/") as response:
                assert response.status == 200
            async with http.get(f"{stack.registry_url}/v2/") as response:
                assert response.status in (200, 401)
    for key, count in before.items():
        assert await requests_counted(stack.replica_url(*key)) > count, f"{key} answered no request"


async def test_a_nats_node_killed_mid_build_loses_nothing_and_comes_back(cluster_stack: EmbeddedStack) -> None:
    stack = cluster_stack
    # Followed as any reader of the log does (an ordered consumer, with a reader's credentials).
    connection = await stack.connect_nats(PROJECTION_REBUILD)
    install_started: asyncio.Queue[int] = asyncio.Queue()

    async def on_progress(message) -> None:  # type: ignore[no-untyped-def]
        progress = json.loads(message.data)
        if progress["phase"] == "install" and progress["state"] == "started":
            await install_started.put(progress["build_id"])

    subscription = await connection.jetstream().subscribe(
        BuildProgress.subject_pattern(),
        stream=stack.nats_stream,
        cb=on_progress,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
    )
    try:
        leader = (await connection.jetstream().stream_info("ENVSTORE")).cluster.leader
        node = next(index for index, server in enumerate(stack.nats.nodes) if server.server_name == leader)
        async with ApiClient(stack.api_url, token=stack.admin_token) as api:
            build_id = await api.submit(environment_yaml("node-lost", ["reportkit", "cachekit", "units"]), "cluster")
            while await asyncio.wait_for(install_started.get(), 60) != build_id:
                pass
            await stack.kill_nats_node(node)  # SIGKILL the stream's leader; it stays down
            build = await api.wait_for_build(build_id, timeout_seconds=120)
            assert build["status"] == "COMPLETED", build["status_info"]
    finally:
        await subscription.unsubscribe()
        await connection.close()

    kinds = collections.Counter(type(event).__name__ for event in await events_of_build(stack, build_id))
    assert (kinds[BuildSolved.__name__], kinds[BuildBuilt.__name__], kinds[BuildCompleted.__name__]) == (1, 1, 1), kinds
    assert kinds[BuildFailed.__name__] == 0

    await stack.start_nats_node(node)  # healthy: back in the cluster, its copy of the stream current
    assert stack.process("nats", node).state == "running"
    lone = await nats.connect(stack.nats.nodes[node].url, **stack.nats_connect_options(PROJECTION_REBUILD))  # only the returned node
    try:
        info = await lone.jetstream().stream_info("ENVSTORE")
        assert {replica.name for replica in info.cluster.replicas} | {info.cluster.leader} == {
            server.server_name for server in stack.nats.nodes
        }
        assert all(replica.current for replica in info.cluster.replicas), info.cluster.replicas
    finally:
        await lone.close()


async def test_a_builder_killed_mid_build_hands_the_build_to_the_other_replica(cluster_stack: EmbeddedStack) -> None:
    """Builder 1 stopped, so builder 0 takes the build; once it installs, builder 1 is back and
    builder 0 is SIGKILLed for good: the build completes, by builder 1, each effect once."""
    stack = cluster_stack
    connection = await stack.connect_nats(PROJECTION_REBUILD)
    install_started: asyncio.Queue[int] = asyncio.Queue()

    async def on_progress(message) -> None:  # type: ignore[no-untyped-def]
        progress = json.loads(message.data)
        if progress["phase"] == "install" and progress["state"] == "started":
            await install_started.put(progress["build_id"])

    subscription = await connection.jetstream().subscribe(
        BuildProgress.subject_pattern(), stream=stack.nats_stream, cb=on_progress, ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
    )
    await stack.stop_service("builder", 1)
    try:
        async with ApiClient(stack.api_url, token=stack.admin_token) as api:
            build_id = await api.submit(environment_yaml("builder-lost", ["reportkit", "cachekit", "units", "plotkit"]), "cluster")
            while await asyncio.wait_for(install_started.get(), 60) != build_id:
                pass
            await stack.start_service("builder", 1)
            await stack.kill_service("builder", 0, restart=False)
            build = await api.wait_for_build(build_id, timeout_seconds=120)
            assert build["status"] == "COMPLETED", build["status_info"]
    finally:
        await subscription.unsubscribe()
        await connection.close()
        await stack.start_service("builder", 0)
    kinds = collections.Counter(type(event).__name__ for event in await events_of_build(stack, build_id))
    assert (kinds[BuildSolved.__name__], kinds[BuildBuilt.__name__], kinds[BuildCompleted.__name__]) == (1, 1, 1), kinds
    assert kinds[BuildFailed.__name__] == 0
