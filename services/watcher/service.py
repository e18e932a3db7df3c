"""The watcher process (``python -m envstore.watcher``): the files of ``ENVSTORE_WATCH_PATHS`` →
builds in the filesystem namespace.

It looks at every file when it starts (it is ready once it has), then at each file watchfiles
reports changed, and at all of them again every ``RESCAN_SECONDS`` (conda-store's period), which
also covers changes made while the operating system's notifications were not being read (the
moment between the first look and the watch, network filesystems). Files are handled one at a
time, so one watcher never races itself; replicas are safe (see ``reconciler``).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from watchfiles import Change, awatch

from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from envstore.common.admin_hooks import HookError, SpecificationCheck
from envstore.common.channels import ChannelGuard
from envstore.common.events import BuildSubmitted
from envstore.common.ids import IdAllocator
from envstore.common.read_model_rules import open_read_model
from envstore.common.service_runtime import connected_bus, run_service
from envstore.common.settings import EnvstoreSettings
from envstore.common.storage import open_storage
from envstore.common.telemetry import Telemetry
from envstore.watcher.reconciler import WatchReconciler
from envstore.watcher.watched_files import WatchPathError, WatchedPaths

SERVICE = "watcher"
RESCAN_SECONDS = 60.0
log = logging.getLogger(__name__)


async def serve(settings: EnvstoreSettings, telemetry: Telemetry) -> None:
    if not settings.watch_paths:
        raise SystemExit("ENVSTORE_WATCH_PATHS is empty: the watcher has nothing to watch (name directories, comma-separated)")
    try:
        watched = WatchedPaths.from_setting(settings.watch_paths)
        check = SpecificationCheck.from_settings(settings)
    except (WatchPathError, HookError) as error:
        raise SystemExit(f"envstore watcher cannot start: {error}") from None
    async with connected_bus(settings, SERVICE, telemetry) as bus, open_storage(settings) as storage:
        read_model = await open_read_model(settings.read_only_database_url)
        try:
            reconciler = WatchReconciler(
                settings=settings,
                watched=watched,
                bus=bus,
                read_model=read_model,
                storage=storage,
                channel_guard=ChannelGuard.from_settings(settings),
                build_ids=IdAllocator(bus, "build", BuildSubmitted.legacy_subject()),
                check=check,
            )
            await watch(reconciler, watched, telemetry)
        finally:
            await read_model.close()


async def watch(reconciler: WatchReconciler, watched: WatchedPaths, telemetry: Telemetry) -> None:
    first_look_done = asyncio.Event()

    async def looked_at_every_file() -> str | None:
        return None if first_look_done.is_set() else "still looking at the watched files for the first time"

    telemetry.readiness.add("watched files", looked_at_every_file)
    changed: asyncio.Queue[set[Path]] = asyncio.Queue()

    async def collect_changes() -> None:
        def wanted(change: Change, path: str) -> bool:
            return watched.is_environment_file(Path(path))

        async for batch in awatch(*watched.roots, watch_filter=wanted, recursive=False):
            changed.put_nowait({Path(path) for _, path in batch})

    async def handle_changes() -> None:
        # Ready only once every file was looked at: until then (the read model or the bus still
        # starting) the first look is tried again.
        async for attempt in AsyncRetrying(retry=retry_if_exception_type(Exception), wait=wait_exponential(0.2, max=5)):
            with attempt:
                await reconciler.reconcile_all()
        first_look_done.set()
        log.info("watching %s for environment files (namespace %s)", ", ".join(map(str, watched.roots)), reconciler.namespace)
        while True:
            try:
                async with asyncio.timeout(RESCAN_SECONDS):
                    batch = await changed.get()
            except TimeoutError:
                await look_at_every_file(reconciler)
                continue
            for path in sorted(batch):
                await look_at_file(reconciler, path)

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(collect_changes(), name="watch-changes")
        tasks.create_task(handle_changes(), name="watch-reconcile")


async def look_at_every_file(reconciler: WatchReconciler) -> None:
    try:
        await reconciler.reconcile_all()
    except Exception:
        # The bus or the read model may be away for a moment: the next look tries again.
        log.exception("looking at the watched files failed; trying again in %g s", RESCAN_SECONDS)


async def look_at_file(reconciler: WatchReconciler, path: Path) -> None:
    try:
        if await asyncio.to_thread(path.is_file):
            await reconciler.reconcile_file(path)
        else:
            await reconciler.file_removed(path)
    except Exception:
        log.exception("handling the change of %s failed; it is looked at again within %g s", path, RESCAN_SECONDS)


def main() -> None:
    run_service(SERVICE, serve)
