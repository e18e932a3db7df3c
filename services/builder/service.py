"""The builder service: ``build.solved`` → installed prefix → ``build.built``."""

from __future__ import annotations

import time

from envstore.common.build_log import attach_failure_log
from envstore.common.build_reporter import BuildReporter
from envstore.common.bus import BuildFailure, Delivery, EventBus
from envstore.common.events import BuildBuilt, BuildSolved
from envstore.common.lock import Lock
from envstore.common.service_runtime import connected_bus, run_service
from envstore.common.settings import EnvstoreSettings, host_platform
from envstore.common.storage import Storage, open_storage
from envstore.builder.install import check_build_path, install_prefix, measure, point_environment_at

SERVICE = "builder"


class BuilderService:
    def __init__(self, settings: EnvstoreSettings, bus: EventBus, storage: Storage) -> None:
        self.settings = settings
        self.bus = bus
        self.storage = storage
        self.platform = host_platform()

    async def handle(self, delivery: Delivery) -> None:
        event = delivery.event
        assert isinstance(event, BuildSolved)
        build = event.build
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
        started = time.perf_counter()
        async with reporter.phase("install", f"{len(packages)} packages into {prefix}"):
            await install_prefix(packages, prefix, self.settings.package_cache, self.platform)
        install_seconds = time.perf_counter() - started
        point_environment_at(namespace_directory / "envs" / build.environment, prefix)
        size = await measure(prefix)
        await reporter.note("install", f"prefix size {size} bytes")
        log_blob = await reporter.store(self.storage)
        await self.bus.publish(
            BuildBuilt(
                build=build,
                lock=event.lock,
                prefix=str(prefix),
                size_bytes=size,
                package_count=len(packages),
                install_seconds=install_seconds,
                log=[*event.log, log_blob],
            ),
            message_id=f"built:{build.build_id}",
        )


async def serve(settings: EnvstoreSettings) -> None:
    async with connected_bus(settings, SERVICE) as bus:
        service = BuilderService(settings, bus, open_storage(settings))
        await bus.consume(
            "builder",
            [BuildSolved.SUBJECT],
            service.handle,
            concurrency=settings.worker_concurrency,
            ack_wait_seconds=settings.worker_ack_wait_seconds,
            max_attempts=settings.worker_max_attempts,
        )


def main() -> None:
    run_service(SERVICE, serve)
