"""``envstore up --tls``: a local CA signs NATS' and PostgreSQL's certificates, every service
verifies them, and a build goes end to end; a plaintext client (or one that does not trust the CA)
is refused by both. A 3-node NATS cluster routes over TLS, each node checking the others. And the
zero-config default: every port of the stack binds 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path

import aiohttp
import asyncpg
import nats
import pytest
from nats.js.api import StorageType, StreamConfig

from envstore.launcher.local_tls import LocalCertificateAuthority
from envstore.launcher.nats_process import NatsCluster
from envstore.launcher.stack import EmbeddedStack
from tests.api_client import ApiClient, environment_yaml
from tests.launcher.listening_sockets import listening_addresses


@pytest.fixture(scope="module")
async def tls_stack(session_directory: Path, channel_url: str):  # type: ignore[no-untyped-def]
    settings = {
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel_url,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel_url,
        "ENVSTORE_BUILD_ARTIFACTS": "LOCKFILE,YAML",
    }
    async with EmbeddedStack(session_directory / "tls-stack", settings=settings, tls=True) as running:
        yield running


async def server_greeting(host: str, port: int, then_send: bytes | None = None) -> tuple[dict, bytes]:
    """A NATS server's INFO, and what it answers a plaintext CONNECT with until it hangs up."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        info = json.loads((await asyncio.wait_for(reader.readline(), 5)).removeprefix(b"INFO "))
        answer = b""
        if then_send is not None:
            writer.write(then_send)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 10)
        return info, answer
    finally:
        writer.close()


async def test_a_stack_with_tls_builds_end_to_end(tls_stack: EmbeddedStack) -> None:
    service_environment = tls_stack.service_environment("solver")
    assert service_environment["ENVSTORE_NATS_URL"].startswith("tls://")
    assert service_environment["ENVSTORE_NATS_TLS_CA_FILE"] == str(tls_stack.tls_authority_file)
    assert "sslmode=verify-full" in service_environment["ENVSTORE_DATABASE_URL"]
    async with ApiClient(tls_stack.api_url, token=tls_stack.admin_token) as admin:
        build = await admin.wait_for_build(await admin.submit(environment_yaml("secured", ["hello"]), namespace="tls"))
        assert build["status"] == "COMPLETED", build["status_info"]
    # Every process really spoke TLS: the server holds no plaintext client connection.
    (node,) = tls_stack.nats.nodes
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{node.monitoring_url}/connz", params={"auth": "1"}) as response:
            connections = (await response.json())["connections"]
    assert connections and all(connection.get("tls_version") for connection in connections), connections
    key = Path(tls_stack.tls_authority_file).with_suffix(".key")
    assert key.stat().st_mode & 0o777 == 0o600


async def test_nats_refuses_plaintext_and_clients_that_do_not_trust_the_ca(tls_stack: EmbeddedStack) -> None:
    (node,) = tls_stack.nats.nodes
    info, answer = await server_greeting(node.host, node.port, b'CONNECT {"verbose":false}\r\nPING\r\n')
    assert info["tls_required"] is True
    # It takes the plaintext for a failed TLS handshake and hangs up: no PONG, nothing served.
    assert b"PONG" not in answer and b"+OK" not in answer, answer
    # The right key over TLS whose CA the client does not know: refused by the client's check.
    with pytest.raises(ssl.SSLCertVerificationError):
        await nats.connect(
            node.url,
            nkeys_seed_str=tls_stack.nats_credentials.seed("api"),
            tls=ssl.create_default_context(),
            allow_reconnect=False,
        )
    # And with the CA: admitted.
    client = await tls_stack.connect_nats("projection-rebuild")
    try:
        assert (await client.jetstream().stream_info("ENVSTORE")).config.name == "ENVSTORE"
    finally:
        await client.close()


async def test_postgresql_refuses_plaintext_and_clients_that_do_not_trust_the_ca(tls_stack: EmbeddedStack) -> None:
    postgres = tls_stack.postgres
    password = postgres.passwords.password("envstore")
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="no encryption"):
        await asyncpg.connect(
            host=postgres.host, port=postgres.port, user="envstore", password=password, database="envstore", ssl=False
        )
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncpg.connect(
            host=postgres.host,
            port=postgres.port,
            user="envstore",
            password=password,
            database="envstore",
            ssl=ssl.create_default_context(),
        )
    connection = await asyncpg.connect(postgres.dsn)
    try:
        assert await connection.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") is True
    finally:
        await connection.close()


async def route_answer(port: int, tls: ssl.SSLContext | None) -> bytes:
    """What a node's route listener says first to a caller (b"" if nothing within a second)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
    try:
        return await asyncio.wait_for(reader.read(200), 1)
    except TimeoutError:
        return b""
    finally:
        writer.close()


async def test_nats_cluster_routes_speak_tls_both_ways(tmp_path: Path) -> None:
    certificate = LocalCertificateAuthority(tmp_path / "tls").server_certificate("nats", ["127.0.0.1"])
    cluster = NatsCluster(tmp_path / "nats", node_count=3, tls=certificate)
    async with cluster:
        trusting = ssl.create_default_context(cafile=str(certificate.authority))
        a_node = ssl.create_default_context(cafile=str(certificate.authority))
        a_node.load_cert_chain(str(certificate.certificate), str(certificate.key))
        for node in cluster.nodes:
            assert node.cluster is not None
            # Plaintext gets nothing; TLS without a certificate the CA signed is refused; a node's
            # certificate is answered.
            assert await route_answer(node.cluster.route_port, None) == b""
            with pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED"):
                await route_answer(node.cluster.route_port, trusting)
            assert (await route_answer(node.cluster.route_port, a_node)).startswith(b"INFO ")
        client = await nats.connect(cluster.urls, tls=trusting)
        try:
            jetstream = client.jetstream()
            # Three replicas need the routes: they are up, over TLS.
            await jetstream.add_stream(StreamConfig(name="ROUTED", subjects=["routed.>"], storage=StorageType.FILE, num_replicas=3))
            acknowledgement = await jetstream.publish("routed.one", b"1")
            info = await jetstream.stream_info("ROUTED")
            assert acknowledgement.seq == 1 and len(info.cluster.replicas or []) == 2
        finally:
            await client.close()


@pytest.mark.parametrize("which", ["default", "tls"])
async def test_every_port_of_the_stack_binds_loopback(
    which: str, stack: EmbeddedStack, tls_stack: EmbeddedStack
) -> None:
    running = stack if which == "default" else tls_stack
    pids = [child.pid for child in running.services.values()]
    pids += [node.pid for node in running.nats.nodes] + [running.postgres.pid]
    addresses = set().union(*(listening_addresses(pid) for pid in pids if pid is not None))
    ports = {port for _, port in addresses}
    assert {running.api_port, running.registry_port, running.postgres.port, *running.metrics_ports.values()} <= ports
    assert {node.port for node in running.nats.nodes} <= ports
    assert {host for host, _ in addresses} == {"127.0.0.1"}, sorted(addresses)
