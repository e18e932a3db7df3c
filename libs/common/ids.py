"""Ids of builds and webhooks: integers (conda-store's clients need them) allocated from the bus's
counter, carried by the events that create them, so a log that is re-created, mirrored or
imported keeps every id."""

from __future__ import annotations

from envstore.common.transport import EventBus


class IdAllocator:
    def __init__(self, bus: EventBus, kind: str, legacy_subject: str) -> None:
        self.bus = bus
        self.kind = kind
        # Where release 0.1.0 put the events whose stream sequences were its ids of this kind.
        self.legacy_subject = legacy_subject
        self._floor: int | None = None

    async def floor(self) -> int:
        """The largest id taken before the counter existed (release 0.1.0's last one), or 0."""
        if self._floor is None:
            last_legacy = await self.bus.last_message_on(self.legacy_subject)
            self._floor = last_legacy.sequence if last_legacy is not None else 0
        return self._floor

    async def next(self) -> int:
        return await self.bus.allocate_id(self.kind, at_least=await self.floor() + 1)
