"""``envstore ps --data-dir D [--json]``: every process of the stack running in ``D`` (role,
replica, pid, state, restarts, readiness) and its endpoints, from the state file ``envstore up``
keeps, with readiness asked of each process now."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from envstore.launcher.child_process import process_is_alive
from envstore.launcher.stack_state import ProcessRecord, StackState, read_running_state

PROBE_TIMEOUT_SECONDS = 2.0


async def readiness_of(record: ProcessRecord, http: aiohttp.ClientSession) -> str:
    """``ready``, or why not (the first line of a ``/readyz`` answer, or what failed)."""
    if record.pid is None or not process_is_alive(record.pid):
        return "not running"
    if record.probe is None:
        return "unknown"
    try:
        if record.probe.startswith("tcp://"):
            address = urlsplit(record.probe)
            async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
                _, writer = await asyncio.open_connection(address.hostname, address.port)
            writer.close()
            return "ready"
        async with http.get(record.probe) as response:
            if response.status == 200:
                return "ready"
            lines = [line for line in (await response.text()).splitlines() if line.strip() and line != "not ready"]
            return f"not ready: {lines[0] if lines else f'HTTP {response.status}'}"
    except (OSError, aiohttp.ClientError, TimeoutError) as error:
        return f"no answer ({type(error).__name__})"


async def stack_status(data_directory: Path) -> dict[str, Any]:
    """The public part of the state file, each process with its readiness now."""
    state: StackState = read_running_state(data_directory)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_SECONDS)) as http:
        readiness = await asyncio.gather(*(readiness_of(record, http) for record in state.processes))
    document = state.public()
    document["processes"] = [
        asdict(record) | {"readiness": ready} for record, ready in zip(state.processes, readiness)
    ]
    return document


def render_table(status: dict[str, Any]) -> str:
    columns = ("role", "replica", "pid", "state", "restarts", "readiness", "last_exit")
    rows = [[str(process.get(column) if process.get(column) is not None else "-") for column in columns] for process in status["processes"]]
    widths = [max(len(column), *(len(row[index]) for row in rows)) for index, column in enumerate(columns)]
    lines = ["  ".join(column.upper().ljust(width) for column, width in zip(columns, widths)).rstrip()]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.append("")
    lines.append(f"launcher pid {status['launcher_pid']}, data {status['data_directory']}")
    for name, value in status["endpoints"].items():
        lines.append(f"{name}: {', '.join(value) if isinstance(value, list) else value}")
    return "\n".join(lines)


async def print_status(data_directory: Path, as_json: bool) -> int:
    status = await stack_status(data_directory)
    print(json.dumps(status, indent=1) if as_json else render_table(status))
    return 0
