"""Running a long-lived server program as a child process, from asyncio code.

Shared by the NATS, PostgreSQL and SeaweedFS launchers. The child's stdout and stderr go
straight to a log file (not a pipe), so the child can never block on a full
pipe when nobody reads it, and the log survives the child for post-mortems.

Blocking calls (``waitpid`` with a timeout) run in a worker thread through
``asyncio.to_thread``; the process is a plain ``subprocess.Popen``, so it is not
tied to the event loop that started it.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Iterable, Mapping, Self, Sequence

LOG_TAIL_CHARACTERS = 4000
DEFAULT_STOP_GRACE_SECONDS = 10.0


class ServerProcessError(RuntimeError):
    """A server child process could not be found, started or stopped."""


@dataclass(frozen=True)
class OsUser:
    """An OS account to run a child process as (by setuid in the child)."""

    name: str
    uid: int
    gid: int
    supplementary_gids: tuple[int, ...]

    @classmethod
    def lookup(cls, name: str) -> "OsUser":
        entry = pwd.getpwnam(name)
        return cls(
            name=entry.pw_name,
            uid=entry.pw_uid,
            gid=entry.pw_gid,
            supplementary_gids=tuple(os.getgrouplist(entry.pw_name, entry.pw_gid)),
        )

    def popen_identity(self) -> dict[str, object]:
        """Keyword arguments that make ``Popen`` run the child as this user.

        ``extra_groups`` is always passed: otherwise the child would keep our
        (root's) supplementary groups.
        """
        return {"user": self.uid, "group": self.gid, "extra_groups": list(self.supplementary_gids)}

    def chown(self, path: Path) -> None:
        os.chown(path, self.uid, self.gid)


def process_is_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie.

    Children re-parented to PID 1 may stay zombies if PID 1 does not reap
    them; a zombie holds no resources (ports, shared memory), so it counts as
    gone.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The command name (field 2) is in parentheses and may contain spaces.
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def child_pids(parent_pid: int) -> list[int]:
    """PIDs whose parent is ``parent_pid`` (one level), from ``/proc``."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        fields_after_name = stat.rsplit(")", 1)[1].split()
        if int(fields_after_name[1]) == parent_pid:
            children.append(int(entry.name))
    return children


async def wait_until_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Poll until none of ``pids`` is alive; return those still alive at the deadline."""
    remaining = list(pids)
    deadline = time.monotonic() + timeout
    while True:
        remaining = [pid for pid in remaining if process_is_alive(pid)]
        if not remaining or time.monotonic() >= deadline:
            return remaining
        await asyncio.sleep(0.02)


class LoggedChildProcess:
    """One run of a server program whose output is appended to ``log_path``."""

    def __init__(self, popen: subprocess.Popen[bytes], log_path: Path, log_start_offset: int) -> None:
        self._popen = popen
        self.log_path = log_path
        self._log_start_offset = log_start_offset

    @classmethod
    def spawn(
        cls,
        argv: Sequence[str],
        log_path: Path,
        *,
        run_as: OsUser | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        pass_fds: Sequence[int] = (),
        log_preamble: str | None = None,
    ) -> "LoggedChildProcess":
        """Start ``argv``; ``log_preamble`` is written to the log first, for readers of the log."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log_file:
            log_start_offset = log_file.tell()
            if log_preamble:
                log_file.write(log_preamble.rstrip("\n").encode() + b"\n")
                log_file.flush()
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                pass_fds=tuple(pass_fds),
                # Own session: a Ctrl-C aimed at the test runner's terminal
                # must not reach the server; we stop it ourselves, in order.
                start_new_session=True,
                **(run_as.popen_identity() if run_as else {}),
            )
        # The child holds its own copy of the log descriptor; ours is closed.
        return cls(popen, log_path, log_start_offset)

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def has_exited(self) -> bool:
        return self._popen.poll() is not None

    def log_text(self) -> str:
        """Everything this run has written so far."""
        try:
            with open(self.log_path, "rb") as log_file:
                log_file.seek(self._log_start_offset)
                return log_file.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, max_characters: int = LOG_TAIL_CHARACTERS) -> str:
        text = self.log_text()
        return text[-max_characters:]

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for exit; True if it exited (and was reaped)."""
        try:
            await asyncio.to_thread(self._popen.wait, timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    async def wait_for_exit(self) -> int:
        """Until the child exits, however long (cancellable); its exit status (negative: the
        signal that ended it). Woken by the kernel (a pidfd), so a supervisor watching many
        children holds no thread for each."""
        status = self._popen.poll()
        if status is not None:
            return status
        try:
            pidfd = os.pidfd_open(self._popen.pid)
        except (AttributeError, OSError):  # no pidfds (not Linux 5.3+): poll instead
            while (status := self._popen.poll()) is None:
                await asyncio.sleep(0.1)
            return status
        loop = asyncio.get_running_loop()
        exited = loop.create_future()
        loop.add_reader(pidfd, lambda: exited.done() or exited.set_result(None))
        try:
            await exited
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
        # Readable means exited; reaping it now cannot block.
        return self._popen.wait()

    def send_signal(self, signal_number: int) -> None:
        # Popen.send_signal is a no-op once the child was reaped, so a PID
        # reused by an unrelated process is never signalled.
        self._popen.send_signal(signal_number)

    async def stop(
        self,
        polite_signal: int,
        grace_seconds: float = DEFAULT_STOP_GRACE_SECONDS,
    ) -> None:
        """Send ``polite_signal``; SIGKILL if still running after ``grace_seconds``."""
        if self.has_exited():
            return
        self.send_signal(polite_signal)
        if await self.wait(grace_seconds):
            return
        await self.kill()

    async def kill(self, grace_seconds: float = DEFAULT_STOP_GRACE_SECONDS) -> None:
        self.send_signal(signal.SIGKILL)
        if not await self.wait(grace_seconds):
            raise ServerProcessError(f"process {self.pid} survived SIGKILL for {grace_seconds}s")


def describe_exit_status(status: int) -> str:
    """``exited with status 1``, ``killed by SIGKILL``: how a child ended, for logs and ``envstore ps``."""
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exited with status {status}"


def describe_failure(what: str, child: LoggedChildProcess) -> str:
    status = child.returncode
    state = "is still running" if status is None else f"exited with status {status}"
    return (
        f"{what} (pid {child.pid}) {state}; log {child.log_path}, last lines:\n"
        f"{child.log_tail() or '(empty)'}"
    )


class ServerProcess:
    """What the local servers (NATS, PostgreSQL, SeaweedFS) share: one child process at a time,
    its log file in the data directory, and start/stop as an async context manager. Subclasses
    set ``log_file_name`` and implement ``start`` and ``stop``."""

    log_file_name: ClassVar[str]
    data_directory: Path
    _child: LoggedChildProcess | None

    @property
    def log_path(self) -> Path:
        return self.data_directory / self.log_file_name

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child else None

    @property
    def is_running(self) -> bool:
        return self._child is not None and not self._child.has_exited()

    @property
    def child(self) -> LoggedChildProcess | None:
        """The current run (None before the first start)."""
        return self._child

    async def kill(self) -> None:
        """SIGKILL, as a crash would; its data is kept."""
        raise NotImplementedError

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()
