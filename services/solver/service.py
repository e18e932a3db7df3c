"""The solver service: ``build.submitted`` → ``build.solved`` (or ``build.failed``)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import aiohttp
import msgspec
from nats.aio.msg import Msg

from envstore.common.build_keys import build_key_of_submission
from envstore.common.build_log import attach_failure_log
from envstore.common.build_reporter import BuildReporter
from envstore.common.build_policy import BuildFailure
from envstore.common.channels import ChannelGuard, channel_url
from envstore.common.events import WORKER_SUBSCRIPTIONS, BuildRef, BuildSolved, BuildSubmitted
from envstore.common.transport import EventBus
from envstore.common.worker_runtime import Delivery
from envstore.common.lock import Lock, LockedPipPackage, installed_package, locked_package_from_record
from envstore.common.service_runtime import connected_bus, run_pipeline_worker, run_service
from envstore.common.solve_requests import SOLVE_SUBJECT, RemoteSolveAnswer, RemoteSolveRequest
from envstore.common.settings import EnvstoreSettings, host_platform
from envstore.common.specification import EnvironmentSpecification
from envstore.common.specification_documents import with_full_specification
from envstore.common.storage import Storage, open_storage
from envstore.common.submission import submission_refusal
from envstore.common.telemetry import Telemetry
from envstore.solver.solve import SolveRequest, Solver

SERVICE = "solver"


def build_ref_of(event: BuildSubmitted, submission_sequence: int) -> BuildRef:
    return BuildRef(
        build_id=event.build_id,
        namespace=event.namespace,
        environment=event.environment,
        build_key=build_key_of_submission(event),
        spec_sha256=event.spec_sha256,
        artifacts=event.artifacts,
        platforms=event.platforms,
        submission_sequence=submission_sequence,
    )


class SolverService:
    def __init__(
        self, settings: EnvstoreSettings, bus: EventBus, storage: Storage, solver: Solver, channel_guard: ChannelGuard
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.storage = storage
        self.solver = solver
        self.channel_guard = channel_guard

    async def handle(self, delivery: Delivery) -> None:
        event = delivery.event
        assert isinstance(event, BuildSubmitted)
        build = build_ref_of(event, delivery.stream_sequence)
        if await self.bus.has_event_on(BuildSolved.subject_for(build.build_id)):
            return  # solved by an earlier delivery
        reporter = BuildReporter(self.bus, build.build_id, SERVICE)
        try:
            await self._solve_and_publish(event, build, reporter)
        except BuildFailure as failure:
            await attach_failure_log(failure, self.storage, [], reporter)
            raise

    async def _solve_and_publish(self, event: BuildSubmitted, build: BuildRef, reporter: BuildReporter) -> None:
        event = await with_full_specification(event, self.storage)
        # Checked again here, where the fetching happens: the API checked at submission, but a
        # host's DNS answer may have changed since, and the stream may hold older submissions.
        refusal = await submission_refusal(self.channel_guard, event, self._channel_alias(event))
        if refusal:
            raise BuildFailure("lock" if event.is_lockfile else "solve", refusal)
        if event.is_lockfile:
            async with reporter.phase("lock", "reading the submitted conda-lock lockfile (no solve)"):
                lock = await asyncio.to_thread(lock_from_conda_lock, event.specification["lockfile"])
            seconds, cache_hit = 0.0, False
        else:
            request = self._request_for(event)
            async with reporter.phase(
                "solve", f"{', '.join(request.specs) or 'no packages'} for {', '.join(request.platforms)}"
            ):
                outcome = await self.solver.solve(request)
            for note in outcome.notes:
                await reporter.note("solve", note)
            lock, seconds = outcome.lock, outcome.seconds
            cache_hit = outcome.cache_hits == len(request.platforms)
            # An index may link its files anywhere: where the wheels are is checked like the index.
            wheel_urls = sorted({package.url for packages in lock.pip_packages.values() for package in packages})
            refusal = await self.channel_guard.refusal(wheel_urls, "pip package URL")
            if refusal:
                raise BuildFailure("solve", refusal)
        lock_blob = await self.storage.put_bytes(lock.encode())
        log_blob = await reporter.store(self.storage)
        await self.bus.publish_once(
            BuildSolved(
                build=build,
                lock=lock_blob,
                package_count=sum(len(packages) for packages in lock.platforms.values()),
                solve_seconds=seconds,
                cache_hit=cache_hit,
                log=[log_blob],
            ),
            message_id=f"solved:{build.build_id}",
        )

    def _request_for(self, event: BuildSubmitted) -> SolveRequest:
        specification = EnvironmentSpecification.model_validate(event.specification)
        channels = specification.channels or self.settings.conda_default_channels
        alias = self._channel_alias(event)
        return SolveRequest(
            specs=specification.conda_dependencies,
            channel_urls=[channel_url(channel, alias) for channel in channels],
            platforms=event.platforms,
            pip=specification.pip_dependencies,
            use_cache=event.rebuild_of is None,
            max_solve_seconds=event.settings.max_solve_seconds if event.settings else None,
            virtual_packages=tuple(specification.virtual_packages or ()),
        )

    def _channel_alias(self, event: BuildSubmitted) -> str:
        """The alias in force for the build's environment when it was submitted (a namespace may
        set its own); this solver's for submissions that did not record one."""
        if event.settings is not None and event.settings.channel_alias:
            return event.settings.channel_alias
        return self.settings.conda_channel_alias


