"""The projector's log reader processes (``envstore.api.log_reader``) that a process started."""

from __future__ import annotations

from pathlib import Path

from envstore.launcher.child_process import child_pids

READER_MODULE = "envstore.api.log_reader"


def log_readers_of(parent: int) -> list[int]:
    """The pids of ``parent``'s children that read the log for its projector."""
    readers = []
    for pid in child_pids(parent):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # it ended meanwhile
        if READER_MODULE.encode() in command:
            readers.append(pid)
    return readers
