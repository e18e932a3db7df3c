"""Where every asyncio task of a process waits, into its log: what an operator asks a process that
seems stuck (``kill -USR1 <pid>``; every envstore service answers it)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)
DUMP_END = "end of the task dump"


def awaited_chain(task: asyncio.Task[Any]) -> list[str]:
    """The task's coroutine and each one it awaits, innermost last, as ``function (file:line)``;
    the last line names the future the task waits on, when it waits on one."""
    lines: list[str] = []
    awaited: object = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:
            break  # finished, not started, or a future's own iterator
        lines.append(f"{frame.f_code.co_name} ({frame.f_code.co_filename}:{frame.f_lineno})")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    # Only the task knows the future itself (CPython's C futures do not expose it from their iterator).
    waiter = getattr(task, "_fut_waiter", None)
    if waiter is not None:
        lines.append(f"waits on {waiter!r}"[:300])
    return lines


def log_every_task() -> None:
    """One log record per task, then ``DUMP_END``."""
    tasks = asyncio.all_tasks()
    for task in sorted(tasks, key=lambda task: task.get_name()):
        chain = "\n    ".join(awaited_chain(task))
        log.warning("task %s:\n    %s", task.get_name(), chain)
    log.warning("%s (%d tasks)", DUMP_END, len(tasks))
