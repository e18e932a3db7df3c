"""The projector's log reader processes (``envstore.api.log_reader``) that a process started."""

from __future__ import annotations

from pathlib import Path

READER_MODULE = "envstore.api.log_reader"


def log_readers_of(parent: int) -> list[int]:
    """The pids of ``parent``'s children that read the log for its projector."""
    readers = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # it ended meanwhile
        # The fourth field, after the command's name in parentheses (which may hold spaces).
        parent_of_entry = int(status.rsplit(")", 1)[1].split()[1])
        if parent_of_entry == parent and READER_MODULE.encode() in command:
            readers.append(int(entry.name))
    return readers


def is_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (ended, not yet waited for)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
