"""The packager service: ``build.built`` → artifacts in storage → ``artifact.ready`` each, then
the build's outcome. Artifacts are produced concurrently. Every artifact the build asked for is
required: if one fails (``artifact.failed``, a line in the log), the others are still made, and
the build ends FAILED with that reason — the environment's current build stays as it was.

Each artifact's outcome is once-only per build and kind: a redelivered ``build.built`` (a packager
killed mid-way) makes only the artifacts that have no outcome yet."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from envstore.common.artifact_keys import PER_PLATFORM_KINDS, is_packable_platform
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
    artifact_slot,
)
from envstore.common.lock import Lock
from envstore.common.prefix_permissions import PrefixPermissions, apply_prefix_permissions, prefix_permissions_of
from envstore.common.service_runtime import connected_bus, run_pipeline_worker, run_service
from envstore.common.prefix_install import install_environment
from envstore.common.settings import EnvstoreSettings, host_platform
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
# The kinds whose main artifact is one platform's environment (its event names the platform).
PLATFORM_SPECIFIC_KINDS = (*PER_PLATFORM_KINDS, ArtifactKind.YAML)


@dataclasses.dataclass(frozen=True)
class ArtifactSlot:
    """One artifact a build asks for: a kind, and for a further platform's artifact its platform."""

    kind: ArtifactKind
    platform: str | None = None

    @property
    def slot(self) -> str:
        return artifact_slot(self.kind, self.platform)

    @property
    def phase(self) -> str:
        return self.kind.lower() if self.platform is None else f"{self.kind.lower()} {self.platform}"

    def __str__(self) -> str:
        return str(self.kind) if self.platform is None else f"{self.kind} for {self.platform}"


def main_platform_of(lock: Lock) -> str:
    """The platform of the build's main artifacts (conda-store's names and routes): the host's when
    the lock has it, else the first locked one."""
    host = host_platform()
    return host if host in lock.platforms else sorted(lock.platforms)[0]


