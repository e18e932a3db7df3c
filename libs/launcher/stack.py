"""The embedded stack: NATS (JetStream; one node, or a cluster of several on loopback), PostgreSQL,
storage (a directory, or a local SeaweedFS S3 server when ENVSTORE_STORAGE_BACKEND=s3 names no
endpoint) and every service, in one or more replicas, as supervised child processes on loopback,
with every piece of data under one directory.

Every child is kept running by a ``SupervisedProcess`` (restarted with back-off when it exits on
its own, counted in the launcher's ``envstore_service_restarts_total``); the launcher serves its own
``/metrics``, ``/healthz`` and ``/readyz`` and keeps the state file (``stack_state``) that operator
commands read. Stopping goes in order: the front doors (api, registry), the workers, the webhook
deliverer, then NATS, PostgreSQL and S3.

Used by ``envstore up``/``envstore demo`` and by the tests, which kill and restart single
processes (``kill_service``, ``stop_nats_node``, ``restart_postgres`` …) to show that no accepted
build is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import ssl
import time
from pathlib import Path

import aiohttp
import nats
import nats.aio.client

from envstore.common.bus_permissions import PROJECTION_REBUILD
from envstore.common.events import FILESYSTEM_NAMESPACE
from envstore.common.local_secrets import read_or_create_secret
from envstore.common.metrics import Metrics
from envstore.common.readiness import Readiness
from envstore.common.settings import normalized_url_prefix
from envstore.common.transport import EventBus, inbox_prefix
from envstore.launcher.child_process import (
    LoggedChildProcess,
    ServerProcess,
    describe_failure,
    process_is_alive,
)
from envstore.launcher.free_ports import pick_free_port
from envstore.launcher.local_tls import LocalCertificateAuthority
from envstore.launcher.nats_auth import NatsCredentials
from envstore.launcher.nats_process import NatsCluster, NatsServer
from envstore.launcher.orphans import stop_orphans
from envstore.launcher.postgres_process import PostgresServer
from envstore.launcher.postgres_roles import WRITER
from envstore.launcher.prerequisites import describe_missing, missing_programs
from envstore.launcher.s3_process import SeaweedS3Server
from envstore.launcher.service_process import ServiceProcess
from envstore.launcher.stack_state import (
    ProcessRecord,
    StackState,
    StackStateError,
    read_state_file,
    remove_state,
    write_state,
)
from envstore.launcher.supervisor import ProcessState, RestartPolicy, SupervisedProcess

# "api.webhooks" is the API's webhook delivering process (python -m envstore.api.webhooks).
SERVICES = ("api", "solver", "builder", "packager", "registry", "api.webhooks")
# Services started only when their setting is set: the directory watcher (python -m envstore.watcher)
# when there are directories to watch.
OPTIONAL_SERVICES = {"watcher": "ENVSTORE_WATCH_PATHS"}
# Run in ``replicas`` processes each. The webhook deliverer stays one: its pace is set by the
# receivers it POSTs to, not by CPU.
REPLICATED_SERVICES = ("api", "solver", "builder", "packager", "registry")
# Stopped group by group, each group at once: first the front doors (no new requests or files), then the
# workers (each finishes or hands back what it holds), then the deliverer of what they published.
SERVICE_STOP_ORDER = (("api", "registry", "watcher"), ("solver", "builder", "packager"), ("api.webhooks",))
NATS, POSTGRES, S3 = "nats", "postgres", "s3"
# The identity on the bus each service process connects as (``bus_permissions``).
BUS_IDENTITIES = {name: name.removeprefix("api.") for name in (*SERVICES, *OPTIONAL_SERVICES)}
READY_TIMEOUT_SECONDS = 60.0
ADMIN_TOKEN_FILE = "admin-token"
NATS_CREDENTIALS_DIRECTORY = "nats-credentials"
TLS_DIRECTORY = "tls"


class StackError(RuntimeError):
    pass


class EmbeddedStack:
    def __init__(
        self,
        data_directory: Path,
        host: str = "127.0.0.1",
        api_port: int | None = None,
        registry_port: int | None = None,
        settings: dict[str, str] | None = None,
        service_settings: dict[str, dict[str, str]] | None = None,
        *,
        replicas: int = 1,
        nats_nodes: int = 1,
        restart_policy: RestartPolicy = RestartPolicy(),
        tls: bool = False,
    ) -> None:
        if replicas < 1 or nats_nodes < 1:
            raise StackError(f"replicas and NATS nodes must be at least 1 (got {replicas} and {nats_nodes})")
        self.data_directory = data_directory.resolve()
        # Settings for one service only (e.g. a packager with its own cache, as on another host).
        self.service_settings = {name: dict(values) for name, values in (service_settings or {}).items()}
        self.host = host
        self.api_port = api_port or pick_free_port(host)
        self.registry_port = registry_port or pick_free_port(host)
        self.extra_settings = dict(settings or {})
        self.url_prefix = normalized_url_prefix(self._wanted_setting("ENVSTORE_URL_PREFIX") or "")
        # Kept in the data directory (mode 0600) rather than printed: output ends up in logs.
        self.admin_token = self.extra_settings.get("ENVSTORE_ADMIN_TOKEN") or read_or_create_secret(
            self.admin_token_file
        )
        self.replica_count = replicas
        # One nkey per identity, generated on first start; the servers admit those keys only, with
        # the permissions this release derives (written into their configuration at every start).
        self.nats_credentials = NatsCredentials(self.data_directory / NATS_CREDENTIALS_DIRECTORY)
        # With TLS, a local CA (kept in the data directory) signs NATS' and PostgreSQL's
        # certificates, and every service verifies them against it.
        authority = LocalCertificateAuthority(self.data_directory / TLS_DIRECTORY) if tls else None
        server_names = sorted({host, "127.0.0.1", "localhost"})
        self.tls_authority_file = authority.certificate_file if authority else None
        self.nats = NatsCluster(
            self.data_directory / "nats",
            host=host,
            node_count=nats_nodes,
            authorization=self.nats_credentials.authorization(
                self.nats_stream, self._wanted_setting("ENVSTORE_FILESYSTEM_NAMESPACE") or FILESYSTEM_NAMESPACE
            ),
            tls=authority.server_certificate("nats", server_names) if authority else None,
        )
        self.postgres = PostgresServer(
            self.data_directory / "postgres",
            host=host,
            tls=authority.server_certificate("postgres", server_names) if authority else None,
        )
        self.s3 = self._local_s3_server_if_wanted()
        # The launcher's own /metrics (restarts), /healthz and /readyz (every child running).
        self.metrics = Metrics("launcher")
        self.readiness = Readiness()
        self.readiness.add("processes", self._processes_problem)
        self.launcher_metrics_port = pick_free_port(host)
        self._restart_policy = restart_policy
        self._processes: dict[tuple[str, int], SupervisedProcess] = {}
        # Every service replica gets a listener of its own for /metrics, /healthz and /readyz:
        # API and registry replicas share their public port, so only this one reaches a given one.
        self.metrics_ports: dict[tuple[str, int], int] = {}
        for index, node in enumerate(self.nats.nodes):
            self._supervise(NATS, index, node)
        self._supervise(POSTGRES, 0, self.postgres)
        if self.s3 is not None:
            self._supervise(S3, 0, self.s3)
        for name in self.service_names:
            for replica in range(self.replicas_of(name)):
                self.metrics_ports[(name, replica)] = pick_free_port(host)
                self._supervise(name, replica, self._service_process(name, replica))
        self._resources = contextlib.AsyncExitStack()
        self._state_dirty = False
        self._state_writer: asyncio.Task[None] | None = None
        self._state_written = False

    # --- where things are --------------------------------------------------------------------------

    @property
    def admin_token_file(self) -> Path:
        return self.data_directory / ADMIN_TOKEN_FILE

    @property
    def api_origin(self) -> str:
        """The API's listener, where the stack probes it (no prefix)."""
        return f"http://{self.host}:{self.api_port}"

    @property
    def api_url(self) -> str:
        """Where users reach the API: the listener and the URL prefix (``/api/v1/`` follows)."""
        return f"{self.api_origin}{self.url_prefix}"

    @property
    def registry_url(self) -> str:
        return f"http://{self.host}:{self.registry_port}"

    @property
    def launcher_metrics_url(self) -> str:
        return f"http://{self.host}:{self.launcher_metrics_port}/metrics"

    def replicas_of(self, name: str) -> int:
        return self.replica_count if name in REPLICATED_SERVICES else 1

    def metrics_url(self, name: str, replica: int = 0) -> str:
        """Where service ``name`` answers Prometheus scrapes (the API: its own route, with
        conda-store's series; every replica also has its own listener, ``replica_url``)."""
        if name == "api" and replica == 0:
            return f"{self.api_url}/metrics"
        return f"{self.replica_url(name, replica)}/metrics"

    def replica_url(self, name: str, replica: int = 0) -> str:
        """Replica ``replica`` of service ``name``'s own listener: ``/metrics``, ``/healthz``, ``/readyz``."""
        return f"http://{self.host}:{self.metrics_ports[(name, replica)]}"

    def readiness_url(self, name: str, replica: int = 0) -> str:
        return f"{self.replica_url(name, replica)}/readyz"

    @property
    def service_names(self) -> tuple[str, ...]:
        """The services this stack runs: every one of SERVICES, and the optional ones whose
        setting is set."""
        optional = tuple(name for name, key in OPTIONAL_SERVICES.items() if self._wanted_setting(key))
        return (*SERVICES, *optional)

    def _wanted_setting(self, key: str) -> str | None:
        """A setting as the services will see it: the stack's own, else the environment's."""
        return self.extra_settings.get(key, os.environ.get(key))

    # --- S3 storage: a local SeaweedFS when the settings ask for S3 but name no endpoint ---------

    def _local_s3_server_if_wanted(self) -> SeaweedS3Server | None:
        wanted = {**os.environ, **self.extra_settings}
        if wanted.get("ENVSTORE_STORAGE_BACKEND") != "s3" or wanted.get("ENVSTORE_S3_ENDPOINT_URL"):
            return None
        return SeaweedS3Server(
            self.data_directory / "s3",
            host=self.host,
            access_key=wanted.get("ENVSTORE_S3_ACCESS_KEY") or secrets.token_hex(10),
            secret_key=wanted.get("ENVSTORE_S3_SECRET_KEY") or secrets.token_urlsafe(30),
        )

    def _local_s3_settings(self) -> dict[str, str]:
        if self.s3 is None:
            return {}
        return {
            "ENVSTORE_S3_ENDPOINT_URL": self.s3.endpoint_url,
            "ENVSTORE_S3_REGION": self.s3.region,
            "ENVSTORE_S3_ACCESS_KEY": self.s3.access_key or "",
            "ENVSTORE_S3_SECRET_KEY": self.s3.secret_key or "",
            "ENVSTORE_S3_PATH_STYLE": "true",
        }

    # --- the bus: credentials per identity ------------------------------------------------------------

    @property
    def nats_stream(self) -> str:
        return self._wanted_setting("ENVSTORE_NATS_STREAM") or "ENVSTORE"

    def nats_credentials_file(self, identity: str) -> Path:
        """The file holding ``identity``'s nkey seed (made on first use)."""
        self.nats_credentials.seed(identity)
        return self.nats_credentials.seed_file(identity)

    def nats_client_settings(self, identity: str) -> dict[str, str]:
        """What a process needs to reach this stack's bus as ``identity`` (e.g. the operator's
        ``envstore projection rebuild``)."""
        return {
            "ENVSTORE_NATS_URL": self.nats.url,
            "ENVSTORE_NATS_STREAM": self.nats_stream,
            "ENVSTORE_NATS_CREDENTIALS_FILE": str(self.nats_credentials_file(identity)),
            **self._nats_tls_settings(),
        }

    def _nats_tls_settings(self) -> dict[str, str]:
        return {"ENVSTORE_NATS_TLS_CA_FILE": str(self.tls_authority_file)} if self.tls_authority_file else {}

    def _nats_tls_context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=str(self.tls_authority_file)) if self.tls_authority_file else None

    def nats_connect_options(self, identity: str) -> dict[str, object]:
        """``nats.connect`` options for a client of this stack's bus acting as ``identity``."""
        options: dict[str, object] = {
            "nkeys_seed_str": self.nats_credentials.seed(identity),
            "inbox_prefix": inbox_prefix(identity),
        }
        if self.tls_authority_file:
            options["tls"] = self._nats_tls_context()
        return options

    async def connect_nats(self, identity: str, **options: object) -> nats.aio.client.Client:
        """A plain NATS connection as ``identity`` (tests and benchmarks that publish or read
        directly hold an identity's credentials, as any client must)."""
        return await nats.connect(self.nats.urls, **{**self.nats_connect_options(identity), **options})

    async def connect_bus(self, identity: str) -> EventBus:
        return await EventBus.connect(
            self.nats.url,
            self.nats_stream,
            name=identity,
            seed=self.nats_credentials.seed(identity),
            tls=self._nats_tls_context(),
        )

    def permission_violations(self) -> list[str]:
        """What the bus refused an admitted identity so far (nats-server logs each refusal): for
        envstore's own processes, a grant their permissions miss."""
        refused = []
        for node in self.nats.nodes:
            try:
                log = node.log_path.read_text(errors="replace")
            except FileNotFoundError:
                continue
            refused += [line for line in log.splitlines() if "Publish Violation" in line or "Subscription Violation" in line]
        return refused

    # --- the services' settings ----------------------------------------------------------------------

    def service_environment(self, service: str | None = None) -> dict[str, str]:
        """The environment of a service process (``service``: its name in ``SERVICES``, which
        decides its bus identity; None: no bus credentials)."""
        environment = dict(os.environ)
        environment.update(
            {
                "ENVSTORE_DATA_DIR": str(self.data_directory),
                "ENVSTORE_NATS_URL": self.nats.url,
                "ENVSTORE_DATABASE_URL": self.postgres.dsn,
                "ENVSTORE_READER_DATABASE_URL": self.postgres.reader_dsn,
                "ENVSTORE_API_HOST": self.host,
                "ENVSTORE_API_PORT": str(self.api_port),
                "ENVSTORE_REGISTRY_HOST": self.host,
                "ENVSTORE_REGISTRY_PORT": str(self.registry_port),
                "ENVSTORE_ADMIN_TOKEN": self.admin_token,
                "PYTHONUNBUFFERED": "1",
            }
        )
        if len(self.nats.nodes) > 1:
            # The stream, the id counters and (by inheritance) every consumer on every node.
            environment["ENVSTORE_NATS_STREAM_REPLICAS"] = str(len(self.nats.nodes))
        if self.replica_count > 1:
            # API and registry replicas bind one port together; the kernel spreads connections.
            environment["ENVSTORE_LISTEN_REUSE_PORT"] = "true"
        environment.update(self._nats_tls_settings())
        environment.update(self.extra_settings)
        environment.update(self._local_s3_settings())
        if service is not None:
            identity = BUS_IDENTITIES[service]
            environment["ENVSTORE_NATS_CREDENTIALS_FILE"] = str(self.nats_credentials_file(identity))
        return environment

    def _replica_environment(self, name: str, replica: int) -> dict[str, str]:
        return (
            self.service_environment(name)
            | {"ENVSTORE_METRICS_HOST": self.host, "ENVSTORE_METRICS_PORT": str(self.metrics_ports[(name, replica)])}
            | self.service_settings.get(name, {})
        )

    def operator_settings(self) -> dict[str, str]:
        """The settings operator commands run with (``--data-dir``): the API's, whose database role
        they act in, and on the bus the operator's own identity (``projection-rebuild``: it reads)."""
        settings = {key: value for key, value in self._replica_environment("api", 0).items() if key.startswith("ENVSTORE_")}
        return settings | self.nats_client_settings(PROJECTION_REBUILD)

    # --- processes ----------------------------------------------------------------------------------

    def _service_process(self, name: str, replica: int) -> ServiceProcess:
        log_name = f"{name}.log" if replica == 0 else f"{name}-{replica}.log"
        return ServiceProcess(
            name, self.data_directory / "logs" / log_name, lambda: self._replica_environment(name, replica)
        )

    def _supervise(self, role: str, replica: int, server: ServerProcess) -> SupervisedProcess:
        process = SupervisedProcess(
            role, replica, server, self._restart_policy, on_change=self._process_changed, on_restart=self._process_restarted
        )
        self._processes[(role, replica)] = process
        self.metrics.service_restarts.labels(service=role, replica=str(replica))  # exported from 0 on
        return process

    def process(self, role: str, replica: int = 0) -> SupervisedProcess:
        """A supervised child: a service replica (``builder``, 1), a NATS node (``nats``, 2),
        ``postgres`` or ``s3``."""
        try:
            return self._processes[(role, replica)]
        except KeyError:
            known = ", ".join(sorted({f"{role} ({len(self.replicas(role))})" for role, _ in self._processes}))
            raise StackError(f"no process {role!r} replica {replica}; processes (replicas): {known}") from None

    def processes(self) -> list[SupervisedProcess]:
        return list(self._processes.values())

    def replicas(self, role: str) -> list[SupervisedProcess]:
        return [process for (name, _), process in self._processes.items() if name == role]

    @property
    def services(self) -> dict[str, LoggedChildProcess]:
        """Each service's first replica's current run (for reading pids and logs)."""
        return {
            name: child
            for name in self.service_names
            if (child := self._processes[(name, 0)].server.child) is not None
        }

    def _process_changed(self, process: SupervisedProcess) -> None:
        self._write_state_soon()

    def _process_restarted(self, process: SupervisedProcess) -> None:
        self.metrics.count_service_restart(process.role, process.replica)

    async def _processes_problem(self) -> str | None:
        down = [f"{process.name} {process.state}" for process in self._processes.values() if process.state != ProcessState.RUNNING]
        return ", ".join(down) or None

    # --- faults and operations, for tests and operators -----------------------------------------

    async def kill_service(self, name: str, replica: int = 0, restart: bool = True) -> None:
        """SIGKILL, as a crash would; the supervisor restarts it (unless ``restart=False``: then
        it stays down until ``start_service``)."""
        await self.process(name, replica).kill(restart=restart)

    async def stop_service(self, name: str, replica: int = 0) -> None:
        """Stop it gracefully (SIGTERM: it drains); it stays down until ``start_service``."""
        await self.process(name, replica).stop()

    def start_service(self, name: str, replica: int = 0) -> asyncio.Task[None]:
        """Start it now if it is not running (cutting a restart's back-off short). The returned task
        ends once it is started; its readiness is ``wait_until_ready``'s."""
        return asyncio.ensure_future(self.process(name, replica).start())

    async def stop_nats_node(self, node: int) -> None:
        await self.process(NATS, node).stop()

    async def kill_nats_node(self, node: int, restart: bool = False) -> None:
        await self.process(NATS, node).kill(restart=restart)

    async def start_nats_node(self, node: int) -> None:
        """Start a stopped node; returns once it is back in the cluster with its streams current."""
        await self.process(NATS, node).start()
        server = self.process(NATS, node).server
        assert isinstance(server, NatsServer)
        await server.wait_until_healthy(READY_TIMEOUT_SECONDS)

    async def restart_postgres(self) -> None:
        await self.process(POSTGRES).restart()

    async def restart_s3(self) -> None:
        await self.process(S3).restart()

    # --- starting and stopping --------------------------------------------------------------------

    async def start_infrastructure(self) -> None:
        """NATS, PostgreSQL and the local S3 server (if any), supervised; no service yet."""
        wanted = {**os.environ, **self.extra_settings}
        missing = missing_programs(wanted, needs_local_s3=self.s3 is not None)
        if missing:
            raise StackError(describe_missing(missing).rstrip())
        await self._claim_data_directory()
        self.data_directory.mkdir(parents=True, exist_ok=True)
        await self._resources.enter_async_context(
            self.metrics.listening(self.host, self.launcher_metrics_port, self.readiness)
        )
        infrastructure = [process for process in self._processes.values() if process.role in (NATS, POSTGRES, S3)]
        await asyncio.gather(*(process.start() for process in infrastructure))
        if len(self.nats.nodes) > 1:
            for node in self.nats.nodes:
                await node.wait_until_healthy(READY_TIMEOUT_SECONDS)

    async def start(self) -> None:
        await self.start_infrastructure()
        services = [process for process in self._processes.values() if process.role in self.service_names]
        await asyncio.gather(*(process.start() for process in services))
        await self.wait_until_ready()

    async def _claim_data_directory(self) -> None:
        """Two launchers on one data directory would share NATS' and PostgreSQL's files: refuse
        while another runs; stop what a dead one left running."""
        try:
            previous = read_state_file(self.data_directory)
        except StackStateError:
            return
        if previous.launcher_pid == os.getpid():
            return
        if process_is_alive(previous.launcher_pid):
            raise StackError(
                f"a stack is already running in {self.data_directory} (launcher pid {previous.launcher_pid}): "
                "stop it first, or use another --data-dir"
            )
        await stop_orphans(previous)

    async def wait_until_ready(self, timeout_seconds: float = READY_TIMEOUT_SECONDS, *, while_restarting: bool = False) -> None:
        """Until every service replica answers 200 on ``/readyz`` (bounded; a replica that exits or
        is not ready in time is named, with its log or what its ``/readyz`` said last).

        At start a replica that exits fails the wait at once. After faults were caused on purpose
        (``while_restarting``) the supervisor is expected to bring killed replicas back, so the wait
        lasts until they are ready again or the bound passes."""
        deadline = time.monotonic() + timeout_seconds
        last_answer: dict[tuple[str, int], str] = {}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:

            async def ready(key: tuple[str, int]) -> bool:
                try:
                    async with http.get(self.readiness_url(*key)) as response:
                        last_answer[key] = f"HTTP {response.status}: {(await response.text()).strip()}"
                        return response.status == 200
                except (aiohttp.ClientError, TimeoutError) as error:
                    last_answer[key] = f"no answer ({type(error).__name__})"
                    return False

            waiting = sorted(key for key in self._processes if key[0] in self.service_names)
            while waiting:
                for key in waiting:
                    process = self._processes[key]
                    child = process.server.child
                    if not while_restarting and process.state == ProcessState.RESTARTING and child is not None:
                        raise StackError(describe_failure(f"service {process.name}", child))
                answers = await asyncio.gather(*(ready(key) for key in waiting))
                waiting = [key for key, is_ready in zip(waiting, answers) if not is_ready]
                if not waiting:
                    return
                if time.monotonic() > deadline:
                    details = "; ".join(f"{role}/{replica} ({self.readiness_url(role, replica)}): {last_answer[(role, replica)]}" for role, replica in waiting)
                    raise StackError(f"not ready within {timeout_seconds} s: {details}")
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        for group in SERVICE_STOP_ORDER:
            await asyncio.gather(
                *(process.stop() for process in self._processes.values() if process.role in group), return_exceptions=True
            )
        await asyncio.gather(
            *(process.stop() for process in self._processes.values() if process.role in (NATS, POSTGRES, S3)),
            return_exceptions=True,
        )
        await self._resources.aclose()
        if self._state_writer is not None:
            await asyncio.gather(self._state_writer, return_exceptions=True)
        if self._state_written:
            await asyncio.to_thread(remove_state, self.data_directory, os.getpid())

    async def __aenter__(self) -> EmbeddedStack:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- the state file ---------------------------------------------------------------------------

    def state(self) -> StackState:
        return StackState(
            launcher_pid=os.getpid(),
            data_directory=str(self.data_directory),
            endpoints=self._endpoints(),
            processes=[self._record(process) for process in self._processes.values()],
            operator_settings=self.operator_settings(),
        )

    def _endpoints(self) -> dict[str, object]:
        endpoints: dict[str, object] = {
            "api": f"{self.api_url}/api/v1/",
            "ui": f"{self.api_url}/ui/",
            "registry": f"{self.registry_url}/v2/",
            "launcher_metrics": self.launcher_metrics_url,
            "logs": str(self.data_directory / "logs"),
        }
        with contextlib.suppress(RuntimeError):  # ports are known once the servers started
            endpoints["nats"] = self.nats.urls
            endpoints["postgres"] = f"postgresql://{WRITER}@{self.host}:{self.postgres.port}/{self.postgres.database}"
            if self.s3 is not None:
                endpoints["s3"] = self.s3.endpoint_url
        return endpoints

    def _record(self, process: SupervisedProcess) -> ProcessRecord:
        server = process.server
        probe: str | None = None
        with contextlib.suppress(RuntimeError):
            if process.role in self.service_names:
                probe = self.readiness_url(process.role, process.replica)
            elif isinstance(server, NatsServer):
                probe = f"{server.monitoring_url}/healthz"
            elif isinstance(server, PostgresServer):
                probe = f"tcp://{server.host}:{server.port}"
            elif isinstance(server, SeaweedS3Server):
                probe = f"tcp://{server.host}:{server.ports.s3}"
        return ProcessRecord(
            role=process.role,
            replica=process.replica,
            pid=process.pid,
            state=str(process.state),
            restarts=process.restarts,
            last_exit=process.last_exit,
            started_at=process.started_at,
            log=str(server.log_path),
            probe=probe,
        )

    def _write_state_soon(self) -> None:
        """Coalesces bursts of changes into one write, off the event loop."""
        self._state_dirty = True
        if self._state_writer is None or self._state_writer.done():
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to write from
                self._state_writer = asyncio.get_running_loop().create_task(self._write_state())

    async def _write_state(self) -> None:
        while self._state_dirty:
            self._state_dirty = False
            if not self.data_directory.exists():
                return
            try:
                state = self.state()
            except RuntimeError:  # a server's port is not chosen yet: its start writes again
                continue
            await asyncio.to_thread(write_state, self.data_directory, state)
            self._state_written = True
