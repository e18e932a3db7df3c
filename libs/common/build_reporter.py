"""What a worker tells about a build: ``build.progress`` events for live subscribers, and the same
lines kept for the build's LOGS artifact."""

from __future__ import annotations

import contextlib
import datetime
import time
from collections.abc import AsyncIterator

from envstore.common.transport import EventBus
from envstore.common.events import BlobRef, BuildProgress
from envstore.common.storage import Storage


def _stamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


class BuildReporter:
    def __init__(self, bus: EventBus, build_id: int, service: str) -> None:
        self.bus = bus
        self.build_id = build_id
        self.service = service
        self.lines: list[str] = []

    async def note(self, phase: str, message: str) -> None:
        self._keep(phase, message)
        await self._publish(phase, "note", message, None, suffix=str(len(self.lines)))

    @contextlib.asynccontextmanager
    async def phase(self, name: str, start_message: str = "") -> AsyncIterator[None]:
        """One phase: its progress events and log lines, a trace span and a duration metric."""
        with self.bus.telemetry.phase(self.service, name, self.build_id):
            self._keep(name, f"started {start_message}".rstrip())
            await self._publish(name, "started", start_message, None)
            started = time.perf_counter()
            try:
                yield
            except BaseException as error:
                duration = time.perf_counter() - started
                self._keep(name, f"failed after {duration:.3f} s: {error}")
                raise
            duration = time.perf_counter() - started
            self._keep(name, f"ended in {duration:.3f} s")
            await self._publish(name, "ended", "", duration)

    async def store(self, storage: Storage) -> BlobRef:
        return await storage.put_bytes(("\n".join(self.lines) + "\n").encode())

    def _keep(self, phase: str, message: str) -> None:
        self.lines.append(f"{_stamp()} [{self.service}] {phase}: {message}")

    async def _publish(
        self, phase: str, state: str, message: str, duration: float | None, suffix: str = ""
    ) -> None:
        await self.bus.publish(
            BuildProgress(
                build_id=self.build_id,
                phase=phase,
                state=state,
                message=message,
                duration_seconds=duration,
                service=self.service,
            ),
            message_id=f"progress:{self.build_id}:{self.service}:{phase}:{state}{suffix}",
        )
