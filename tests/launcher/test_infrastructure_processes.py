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

import asyncpg
import nats
import pytest
from nats.js.api import StorageType, StreamConfig

from envstore.launcher.child_process import child_pids, process_is_alive
from envstore.launcher.nats_process import NatsServer, NatsServerError
from envstore.launcher.postgres_process import PostgresServer, PostgresServerError



def assert_all_gone(pids: set[int]) -> None:
    survivors = {pid for pid in pids if process_is_alive(pid)}
    assert not survivors, f"processes still running: {survivors}"
    assert not pids & set(child_pids(os.getpid())), "a server is still a child of the test process"


async def test_nats_jetstream_message_survives_kill_and_restart(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats")
    async with server:
        assert server.url == f"nats://127.0.0.1:{server.port}"
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
