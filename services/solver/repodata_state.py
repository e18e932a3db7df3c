"""A fingerprint of a channel's repodata, so cached solves are reused only while the channel is
unchanged (a newly indexed package must be seen by the next solve)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import aiohttp

UNKNOWN_STATE_TTL_SECONDS = 300


async def repodata_fingerprint(channel_url: str, subdirs: list[str], http: aiohttp.ClientSession) -> str:
    parsed = urlparse(channel_url)
    if parsed.scheme == "file":
        return await asyncio.to_thread(_local_fingerprint, Path(unquote(parsed.path)), subdirs)
    parts = []
    for subdir in subdirs:
        url = f"{channel_url.rstrip('/')}/{subdir}/repodata.json"
        try:
            async with http.head(url, allow_redirects=True, timeout=aiohttp.ClientTimeout(total=10)) as response:
                validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
        except (aiohttp.ClientError, TimeoutError):
            validator = None
        # Without a validator we cannot tell a change; trust a cached solve for a short while only.
        parts.append(f"{subdir}:{validator or int(time.time() // UNKNOWN_STATE_TTL_SECONDS)}")
    return ",".join(parts)


def _local_fingerprint(channel_directory: Path, subdirs: list[str]) -> str:
    parts = []
    for subdir in subdirs:
        try:
            status = os.stat(channel_directory / subdir / "repodata.json")
            parts.append(f"{subdir}:{status.st_mtime_ns}:{status.st_size}")
        except FileNotFoundError:
            parts.append(f"{subdir}:absent")
    return ",".join(parts)
