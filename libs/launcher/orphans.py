"""Children left running by a launcher that died without stopping them (SIGKILL, OOM): a new
``envstore up`` on the same data directory stops them first, from the old state file, so that two
NATS servers never share a store directory and PostgreSQL's data directory is free.

A pid is only signalled while its command line is still the program the state file recorded for
it (a pid may have been reused by an unrelated process since)."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

from envstore.launcher.child_process import process_is_alive, wait_until_gone
from envstore.launcher.stack_state import ProcessRecord, StackState

log = logging.getLogger("envstore.launcher")

GRACE_SECONDS = 20.0
# How each role's program shows in /proc/<pid>/cmdline, and the signal that stops it quickly and
# cleanly (PostgreSQL: SIGINT is its "fast" shutdown; SIGTERM would wait for clients).
PROGRAMS = {"nats": (b"nats-server", signal.SIGTERM), "postgres": (b"postgres", signal.SIGINT), "s3": (b"weed", signal.SIGTERM)}


def still_ours(record: ProcessRecord) -> bool:
    if record.pid is None or not process_is_alive(record.pid):
        return False
    try:
        command_line = Path(f"/proc/{record.pid}/cmdline").read_bytes()
    except OSError:
        return False
    program, _ = PROGRAMS.get(record.role, (f"envstore.{record.role}".encode(), signal.SIGTERM))
    return program in command_line


async def stop_orphans(state: StackState) -> list[ProcessRecord]:
    """Stop the children of ``state``'s (dead) launcher that still run; returns them. Services
    first, then the servers, as a launcher stops them."""
    orphans = [record for record in state.processes if still_ours(record)]
    services = [record for record in orphans if record.role not in PROGRAMS]
    servers = [record for record in orphans if record.role in PROGRAMS]
    for group in (services, servers):
        for record in group:
            assert record.pid is not None
            log.warning("stopping %s/%s (pid %s), left running by launcher %s", record.role, record.replica, record.pid, state.launcher_pid)
            try:
                os.kill(record.pid, PROGRAMS.get(record.role, (b"", signal.SIGTERM))[1])
            except ProcessLookupError:
                pass
        survivors = await wait_until_gone([record.pid for record in group if record.pid is not None], GRACE_SECONDS)
        for pid in survivors:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        await wait_until_gone(survivors, GRACE_SECONDS)
    return orphans