def further_platforms(lock: Lock, main_platform: str) -> list[str]:
    """The lock's other platforms that get their own tarball and installer."""
    return [platform for platform in sorted(lock.platforms) if platform != main_platform and is_packable_platform(platform)]


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
        main_platform = main_platform_of(lock)
        # The build's main artifacts, then each further platform's tarball and installer.
        slots = [ArtifactSlot(kind) for kind in wanted] + [
            ArtifactSlot(kind, platform)
            for platform in further_platforms(lock, main_platform)
            for kind in wanted
            if kind in PER_PLATFORM_KINDS
        ]
        outcomes = {slot: await self._earlier_outcome(build.build_id, slot) for slot in slots}
        missing = [slot for slot in slots if outcomes[slot] is None]
        if missing:
            work_directory = Path(tempfile.mkdtemp(prefix=f"packager-{build.build_id}-", dir=self._scratch()))
            try:
                inputs = BuildInputs(event, submitted, lock, self.storage, self.settings, work_directory)
                permissions = prefix_permissions_of(submitted.settings, self.settings)

                async def main_artifacts() -> list[bool | str]:
                    slots_here = [slot for slot in missing if slot.platform is None]
                    if not slots_here:
                        return []
                    prefix = await prepared_prefix(event, lock, self.settings, work_directory, reporter, permissions)
                    here = dataclasses.replace(inputs, installed_prefix=prefix)
                    return list(await asyncio.gather(*(self._produce(slot, here, main_platform, reporter) for slot in slots_here)))

                async def platform_artifacts(platform: str) -> list[bool | str]:
                    slots_here = [slot for slot in missing if slot.platform == platform]
                    here = await self._platform_inputs(inputs, platform, reporter, permissions)
                    if isinstance(here, str):  # the environment could not be installed for it
                        for slot in slots_here:
                            await self._publish_failed(build.build_id, slot, here)
                        return [here] * len(slots_here)
                    return list(await asyncio.gather(*(self._produce(slot, here, platform, reporter) for slot in slots_here)))

                platforms = sorted({slot.platform for slot in missing if slot.platform is not None})
                produced = await asyncio.gather(main_artifacts(), *(platform_artifacts(platform) for platform in platforms))
            finally:
                await asyncio.to_thread(shutil.rmtree, work_directory, True)
            ordered = [slot for slot in missing if slot.platform is None] + [
                slot for platform in platforms for slot in missing if slot.platform == platform
            ]
            outcomes.update(zip(ordered, [outcome for group in produced for outcome in group]))
        failures = {slot: outcome for slot, outcome in outcomes.items() if isinstance(outcome, str)}
        if failures:
            reason = "; ".join(f"{slot} failed: {why}" for slot, why in failures.items())
            failure = BuildFailure("package", f"artifacts could not be made: {reason}")
            failure.log = await compose_log(self.storage, event.log, reporter, failure_header(failure))
            await self._publish_ready(
                build.build_id, ArtifactSlot(ArtifactKind.LOGS), Produced(f"logs/{build.build_key}.log", failure.log, "text/plain; charset=utf-8")
            )
            raise failure
        logs = await compose_log(self.storage, event.log, reporter)
        await self._publish_ready(
            build.build_id, ArtifactSlot(ArtifactKind.LOGS), Produced(f"logs/{build.build_key}.log", logs, "text/plain; charset=utf-8")
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

    async def _platform_inputs(
        self, inputs: BuildInputs, platform: str, reporter: BuildReporter, permissions: PrefixPermissions
    ) -> BuildInputs | str:
        """The inputs of a further platform's artifacts: the lock's environment for it, installed
        here into its own scratch without running any package's scripts (they could not run on this
        machine), as pixi-pack unpacks; or why it could not be installed."""
        directory = inputs.work_directory / "platforms" / platform
        prefix = directory / "prefix"
        pip_count = len(inputs.lock.pip_packages_for(platform))
        note = f" and {pip_count} pip packages" if pip_count else ""
        try:
            async with reporter.phase("install", f"{len(inputs.lock.packages_for(platform))} packages{note} for {platform}"):
                await install_environment(inputs.lock, platform, prefix, self.settings.package_cache)
            if permissions.changes_anything:
                await asyncio.to_thread(apply_prefix_permissions, prefix, permissions)
        except Exception as error:
            log.exception("installing build %s for %s failed", inputs.build.build_id, platform)
            return f"installing the environment for {platform} failed: {error}"
        return dataclasses.replace(inputs, work_directory=directory, installed_prefix=prefix, target_platform=platform)

    async def _earlier_outcome(self, build_id: int, slot: ArtifactSlot) -> bool | str | None:
        """An artifact's outcome from an earlier delivery: True (ready), the failure's reason, or
        None (none yet)."""
        message = await self.bus.last_message_on(artifact_filter(build_id, slot.kind, slot.platform))
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

    async def _produce(
        self, slot: ArtifactSlot, inputs: BuildInputs, platform: str, reporter: BuildReporter
    ) -> bool | str:
        """True once the artifact is ready, or the reason it failed."""
        build_id = inputs.build.build_id
        try:
            async with reporter.phase(slot.phase):
                produced = await PRODUCERS[slot.kind](inputs)
        except Exception as error:
            log.exception("artifact %s of build %s failed", slot, build_id)
            reason = str(error) or type(error).__name__
            await self._publish_failed(build_id, slot, reason)
            return reason
        await self._publish_ready(build_id, slot, produced, platform if slot.kind in PLATFORM_SPECIFIC_KINDS else "")
        return True

    async def _publish_failed(self, build_id: int, slot: ArtifactSlot, reason: str) -> None:
        await self.bus.publish_once(
            ArtifactFailed(
                build_id=build_id, kind=slot.kind, reason=reason, platform=slot.platform or "", additional=slot.platform is not None
            ),
            message_id=f"artifact-failed:{build_id}:{slot.slot}",
        )

    async def _publish_ready(self, build_id: int, slot: ArtifactSlot, produced: Produced, platform: str = "") -> None:
        await self.storage.name(produced.key, produced.blob)
        await self.bus.publish_once(
            ArtifactReady(
                build_id=build_id,
                kind=slot.kind,
                key=produced.key,
                blob=produced.blob,
                content_type=produced.content_type,
                platform=platform,
                additional=slot.platform is not None,
            ),
            message_id=f"artifact:{build_id}:{slot.slot}",
        )


async def serve(settings: EnvstoreSettings, telemetry: Telemetry) -> None:
    async with connected_bus(settings, SERVICE, telemetry) as bus, open_storage(settings) as storage:
        service = PackagerService(settings, bus, storage)
        await run_pipeline_worker(bus, settings, SERVICE, WORKER_SUBSCRIPTIONS[SERVICE], service.handle)


def main() -> None:
    run_service(SERVICE, serve)
