"""One replica of an envstore service (``python -m envstore.<name>``) as a child process, so the
supervisor handles it like the servers it runs: start, stop (SIGTERM, then SIGKILL after a grace
period), kill."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from envstore.launcher.child_process import LoggedChildProcess, ServerProcess

# A worker drains on SIGTERM: running handlers get 10 s (worker_runtime's drain_seconds) to finish
# before they are handed back; the grace covers that and the process's own shutdown.
SERVICE_STOP_GRACE_SECONDS = 20.0


class ServiceProcess(ServerProcess):
    """Service ``name``; its log is ``log_path`` (appended to across restarts). ``environment``
    is called at every start, so a restart sees the stack's settings as they are then."""

    def __init__(
        self,
        name: str,
        log_path: Path,
        environment: Callable[[], Mapping[str, str]],
        stop_grace_seconds: float = SERVICE_STOP_GRACE_SECONDS,
    ) -> None:
        self.name = name
        self.data_directory = log_path.parent
        self._log_path = log_path
        self._environment = environment
        self.stop_grace_seconds = stop_grace_seconds
        self._child: LoggedChildProcess | None = None

    @property
    def log_path(self) -> Path:
        return self._log_path

    async def start(self) -> None:
        self._child = LoggedChildProcess.spawn(
            [sys.executable, "-m", f"envstore.{self.name}"], self._log_path, env=self._environment()
        )

    async def stop(self) -> None:
        if self._child is not None:
            await self._child.stop(signal.SIGTERM, self.stop_grace_seconds)

    async def kill(self) -> None:
        if self._child is not None and not self._child.has_exited():
            await self._child.kill()
