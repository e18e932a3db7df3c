"""Where a build's prefix is installed before it is moved into place, moving it, and measuring it
(installing it is ``envstore.common.prefix_install``)."""

from __future__ import annotations

import asyncio
import errno
import os
import uuid
from pathlib import Path

STAGING = ".staging"


def staging_directory(namespace_directory: Path, build_key: str) -> Path:
    """A private directory, on the prefix's filesystem, for one delivery's install."""
    return namespace_directory / STAGING / f"{build_key}.{uuid.uuid4().hex[:12]}"


def move_into_place(staging: Path, prefix: Path) -> bool:
    """Rename the complete install to the prefix; False if a complete one is there already."""
    try:
        os.rename(staging, prefix)
    except OSError as error:
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST) and prefix.is_dir():
            return False
        raise
    return True


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
