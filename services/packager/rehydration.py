"""Rehydration: an archived build's artifacts made again from its lock — no solve, the same
producers as the first time, so the image has the same manifest digest as before (its layers
and configuration are reproducible). The prefix is installed into the packager's scratch from
its package cache (the builder's prefix was freed by the archive).

Once per archive generation: ``build.rehydrated`` is published once-only in the generation's slot,
so a redelivery, or a second request, adds nothing; a failure is recorded there too, with why."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from pathlib import Path

from envstore.common.artifact_kinds import ArtifactKind
from envstore.common.build_reporter import BuildReporter
from envstore.common.events import BuildBuilt, BuildRehydrated, BuildRehydrationRequested, BuildSubmitted, RehydratedArtifact
from envstore.common.lock import Lock
from envstore.common.specification_documents import with_full_specification
from envstore.packager.artifacts.inputs import BuildInputs, Produced
from envstore.packager.prefix_handoff import prepared_prefix

log = logging.getLogger(__name__)


async def rehydrate(service, event: BuildRehydrationRequested, producers, scratch: Path) -> None:  # type: ignore[no-untyped-def]
    bus, storage, settings = service.bus, service.storage, service.settings
    outcome = BuildRehydrated(build_id=event.build_id, generation=event.generation, attempt=event.attempt)
    if await bus.has_event_on(outcome.subject):
        return  # done by an earlier delivery
    started = time.perf_counter()
    try:
        artifacts = await _remake(bus, storage, settings, event, producers, scratch)
        outcome = BuildRehydrated(
            build_id=event.build_id, generation=event.generation, attempt=event.attempt, artifacts=artifacts,
            seconds=time.perf_counter() - started,
        )
    except Exception as error:
        log.exception("rehydration %s of build %s failed", event.generation, event.build_id)
        outcome = BuildRehydrated(
            build_id=event.build_id, generation=event.generation, attempt=event.attempt, failed=str(error) or type(error).__name__,
            seconds=time.perf_counter() - started,
        )
    await bus.publish_once(outcome, message_id=f"rehydrated:{event.build_id}:{event.generation}:{event.attempt}")


async def _remake(bus, storage, settings, event: BuildRehydrationRequested, producers, scratch: Path) -> list[RehydratedArtifact]:  # type: ignore[no-untyped-def]
    message = await bus.last_message_on(BuildBuilt.subject_for(event.build_id))
    if message is None:
        raise ValueError(f"build {event.build_id} was never built; there is nothing to rehydrate")
    built = bus.codec.decode(message.subject, message.data, message.sequence)
    assert isinstance(built, BuildBuilt)
    submitted = await bus.event_at(built.build.submission_sequence)
    assert isinstance(submitted, BuildSubmitted)
    submitted = await with_full_specification(submitted, storage)
    lock = Lock.decode(await storage.get_bytes(built.lock))
    reporter = BuildReporter(bus, event.build_id, "packager")
    work_directory = Path(tempfile.mkdtemp(prefix=f"rehydrate-{event.build_id}-", dir=scratch))
    try:
        prefix = await prepared_prefix(built, lock, settings, work_directory, reporter)
        inputs = BuildInputs(built, submitted, lock, storage, settings, work_directory, prefix)
        kinds = [ArtifactKind(kind) for kind in event.kinds if kind in producers]
        produced: list[Produced] = list(await asyncio.gather(*(producers[kind](inputs) for kind in kinds)))
    finally:
        await asyncio.to_thread(shutil.rmtree, work_directory, True)
    for item in produced:
        await storage.name(item.key, item.blob)
    return [
        RehydratedArtifact(kind=str(kind), key=item.key, blob=item.blob, content_type=item.content_type)
        for kind, item in zip(kinds, produced)
    ]
