"""An environment's ``<store>/<namespace>/envs/<name>`` link, pointed at its current build.

The current build changes with events (a build completed, a rollback) that builder replicas may
handle out of order; each switch records the stream sequence of the event that decided it, and
an older decision never replaces a newer one. A lock file serialises switches of one environment
between processes sharing the store.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path


def _switch(link: Path, prefix: Path, decided_at: int) -> bool:
    link.parent.mkdir(parents=True, exist_ok=True)
    position = link.with_name(f".{link.name}.sequence")
    with open(link.with_name(f".{link.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            current = int(position.read_text()) if position.exists() else 0
        except ValueError:
            current = 0
        if decided_at < current or not prefix.exists():
            return False
        temporary = link.with_name(f".{link.name}.{os.getpid()}.tmp")
        temporary.unlink(missing_ok=True)
        os.symlink(prefix, temporary)
        os.replace(temporary, link)
        position.write_text(str(decided_at))
        return True


async def point_environment_at(link: Path, prefix: Path, decided_at: int) -> bool:
    """Point ``link`` at ``prefix`` unless a later decision (stream sequence) did already, or the
    prefix is gone; True if it switched."""
    return await asyncio.to_thread(_switch, link, prefix, decided_at)
