"""Solved locks keyed by everything that determines the answer; an identical request costs no
solve. Entries live in memory (bounded) and on disk (survive restarts)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import OrderedDict
from pathlib import Path

from envstore.common.lock import Lock


def solve_cache_key(
    specs: list[str],
    channel_urls: list[str],
    platform: str,
    virtual_packages: list[str],
    repodata_fingerprints: list[str],
) -> str:
    document = json.dumps(
        {
            "specs": sorted(specs),
            "channels": channel_urls,  # order matters: strict channel priority
            "platform": platform,
            "virtual_packages": sorted(virtual_packages),
            "repodata": repodata_fingerprints,
        },
        sort_keys=True,
    )
    return hashlib.sha256(document.encode()).hexdigest()


class SolveCache:
    def __init__(self, directory: Path, max_entries: int) -> None:
        self.directory = directory
        self.max_entries = max_entries
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        directory.mkdir(parents=True, exist_ok=True)

    async def get(self, key: str) -> Lock | None:
        data = self._memory.get(key)
        if data is None:
            path = self.directory / f"{key}.json"
            data = await asyncio.to_thread(_read_if_exists, path)
            if data is None:
                return None
        self._remember(key, data)
        return Lock.decode(data)

    async def put(self, key: str, lock: Lock) -> None:
        data = lock.encode()
        self._remember(key, data)
        await asyncio.to_thread(_write, self.directory / f"{key}.json", data)

    def _remember(self, key: str, data: bytes) -> None:
        self._memory[key] = data
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_entries:
            self._memory.popitem(last=False)


def _read_if_exists(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _write(path: Path, data: bytes) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(data)
    temporary.replace(path)