def lock_from_conda_lock(lockfile: dict) -> Lock:
    """A user's conda-lock v1 lockfile → our lock, read by rattler (no solve)."""
    import rattler
    import yaml

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "conda-lock.yml"
        path.write_text(yaml.safe_dump(lockfile))
        try:
            lock_file = rattler.LockFile.from_path(path)
        except Exception as error:
            raise BuildFailure("lock", f"the lockfile cannot be read: {error}") from None
    environment = lock_file.default_environment()
    if environment is None:
        raise BuildFailure("lock", "the lockfile has no packages")
    platforms = {}
    for platform in environment.platforms():
        records = environment.conda_repodata_records_for_platform(platform) or []
        platforms[str(platform)] = sorted(
            (locked_package_from_record(record) for record in records), key=lambda p: p.name
        )
    channels = [str(channel.url) if hasattr(channel, "url") else str(channel) for channel in environment.channels()]
    pip_packages = {
        str(platform): sorted(
            (locked_pip_package_from_lockfile(package) for package in environment.pypi_packages_for_platform(platform) or []),
            key=lambda package: package.name,
        )
        for platform in environment.platforms()
    }
    pip_packages = {platform: packages for platform, packages in pip_packages.items() if packages}
    pip = sorted({package.pin for packages in pip_packages.values() for package in packages})
    return Lock(channels=channels, platforms=platforms, pip=pip, pip_packages=pip_packages)


def locked_pip_package_from_lockfile(package) -> LockedPipPackage:  # type: ignore[no-untyped-def]
    """A conda-lock lockfile's pip package (read by rattler) → LockedPipPackage; installed only
    with a sha256 to check it against."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    location, _, fragment = str(package.location).partition("#")
    digest = package.hashes.sha256 if package.hashes is not None else None
    sha256 = digest.hex() if digest else fragment.removeprefix("sha256=") if fragment.startswith("sha256=") else ""
    if not sha256:
        raise BuildFailure("lock", f"pip package {package.name} in the lockfile has no sha256 hash; lock it with hashes")
    if not location.endswith(".whl"):
        raise BuildFailure("lock", f"pip package {package.name} in the lockfile is not a wheel ({location}); only wheels are installed")
    dependencies = {}
    for requirement in package.requires_dist or []:
        try:
            parsed = Requirement(str(requirement))
        except InvalidRequirement:
            continue
        dependencies[canonicalize_name(parsed.name)] = str(parsed.specifier) or "*"
    return LockedPipPackage(
        name=canonicalize_name(package.name),
        version=str(package.version),
        url=location,
        sha256=sha256,
        file_name=location.rsplit("/", 1)[-1],
        dependencies=dependencies,
    )


class RemoteSolves:
    """Answers ``GET /api/v1/specification/`` solves sent by the API as NATS requests."""

    def __init__(self, solver: Solver, channel_guard: ChannelGuard) -> None:
        self.solver = solver
        self.channel_guard = channel_guard

    async def answer(self, message: Msg) -> None:
        try:
            question = msgspec.json.decode(message.data, type=RemoteSolveRequest)
            platform = question.platform or self.solver.host_platform
            refusal = await self.channel_guard.refusal(question.channel_urls)
            if refusal:
                raise BuildFailure("solve", refusal)
            outcome = await self.solver.solve(
                # conda packages only: the answer lists what conda installs.
                SolveRequest(specs=question.specs, channel_urls=question.channel_urls, platforms=[platform], pip=[])
            )
            answer = RemoteSolveAnswer(
                packages=[installed_package(package) for package in outcome.lock.packages_for(platform)]
            )
        except BuildFailure as failure:
            answer = RemoteSolveAnswer(error=failure.reason)
        except (msgspec.ValidationError, msgspec.DecodeError) as error:
            answer = RemoteSolveAnswer(error=f"not a solve request: {error}")
        await message.respond(msgspec.json.encode(answer))


async def serve(settings: EnvstoreSettings, telemetry: Telemetry) -> None:
    async with (
        aiohttp.ClientSession() as http,
        connected_bus(settings, SERVICE, telemetry) as bus,
        open_storage(settings) as storage,
    ):
        solver = Solver(
            cache_directory=settings.cache_root,
            host_platform=host_platform(),
            max_solve_seconds=settings.conda_max_solve_time,
            cache_entries=settings.solve_cache_entries,
            http=http,
        )
        channel_guard = ChannelGuard.from_settings(settings)
        service = SolverService(settings, bus, storage, solver, channel_guard)
        remote_solves = RemoteSolves(solver, channel_guard)
        await bus.client.subscribe(SOLVE_SUBJECT, queue="solver", cb=remote_solves.answer)
        await run_pipeline_worker(bus, settings, SERVICE, WORKER_SUBSCRIPTIONS[SERVICE], service.handle)


def main() -> None:
    run_service(SERVICE, serve)
