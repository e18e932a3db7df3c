"""Keeping one child process running, as a process manager does: a child that exits when nobody
asked it to is started again after a delay that doubles with each consecutive failure, up to a cap
(the delays are tenacity's ``wait_exponential``); a run that lasted ``stable_after_seconds`` resets
the count. Each restart is logged with the exit status and reported to ``on_restart`` (the launcher
counts it in ``envstore_service_restarts_total``).

Deliberate operations go through the supervisor, so it never fights them: ``stop()`` (not restarted
until ``start()``), ``kill()`` (SIGKILL; restarted like any crash, unless told not to) and
``restart()``. What is supervised is a ``ServerProcess``: a service replica, a NATS node,
PostgreSQL, the S3 server.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from tenacity import RetryCallState, wait_exponential

from envstore.launcher.child_process import ServerProcess, describe_exit_status

log = logging.getLogger("envstore.launcher")


class ProcessState(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"  # exited on its own; waiting out the back-off before starting again
    STOPPING = "stopping"
    STOPPED = "stopped"  # stopped on purpose (or never started): not restarted


@dataclass(frozen=True)
class RestartPolicy:
    """Capped exponential back-off between restarts of a child that keeps exiting."""

    first_delay_seconds: float = 0.5
    max_delay_seconds: float = 30.0
    # A run at least this long was healthy: the next exit starts the back-off afresh.
    stable_after_seconds: float = 30.0

    def delay(self, consecutive_failures: int) -> float:
        """The wait before restart number ``consecutive_failures`` (1, 2, …) of a row."""
        wait = wait_exponential(multiplier=self.first_delay_seconds, max=self.max_delay_seconds)
        attempt = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        attempt.attempt_number = consecutive_failures
        return wait(attempt)


class SupervisedProcess:
    """One child (``role`` replica ``replica``) kept running by its own watching task."""

    def __init__(
        self,
        role: str,
        replica: int,
        server: ServerProcess,
        policy: RestartPolicy = RestartPolicy(),
        on_change: Callable[[SupervisedProcess], None] = lambda process: None,
        on_restart: Callable[[SupervisedProcess], None] = lambda process: None,
    ) -> None:
        self.role = role
        self.replica = replica
        self.server = server
        self.policy = policy
        self._on_change = on_change
        self._on_restart = on_restart
        self.state = ProcessState.STOPPED
        self.restarts = 0
        self.last_exit: str | None = None
        self.started_at: float | None = None  # wall clock, for operators
        self._watching: asyncio.Task[None] | None = None
        self._starting: asyncio.Future[None] | None = None
        self._operation = asyncio.Lock()

    @property
    def name(self) -> str:
        return f"{self.role}/{self.replica}"

    @property
    def pid(self) -> int | None:
        return self.server.pid if self.server.is_running else None

    def _set_state(self, state: ProcessState) -> None:
        self.state = state
        self._on_change(self)

    # --- deliberate operations -------------------------------------------------------------------

    async def start(self) -> None:
        """Start it now (also cutting short a restart's back-off); returns once it started (a
        server: once it serves), raising if it could not. Nothing happens if it runs."""
        async with self._operation:
            if self.state in (ProcessState.RUNNING, ProcessState.STARTING) and self.server.is_running:
                return
            await self._stop_watching()
            if self.server.is_running:  # a restart that was under way when we stopped watching
                self._set_state(ProcessState.RUNNING)
            else:
                await self._start_server()
            self._watching = asyncio.create_task(self._watch(), name=f"supervise {self.name}")

    async def stop(self) -> None:
        """Stop it (the server's own graceful stop); not restarted until ``start()``."""
        async with self._operation:
            await self._stop_watching()
            if self.server.is_running:
                self._set_state(ProcessState.STOPPING)
                await self.server.stop()
            self._set_state(ProcessState.STOPPED)

    async def kill(self, restart: bool = True) -> None:
        """SIGKILL, as a crash would. With ``restart`` the supervisor notices the exit and
        restarts it like any crash (counted); without, it stays down until ``start()``."""
        async with self._operation:
            if not restart:
                await self._stop_watching()
            await self.server.kill()
            if not restart:
                self.last_exit = "killed by SIGKILL"
                self._set_state(ProcessState.STOPPED)

    async def restart(self) -> None:
        """Stop, then start (on purpose: not counted as a restart)."""
        await self.stop()
        await self.start()

    # --- watching --------------------------------------------------------------------------------

    async def _start_server(self) -> None:
        self._set_state(ProcessState.STARTING)
        # Shielded: a stop() arriving mid-start waits for the start to finish, then stops what
        # was started, instead of cancelling a half-started server.
        self._starting = asyncio.ensure_future(self.server.start())
        await asyncio.shield(self._starting)
        self.started_at = time.time()
        self._set_state(ProcessState.RUNNING)

    async def _stop_watching(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watching
            self._watching = None
        if self._starting is not None and not self._starting.done():
            with contextlib.suppress(Exception):
                await self._starting

    async def _watch(self) -> None:
        consecutive_failures = 0
        while True:
            child = self.server.child
            assert child is not None
            began = time.monotonic()
            status = await child.wait_for_exit()
            if time.monotonic() - began >= self.policy.stable_after_seconds:
                consecutive_failures = 0
            self.last_exit = describe_exit_status(status)
            while True:
                consecutive_failures += 1
                delay = self.policy.delay(consecutive_failures)
                self.restarts += 1
                log.warning(
                    "%s (pid %s) %s; restart %d in %.1f s (log %s)",
                    self.name, child.pid, self.last_exit, self.restarts, delay, child.log_path,
                )
                self._on_restart(self)
                self._set_state(ProcessState.RESTARTING)
                await asyncio.sleep(delay)
                try:
                    await self._start_server()
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # noqa: BLE001 - whatever failed, try again later
                    self.last_exit = f"failed to start: {error}".splitlines()[0]
                    child = self.server.child or child
