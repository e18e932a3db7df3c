"""The NATS and PostgreSQL launchers, against the real server programs.

Each test starts a real server, uses it through the same client library the
services use, simulates a crash with kill(), restarts, and checks that the
data written before the crash is still there and that no process is left.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import asyncio
import time

import aiohttp
import asyncpg
import nats
import pytest
from nats.js.api import StorageType, StreamConfig

from envstore.launcher.child_process import child_pids, process_is_alive
from envstore.launcher.nats_process import NatsCluster, NatsServer, NatsServerError
from envstore.launcher.postgres_process import PostgresServer, PostgresServerError



def assert_all_gone(pids: set[int]) -> None:
    survivors = {pid for pid in pids if process_is_alive(pid)}
    assert not survivors, f"processes still running: {survivors}"
    assert not pids & set(child_pids(os.getpid())), "a server is still a child of the test process"


async def jetstream_config(server: NatsServer) -> dict:
    """JetStream's configuration as the running server reports it (its monitoring ``/varz``)."""
    async with aiohttp.ClientSession() as http, http.get(f"{server.monitoring_url}/varz") as response:
        return (await response.json())["jetstream"]["config"]


async def test_nats_jetstream_message_survives_kill_and_restart(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats")
    async with server:
        assert server.url == f"nats://127.0.0.1:{server.port}"
        # Durable by default: every write is synced before it is acknowledged.
        assert (await jetstream_config(server))["sync_always"] is True
        seen_pids = {server.pid}

        client = await nats.connect(server.url)
        jetstream = client.jetstream()
        await jetstream.add_stream(StreamConfig(name="EVENTS", subjects=["events.>"], storage=StorageType.FILE))
        ack = await jetstream.publish("events.created", b"environment-1")
        assert (ack.stream, ack.seq) == ("EVENTS", 1)
        assert (await jetstream.get_msg("EVENTS", seq=1)).data == b"environment-1"
        await client.close()

        port_before_crash = server.port
        await server.kill()
        assert not server.is_running
        assert_all_gone(seen_pids)

        await server.restart()
        assert server.port == port_before_crash
        seen_pids.add(server.pid)
        client = await nats.connect(server.url)
        try:
            stored = await client.jetstream().get_msg("EVENTS", seq=1)
            assert (stored.subject, stored.data) == ("events.created", b"environment-1")
        finally:
            await client.close()
    assert_all_gone(seen_pids)


async def publish_until_acknowledged(jetstream, subject: str, payload: bytes, timeout_seconds: float = 30):  # type: ignore[no-untyped-def]
    """Publish as envstore's transport does through an election: retried until acknowledged."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            return await jetstream.publish(subject, payload, headers={"Nats-Msg-Id": subject + payload.decode()}, timeout=2)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError, nats.js.errors.ServiceUnavailableError):
            assert time.monotonic() < deadline, "publishing did not resume after the node's death"
            await asyncio.sleep(0.1)


@pytest.mark.faults
async def test_nats_cluster_loses_no_acknowledged_event_when_a_node_dies(tmp_path: Path) -> None:
    cluster = NatsCluster(tmp_path / "nats", node_count=3)
    async with cluster:
        assert len(set(cluster.urls)) == 3 and cluster.url == ",".join(cluster.urls)
        for node in cluster.nodes:
            assert (await jetstream_config(node))["sync_always"] is True
        seen_pids = {node.pid for node in cluster.nodes}
        client = await nats.connect(cluster.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        try:
            jetstream = client.jetstream()
            await jetstream.add_stream(StreamConfig(name="EVENTS", subjects=["events.>"], storage=StorageType.FILE, num_replicas=3))
            for index in range(20):
                await publish_until_acknowledged(jetstream, "events.before", str(index).encode())
            leader_name = (await jetstream.stream_info("EVENTS")).cluster.leader
            leader = next(node for node in cluster.nodes if node.server_name == leader_name)
            await leader.kill()
            for index in range(20):
                await publish_until_acknowledged(jetstream, "events.after", str(index).encode())
            await leader.start()
            seen_pids.add(leader.pid)
            # Healthy: it is back in the cluster and its copy of the stream is current.
            await leader.wait_until_healthy(30)
            stored = [await jetstream.get_msg("EVENTS", seq=sequence) for sequence in range(1, 41)]
            assert [(message.subject, message.data) for message in stored] == [
                ("events.before", str(index).encode()) for index in range(20)
            ] + [("events.after", str(index).encode()) for index in range(20)]
        finally:
            await client.close()
    assert_all_gone(seen_pids)


def postgres_process_ids(server: PostgresServer) -> set[int]:
    assert server.pid is not None
    return {server.pid, *child_pids(server.pid)}


async def test_postgres_row_survives_kill_and_restart(tmp_path: Path) -> None:
    # tmp_path and its ancestors are root-only (0700) and stay so: the
    # unprivileged PostgreSQL user must work there all the same.
    assert tmp_path.stat().st_mode & 0o777 == 0o700
    server = PostgresServer(tmp_path / "postgres")
    async with server:
        password = (tmp_path / "postgres-writer-password").read_text()
        assert server.dsn == f"postgresql://envstore:{password}@127.0.0.1:{server.port}/envstore"
        seen_pids = postgres_process_ids(server)

        connection = await asyncpg.connect(server.dsn)
        # Durable by default: a commit is on disk when it returns.
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            assert await connection.fetchval(f"SHOW {setting}") == "on", setting
        await connection.execute("CREATE TABLE environments (name text PRIMARY KEY)")
        await connection.execute("INSERT INTO environments VALUES ('data-science')")
        seen_pids |= postgres_process_ids(server)  # now including this connection's backend

        port_before_crash = server.port
        await server.kill()
        assert not server.is_running
        assert_all_gone(seen_pids)
        connection.terminate()

        await server.restart()
        assert server.port == port_before_crash
        connection = await asyncpg.connect(server.dsn)
        try:
            assert await connection.fetchval("SELECT name FROM environments") == "data-science"
            seen_pids |= postgres_process_ids(server)
        finally:
            await connection.close()
    assert_all_gone(seen_pids)
    assert not (server.data_directory / "postmaster.pid").exists(), "not a clean shutdown"
    assert tmp_path.stat().st_mode & 0o777 == 0o700


async def test_postgres_restart_of_a_stopped_cluster_reuses_its_data(tmp_path: Path) -> None:
    async with PostgresServer(tmp_path / "postgres") as server:
        connection = await asyncpg.connect(server.dsn)
        await connection.execute("CREATE TABLE marker (id int)")
        await connection.close()
        port = server.port

    # A new instance on the same directory and port: initdb must be skipped.
    async with PostgresServer(tmp_path / "postgres", port=port) as reopened:
        connection = await asyncpg.connect(reopened.dsn)
        try:
            assert await connection.fetchval("SELECT count(*) FROM marker") == 0
        finally:
            await connection.close()


@pytest.fixture
def occupied_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


async def test_nats_on_an_occupied_port_fails_with_its_log(tmp_path: Path, occupied_port: int) -> None:
    server = NatsServer(tmp_path / "nats", port=occupied_port, startup_timeout=5.0)
    with pytest.raises(NatsServerError, match="address already in use"):
        await server.start()
    assert not server.is_running


async def test_postgres_on_an_occupied_port_fails_with_its_log(tmp_path: Path, occupied_port: int) -> None:
    server = PostgresServer(tmp_path / "postgres", port=occupied_port, startup_timeout=5.0)
    with pytest.raises(PostgresServerError, match="Address already in use"):
        await server.start()
    assert not server.is_running
