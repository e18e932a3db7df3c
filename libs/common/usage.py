"""Counting how builds are used (image pulls, artifact downloads, activations) and publishing the
counts as ``build.used`` events in batches: one event per build per flush interval, however many
requests there were, so use never floods the log. A process that stops flushes what it counted."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from envstore.common.events import BuildUsed
from envstore.common.transport import EventBus

log = logging.getLogger(__name__)


class Use(enum.StrEnum):
    PULL = "pulls"
    DOWNLOAD = "downloads"
    ACTIVATION = "activations"


@dataclass
class _Counts:
    first_used_at: float
    last_used_at: float
    pulls: int = 0
    downloads: int = 0
    activations: int = 0

    def event(self, build_id: int) -> BuildUsed:
        return BuildUsed(
            build_id=build_id,
            pulls=self.pulls,
            downloads=self.downloads,
            activations=self.activations,
            first_used_at=self.first_used_at,
            last_used_at=self.last_used_at,
        )

    def merge(self, other: _Counts) -> None:
        self.first_used_at = min(self.first_used_at, other.first_used_at)
        self.last_used_at = max(self.last_used_at, other.last_used_at)
        self.pulls += other.pulls
        self.downloads += other.downloads
        self.activations += other.activations


class UsageRecorder:
    def __init__(self, bus: EventBus, service: str, flush_seconds: float) -> None:
        self.bus = bus
        self.service = service
        self.flush_seconds = flush_seconds
        self._instance = uuid.uuid4().hex[:12]
        self._flushes = 0
        self._pending: dict[int, _Counts] = {}

    def record(self, build_id: int, use: Use) -> None:
        """Count one use (no I/O: request handlers call this on their way out)."""
        now = time.time()
        counts = self._pending.get(build_id)
        if counts is None:
            counts = self._pending[build_id] = _Counts(now, now)
        counts.last_used_at = now
        setattr(counts, use.value, getattr(counts, use.value) + 1)

    async def flush(self) -> None:
        batch, self._pending = self._pending, {}
        self._flushes += 1
        for build_id, counts in batch.items():
            try:
                await self.bus.publish(
                    counts.event(build_id),
                    f"usage:{self.service}:{self._instance}:{self._flushes}:{build_id}",
                    principal=f"service:{self.service}",
                )
            except Exception:
                # Kept for the next flush rather than lost (the bus may be reconnecting).
                log.warning("usage of build %s not published yet; kept for the next flush", build_id, exc_info=True)
                self._pending.setdefault(build_id, _Counts(counts.first_used_at, counts.last_used_at)).merge(counts)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            await self.flush()


@contextlib.asynccontextmanager
async def recording_usage(bus: EventBus, service: str, flush_seconds: float) -> AsyncIterator[UsageRecorder]:
    """A recorder flushing every ``flush_seconds`` while the block runs, and once more at its end."""
    recorder = UsageRecorder(bus, service, flush_seconds)
    flushing = asyncio.create_task(recorder._run(), name=f"{service}-usage")
    try:
        yield recorder
    finally:
        flushing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flushing
        with contextlib.suppress(Exception):
            await recorder.flush()
