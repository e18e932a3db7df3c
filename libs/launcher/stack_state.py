"""The running stack's state file, ``<data dir>/stack.json``: written by ``envstore up`` (and every
embedded stack) whenever a process starts, exits or restarts, read by operator commands
(``envstore ps``, ``envstore projection rebuild --data-dir``) to find the stack's processes,
endpoints and credentials.

It holds the settings the API's replicas run with (``operator_settings``: database password, S3
keys …), so it is written with mode 0600, atomically (a reader never sees half a file). It is
removed when the stack stops cleanly; one left by a launcher that died is recognised by its pid.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from envstore.launcher.child_process import process_is_alive

STATE_FILE_NAME = "stack.json"
STATE_FORMAT = 1


class StackStateError(RuntimeError):
    """No running stack's state could be read: the message says what to do."""


@dataclass(frozen=True)
class ProcessRecord:
    role: str  # api, solver, …, nats, postgres, s3
    replica: int  # replica of a service, node of the NATS cluster; 0 for single processes
    pid: int | None
    state: str  # supervisor.ProcessState
    restarts: int
    last_exit: str | None  # how the last run ended ("killed by SIGKILL"), if it did
    started_at: float | None
    log: str
    # How to ask whether it is ready: an http(s) URL answering 200 when ready, or tcp://host:port.
    probe: str | None


@dataclass(frozen=True)
class StackState:
    launcher_pid: int
    data_directory: str
    endpoints: dict[str, Any]
    processes: list[ProcessRecord]
    operator_settings: dict[str, str] = field(repr=False)
    format: int = STATE_FORMAT

    def public(self) -> dict[str, Any]:
        """Everything but the secrets (what ``envstore ps --json`` shows)."""
        document = asdict(self)
        del document["operator_settings"]
        return document


def state_path(data_directory: Path) -> Path:
    return data_directory / STATE_FILE_NAME


def write_state(data_directory: Path, state: StackState) -> None:
    path = state_path(data_directory)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(asdict(state), file, indent=1)
    os.replace(temporary, path)


def remove_state(data_directory: Path, launcher_pid: int) -> None:
    """Remove the state file if it is this launcher's (another may have started since)."""
    try:
        if read_state_file(data_directory).launcher_pid == launcher_pid:
            state_path(data_directory).unlink(missing_ok=True)
    except StackStateError:
        pass


def read_state_file(data_directory: Path) -> StackState:
    path = state_path(data_directory)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise StackStateError(
            f"no stack state in {data_directory}: start one with `envstore up --data-dir {data_directory}`"
        ) from None
    except PermissionError:
        raise StackStateError(f"{path} is readable only by the user who ran `envstore up`: run this as that user") from None
    except (OSError, ValueError) as error:
        raise StackStateError(f"{path} could not be read ({error}); restart the stack to rewrite it") from None
    if document.get("format") != STATE_FORMAT:
        raise StackStateError(f"{path} was written by another envstore release (format {document.get('format')})")
    processes = [ProcessRecord(**record) for record in document.pop("processes")]
    return StackState(processes=processes, **document)


def read_running_state(data_directory: Path) -> StackState:
    """The state of the stack running in ``data_directory``; StackStateError if none runs."""
    state = read_state_file(data_directory.resolve())
    if not process_is_alive(state.launcher_pid):
        raise StackStateError(
            f"the stack in {data_directory} is not running (its launcher, pid {state.launcher_pid}, has exited); "
            f"start it with `envstore up --data-dir {data_directory}`"
        )
    return state
