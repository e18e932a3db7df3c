"""The packager service: ``build.built`` → artifacts in storage → ``artifact.ready`` each, then
the build's outcome. Artifacts are produced concurrently. Every artifact the build asked for is
required: if one fails (``artifact.failed``, a line in the log), the others are still made, and
the build ends FAILED with that reason — the environment's current build stays as it was.

Each artifact's outcome is once-only per build and kind: a redelivered ``build.built`` (a packager
killed mid-way) makes only the artifacts that have no outcome yet."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from envstore.common.artifact_kinds import ArtifactKind
from envstore.common.build_log import compose_log, failure_header
from envstore.common.build_reporter import BuildReporter
from envstore.common.transport import EventBus
from envstore.common.worker_runtime import Delivery
from envstore.common.build_policy import BuildFailure
from envstore.common.events import (
    ArtifactFailed,
    ArtifactReady,
    BuildBuilt,
    BuildCompleted,
    BuildRehydrationRequested,
    BuildSubmitted,
    WORKER_SUBSCRIPTIONS,
    UndecodableEvent,
    artifact_filter,
)
from envstore.common.lock import Lock
from envstore.common.prefix_permissions import prefix_permissions_of
from envstore.common.service_runtime import connected_bus, run_pipeline_worker, run_service
from envstore.common.settings import EnvstoreSettings
from envstore.common.specification_documents import with_full_specification
from envstore.common.storage import Storage, open_storage
from envstore.common.telemetry import Telemetry
from envstore.packager.artifacts import conda_pack, installer, lockfile, pinned_yaml
from envstore.packager.artifacts import oci_image
from envstore.packager.artifacts.inputs import BuildInputs, Produced
from envstore.packager.prefix_handoff import prepared_prefix
from envstore.packager.rehydration import rehydrate

SERVICE = "packager"
log = logging.getLogger(__name__)

Producer = Callable[[BuildInputs], Awaitable[Produced]]

# One module per artifact kind; LOGS is the sum of the others' reports and comes last.
PRODUCERS: dict[ArtifactKind, Producer] = {
    ArtifactKind.LOCKFILE: lockfile.produce,
    ArtifactKind.YAML: pinned_yaml.produce,
    ArtifactKind.CONDA_PACK: conda_pack.produce,
    ArtifactKind.CONSTRUCTOR_INSTALLER: installer.produce,
    ArtifactKind.DOCKER_MANIFEST: oci_image.produce,
}
ALWAYS_PRODUCED = (ArtifactKind.LOCKFILE,)


class PackagerService:
    def __init__(self, settings: EnvstoreSettings, bus: EventBus, storage: Storage) -> None:
        self.settings = settings
        self.bus = bus
        self.storage = storage

    async def handle(self, delivery: Delivery) -> None:
        event = delivery.event
        if isinstance(event, BuildRehydrationRequested):
            await rehydrate(self, event, PRODUCERS, self._scratch())
            return
        assert isinstance(event, BuildBuilt)
        build = event.build
        reporter = BuildReporter(self.bus, build.build_id, SERVICE)
        submitted = await self.bus.event_at(build.submission_sequence)
        assert isinstance(submitted, BuildSubmitted)
        submitted = await with_full_specification(submitted, self.storage)
        lock = Lock.decode(await self.storage.get_bytes(event.lock))
        wanted = list(ALWAYS_PRODUCED) + [
            ArtifactKind(kind) for kind in build.artifacts if kind in PRODUCERS and kind not in ALWAYS_PRODUCED
        ]
        outcomes = {kind: await self._earlier_outcome(build.build_id, kind) for kind in wanted}
        missing = [kind for kind in wanted if outcomes[kind] is None]
        if missing:
            work_directory = Path(tempfile.mkdtemp(prefix=f"packager-{build.build_id}-", dir=self._scratch()))
            try:
                prefix = await prepared_prefix(
                    event, lock, self.settings, work_directory, reporter, prefix_permissions_of(submitted.settings, self.settings)
                )
                inputs = BuildInputs(event, submitted, lock, self.storage, self.settings, work_directory, prefix)
                produced = await asyncio.gather(*(self._produce(kind, inputs, reporter) for kind in missing))
            finally:
                await asyncio.to_thread(shutil.rmtree, work_directory, True)
            outcomes.update(zip(missing, produced))
        failures = {kind: outcome for kind, outcome in outcomes.items() if isinstance(outcome, str)}
        if failures:
            reason = "; ".join(f"{kind} failed: {why}" for kind, why in failures.items())
            failure = BuildFailure("package", f"artifacts could not be made: {reason}")
            failure.log = await compose_log(self.storage, event.log, reporter, failure_header(failure))
            await self._publish_ready(
                build.build_id, ArtifactKind.LOGS, Produced(f"logs/{build.build_key}.log", failure.log, "text/plain; charset=utf-8")
            )
            raise failure
        logs = await compose_log(self.storage, event.log, reporter)
        await self._publish_ready(
            build.build_id, ArtifactKind.LOGS, Produced(f"logs/{build.build_key}.log", logs, "text/plain; charset=utf-8")
        )
        await self.bus.publish_once(
            BuildCompleted(
                build_id=build.build_id,
                namespace=build.namespace,
                environment=build.environment,
                size_bytes=event.size_bytes,
                artifacts=[str(kind) for kind in [*wanted, ArtifactKind.LOGS]],
                build_key=build.build_key,
            ),
            message_id=f"completed:{build.build_id}",
        )

    async def _earlier_outcome(self, build_id: int, kind: ArtifactKind) -> bool | str | None:
        """An artifact's outcome from an earlier delivery: True (ready), the failure's reason, or
        None (none yet)."""
        message = await self.bus.last_message_on(artifact_filter(build_id, kind))
        if message is None:
            return None
        try:
            earlier = self.bus.codec.decode(message.subject, message.data, message.sequence)
        except UndecodableEvent:
            return None
        return earlier.reason if isinstance(earlier, ArtifactFailed) else True

    def _scratch(self) -> Path:
        directory = self.settings.cache_root / "packager"
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    async def _produce(self, kind: ArtifactKind, inputs: BuildInputs, reporter: BuildReporter) -> bool | str:
        """True once the artifact is ready, or the reason it failed."""
        build_id = inputs.build.build_id
        try:
            async with reporter.phase(kind.lower()):
                produced = await PRODUCERS[kind](inputs)
        except Exception as error:
            log.exception("artifact %s of build %s failed", kind, build_id)
            reason = str(error) or type(error).__name__
            await self.bus.publish_once(
                ArtifactFailed(build_id=build_id, kind=kind, reason=reason),
                message_id=f"artifact-failed:{build_id}:{kind}",
            )
            return reason
        await self._publish_ready(build_id, kind, produced)
        return True

    async def _publish_ready(self, build_id: int, kind: ArtifactKind, produced: Produced) -> None:
        await self.storage.name(produced.key, produced.blob)
        await self.bus.publish_once(
            ArtifactReady(
                build_id=build_id, kind=kind, key=produced.key, blob=produced.blob, content_type=produced.content_type
            ),
            message_id=f"artifact:{build_id}:{kind}",
        )


async def serve(settings: EnvstoreSettings, telemetry: Telemetry) -> None:
    async with connected_bus(settings, SERVICE, telemetry) as bus, open_storage(settings) as storage:
        service = PackagerService(settings, bus, storage)
        await run_pipeline_worker(bus, settings, SERVICE, WORKER_SUBSCRIPTIONS[SERVICE], service.handle)


def main() -> None:
    run_service(SERVICE, serve)
