"""Pulling an archived image asks for its rehydration (``build.rehydration_requested``, once per
archive however many pulls ask) — not before the builder freed the archived files."""

from __future__ import annotations

from envstore.common.events import BuildRehydrationRequested
from envstore.common.transport import EventBus
from envstore.registry.catalog import BuildImage
from envstore.registry.image_waits import Rehydrate


def rehydration_requester(bus: EventBus) -> Rehydrate:
    async def request(build: BuildImage) -> None:
        if not build.archive_freed:
            return
        event = BuildRehydrationRequested(
            build_id=build.build_id, generation=build.archive_generation, attempt=build.rehydration_attempt,
            kinds=list(build.archived_kinds),
        )
        if not await bus.has_event_on(event.subject):
            await bus.publish_once(event, message_id=f"rehydrate:{build.build_id}:{build.archive_generation}:{build.rehydration_attempt}")

    return request
