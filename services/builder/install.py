"""Measuring an installed prefix (installing it is ``envstore.common.prefix_install``)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

def directory_size(path: Path) -> int:
    total = 0
    seen: set[int] = set()
    for directory, _, files in os.walk(path):
        for name in files:
            status = os.lstat(os.path.join(directory, name))
            if status.st_ino in seen:
                continue
            seen.add(status.st_ino)
            total += status.st_size
    return total


async def measure(path: Path) -> int:
    return await asyncio.to_thread(directory_size, path)
