"""The builder service: ``build.solved`` → installed prefix → ``build.built``."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time

from envstore.common.build_log import attach_failure_log
from envstore.common.build_reporter import BuildReporter
from envstore.common.transport import EventBus
from envstore.common.worker_runtime import Delivery
from envstore.common.build_policy import BuildFailure
from envstore.common.admin_hooks import CurrentBuildHook, HookError
from envstore.common.events import (
    BuildArchived,
    BuildArchiveRequested,
    BuildBuilt,
    BuildSettings,
    BuildSubmitted,
    UndecodableEvent,
    BuildCompleted,
    BuildDeleted,
    BuildDeleteRequested,
    BuildSolved,
    DoomedBuild,
    EnvironmentCurrentBuildSet,
    EnvironmentDeleted,
    NamespaceDeleted,
    WORKER_SUBSCRIPTIONS,
)
from envstore.common.lock import Lock, installed_package
from envstore.common.service_runtime import connected_bus, run_pipeline_worker, run_service
from envstore.common.settings import EnvstoreSettings, host_platform
from envstore.common.storage import Storage, open_storage
from envstore.common.telemetry import Telemetry
from envstore.builder.housekeeping import free_archived_build, remove_build, remove_environment_link
from envstore.builder.current_link import point_environment_at
from envstore.builder.install import measure, move_into_place, staging_directory
from envstore.common.prefix_install import check_build_path, install_environment
from envstore.common.prefix_permissions import PrefixPermissionError, apply_prefix_permissions, prefix_permissions_of

SERVICE = "builder"
log = logging.getLogger(__name__)


class BuilderService:
    def __init__(
        self,
        settings: EnvstoreSettings,
        bus: EventBus,
        storage: Storage,
        current_build_hook: CurrentBuildHook | None = None,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.storage = storage
        self.platform = host_platform()
        self.current_build_hook = current_build_hook

    async def handle(self, delivery: Delivery) -> None:
        event = delivery.event
        if isinstance(event, BuildSolved):
            await self.build(event)
        elif isinstance(event, BuildCompleted):
            # The current build changes last: only once every artifact is ready.
            await self.switch_current_build(
                event.namespace, event.environment, event.build_id, event.build_key, delivery.stream_sequence
            )
        elif isinstance(event, EnvironmentCurrentBuildSet):
            await self.switch_current_build(
                event.namespace, event.environment, event.build_id, event.build_key, delivery.stream_sequence
            )
        elif isinstance(event, BuildDeleteRequested):
            await self.delete_build(
                DoomedBuild(event.build_id, event.namespace, event.build_key), list(event.keep)
            )
        elif isinstance(event, EnvironmentDeleted):
            for doomed in event.builds:
                await self.delete_build(doomed, keep=[])
            await remove_environment_link(self.settings.environments_root, event.namespace, event.environment)
        elif isinstance(event, BuildArchiveRequested):
            await self.archive_build(event)
        elif isinstance(event, NamespaceDeleted):
            for doomed in event.builds:
                await self.delete_build(doomed, keep=[])
            await remove_environment_link(self.settings.environments_root, event.namespace, None)

    async def delete_build(self, doomed: DoomedBuild, keep: list[str]) -> None:
        await remove_build(self.settings.environments_root, self.storage, doomed.namespace, doomed.build_key, keep)
        await self.bus.publish(
            BuildDeleted(build_id=doomed.build_id, kept=keep),
            message_id=f"deleted:{doomed.build_id}:{'+'.join(sorted(keep)) or 'all'}",
        )

    async def archive_build(self, event: BuildArchiveRequested) -> None:
        """Free an archived build's prefix and the names of its archived artifacts (their blobs
        go when garbage collection finds nothing else uses them)."""
        await free_archived_build(self.settings.environments_root, self.storage, event.namespace, event.build_key, list(event.kinds))
        await self.bus.publish(
            BuildArchived(build_id=event.build_id, generation=event.generation, kinds=list(event.kinds)),
            message_id=f"archived:{event.build_id}:{event.generation}",
        )

    async def switch_current_build(
        self, namespace: str, environment: str, build_id: int, build_key: str, decided_at: int
    ) -> None:
        if not build_key:
            return
        namespace_directory = self.settings.environments_root / namespace
        link, prefix = namespace_directory / "envs" / environment, namespace_directory / build_key
        if not await point_environment_at(link, prefix, decided_at) or self.current_build_hook is None:
            return
        # conda-store's post_update_environment_build_hook: the deployment's code, told once the
        # link points at the new current build. Its failure is logged; the build stays as it is.
        try:
            await self.current_build_hook(
                namespace=namespace,
                environment=environment,
                build_id=build_id,
                build_key=build_key,
                prefix=prefix,
                environment_path=link,
            )
        except Exception:
            log.exception(
                "%s=%s failed for %s/%s (build %d)",
                CurrentBuildHook.SETTING, self.current_build_hook.dotted_path, namespace, environment, build_id,
            )

    async def build(self, event: BuildSolved) -> None:
        build = event.build
        if await self.bus.has_event_on(BuildBuilt.subject_for(build.build_id)):
            return  # built by an earlier delivery
        reporter = BuildReporter(self.bus, build.build_id, SERVICE)
        try:
            await self._build_and_publish(event, reporter)
        except BuildFailure as failure:
            await attach_failure_log(failure, self.storage, event.log, reporter)
            raise

    async def _build_and_publish(self, event: BuildSolved, reporter: BuildReporter) -> None:
        build = event.build
        lock = Lock.decode(await self.storage.get_bytes(event.lock))
        if self.platform not in lock.platforms:
            raise BuildFailure(
                "install",
                f"the lock has no packages for this server's platform {self.platform} "
                f"(locked: {', '.join(sorted(lock.platforms))})",
            )
        packages = lock.platforms[self.platform]
        namespace_directory = self.settings.environments_root / build.namespace
        prefix = namespace_directory / build.build_key
        check_build_path(prefix)
        build_settings = await self._build_settings(build.submission_sequence)
        await self._check_free_space(build_settings)
        started = time.perf_counter()
        pip_count = len(lock.pip_packages_for(self.platform))
        pip_note = f" and {pip_count} pip packages" if pip_count else ""
        # Installed into a private staging directory (its files written for the final path), then
        # moved into place whole: a second delivery of this build (a redelivery while the first
        # still installs) never touches a prefix someone packs, and the first complete one wins.
        staging = staging_directory(namespace_directory, build.build_key)
        try:
            async with reporter.phase("install", f"{len(packages)} packages{pip_note} into {prefix}"):
                await install_environment(lock, self.platform, staging, self.settings.package_cache, prefix)
            install_seconds = time.perf_counter() - started
            wanted = prefix_permissions_of(build_settings, self.settings)
            if wanted.changes_anything:
                async with reporter.phase("permissions", f"{wanted.describe()} for {prefix}"):
                    try:
                        await asyncio.to_thread(apply_prefix_permissions, staging, wanted)
                    except PrefixPermissionError as error:
                        raise BuildFailure("permissions", str(error)) from None
            if not await asyncio.to_thread(move_into_place, staging, prefix):
                await reporter.note("install", "another delivery of this build installed it first; theirs is kept")
        finally:
            await asyncio.to_thread(shutil.rmtree, staging, True)
        size = await measure(prefix)
        await reporter.note("install", f"prefix size {size} bytes")
        log_blob = await reporter.store(self.storage)
        await self.bus.publish_once(
            BuildBuilt(
                build=build,
                lock=event.lock,
                prefix=str(prefix),
                size_bytes=size,
                package_count=len(packages),
                install_seconds=install_seconds,
                log=[*event.log, log_blob],
                packages=[installed_package(package) for package in packages],
            ),
            message_id=f"built:{build.build_id}",
        )


    async def _build_settings(self, submission_sequence: int) -> BuildSettings | None:
        """What the build's submission recorded (None in events from before they were recorded)."""
        try:
            submitted = await self.bus.event_at(submission_sequence)
        except UndecodableEvent:
            return None
        return submitted.settings if isinstance(submitted, BuildSubmitted) else None

    async def _check_free_space(self, build_settings: BuildSettings | None) -> None:
        """conda-store's storage_threshold: no install when less than that is free in the store."""
        threshold = self.settings.storage_threshold
        if build_settings is not None and build_settings.storage_threshold is not None:
            threshold = build_settings.storage_threshold
        root = self.settings.environments_root
        await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
        free = (await asyncio.to_thread(shutil.disk_usage, root)).free
        if free < threshold:
            raise BuildFailure(
                "install",
                f"only {free} bytes are free in {root}, less than storage_threshold ({threshold} bytes): "
                "free some space (delete old builds) or lower storage_threshold",
            )


async def serve(settings: EnvstoreSettings, telemetry: Telemetry) -> None:
    try:
        current_build_hook = CurrentBuildHook.from_settings(settings)
    except HookError as error:
        raise SystemExit(f"envstore builder cannot start: {error}") from None
    async with connected_bus(settings, SERVICE, telemetry) as bus, open_storage(settings) as storage:
        service = BuilderService(settings, bus, storage, current_build_hook)
        # serialize_builds: one message at a time across every replica (the consumer allows one
        # unacknowledged message), so installs never overlap.
        await run_pipeline_worker(
            bus, settings, SERVICE, WORKER_SUBSCRIPTIONS[SERVICE], service.handle, one_at_a_time=settings.serialize_builds
        )


def main() -> None:
    run_service(SERVICE, serve)
