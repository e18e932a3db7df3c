"""Bringing the filesystem namespace in line with the watched files, one file at a time.

A file is built when the specification it gives (after the settings in force and the
deployment's check, exactly as the API would take it) differs from the one of its environment's
latest build: a new file builds, an edited one builds again, an unchanged one after a restart
does not. The decision is taken on the read model and published expecting the environment's
position it was taken at, so two watchers deciding on the same state cannot both submit: the
second one's publish is refused, it waits for the read model to catch up and decides again
(finding the build the first one submitted). A file that cannot be built is reported — in the
log and as a ``watched_file.rejected`` event — and the watcher goes on.

A removed file leaves its environment as it is (as in conda-store), unless
``watch_paths_delete_removed`` is set: then the environment is deleted, provided no other file
defines it and every watched directory can be read (an unmounted volume must not look like
every file removed).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import msgspec

from envstore.common.admin_hooks import HookError, SpecificationCheck
from envstore.common.channels import ChannelGuard
from envstore.common.events import BuildSubmitted, Event, WatchedFileRejected, environment_tree
from envstore.common.ids import IdAllocator
from envstore.common.read_model_rules import (
    aggregate_position,
    effective_settings,
    environment_deletion,
    environments_of_namespace,
    latest_specification_sha256,
    read_model_checkpoint,
)
from envstore.common.settings import EnvstoreSettings
from envstore.common.specification import SpecificationError, parse_specification_text
from envstore.common.specification_documents import offload_large_specification
from envstore.common.storage import Storage
from envstore.common.submission import SubmissionRequest, build_submission, submission_refusal
from envstore.common.transport import Conflict, EventBus, Expectation
from envstore.watcher.watched_files import WatchedPaths

log = logging.getLogger(__name__)

DECISION_ATTEMPTS = 8
READ_MODEL_POLL_SECONDS = 0.05
RETRY_JITTER_SECONDS = 0.05
SERVICE_PRINCIPAL = "service:watcher"
Decide = Callable[[], Awaitable[Event | None]]


class Rejected(Exception):
    """A watched file that cannot be built; the message says why, for whoever wrote it."""

    def __init__(self, reason: str, environment: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.environment = environment


@dataclass
class WatchReconciler:
    settings: EnvstoreSettings
    watched: WatchedPaths
    bus: EventBus
    read_model: asyncpg.Pool
    storage: Storage
    channel_guard: ChannelGuard
    build_ids: IdAllocator
    check: SpecificationCheck | None = None
    # The environment each watched file defines, as last read (to know what a removed file
    # defined, and which file named an environment first).
    defined: dict[Path, str] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.settings.filesystem_namespace

    # --- whole directories ------------------------------------------------------------------------

    async def reconcile_all(self) -> None:
        """Every file as it is now, then (when told to delete) environments no file defines."""
        files = await asyncio.to_thread(self.watched.environment_files)
        for path in files:
            await self.reconcile_file(path)
        if self.settings.watch_paths_delete_removed:
            await self._delete_orphans()

    async def _delete_orphans(self) -> None:
        """After a restart: environments this watcher made whose file is gone now."""
        if await self._some_directory_unreadable():
            return
        wanted = set(self.defined.values())
        for environment in await environments_of_namespace(self.read_model, self.namespace):
            if environment not in wanted and await self._made_by_watcher(environment):
                await self._delete_environment(environment, "its file is no longer in a watched directory")

    async def _made_by_watcher(self, environment: str) -> bool:
        """Its latest build was submitted by a watcher (not by someone through the API)."""
        subjects = f"{environment_tree(self.namespace, environment)[:-1]}build.*.{BuildSubmitted.tag()}"
        message = await self.bus.last_message_on(subjects)
        if message is None:
            return False
        event = self.bus.codec.decode(message.subject, message.data, message.sequence)
        return event.principal == SERVICE_PRINCIPAL

    # --- one file ---------------------------------------------------------------------------------

    async def reconcile_file(self, path: Path) -> None:
        previous = self.defined.get(path)
        try:
            event = await self._submission_of(path)
        except FileNotFoundError:
            await self.file_removed(path)  # gone between the change and the read
            return
        except Rejected as rejection:
            # A file being edited into shape still stands for its environment: an invalid
            # version neither builds nor makes the environment an orphan to delete.
            claimed = rejection.environment if rejection.environment not in self._defined_elsewhere(path) else ""
            if previous is None and claimed:
                self.defined[path] = claimed
            await self._reject(path, rejection)
            return
        self.defined[path] = event.environment
        if previous is not None and previous != event.environment:
            await self._environment_undefined(previous, f"{path} now defines {event.environment} instead")
        await self._submit_unless_built(path, event)

    async def file_removed(self, path: Path) -> None:
        environment = self.defined.pop(path, None)
        if environment is None:
            return
        await self._environment_undefined(environment, f"{path} was removed")

    async def _environment_undefined(self, environment: str, why: str) -> None:
        if environment in self.defined.values():
            return  # another file defines it too
        if not self.settings.watch_paths_delete_removed:
            log.info(
                "%s: environment %s/%s is kept (as in conda-store; ENVSTORE_WATCH_PATHS_DELETE_REMOVED=true deletes it)",
                why, self.namespace, environment,
            )
            return
        if await self._some_directory_unreadable():
            return
        await self._delete_environment(environment, why)

    async def _some_directory_unreadable(self) -> bool:
        unreadable = await asyncio.to_thread(self.watched.unreadable_directories)
        if unreadable:
            log.warning(
                "not deleting environments of %s: watched directories %s cannot be read (unmounted?)",
                self.namespace, ", ".join(map(str, unreadable)),
            )
        return bool(unreadable)

    async def _submission_of(self, path: Path) -> BuildSubmitted:
        """The build the file asks for, validated as the API validates a submission."""
        try:
            text = await asyncio.to_thread(path.read_text)
        except FileNotFoundError:
            raise
        except (OSError, UnicodeDecodeError) as error:
            raise Rejected(f"cannot be read: {error}") from None
        try:
            name = parse_specification_text(text).get("name")
        except SpecificationError as error:
            raise Rejected(str(error)) from None
        environment = name if isinstance(name, str) else ""
        others = self._defined_elsewhere(path)
        if environment in others:
            raise Rejected(f"names environment {environment}, which {others[environment]} defines already", environment)
        settings = await effective_settings(self.read_model, self.settings, self.namespace, environment or None)
        request = SubmissionRequest(specification=text, namespace=self.namespace)
        try:
            event = await asyncio.to_thread(build_submission, request, settings, None, self.check)
        except SpecificationError as error:
            raise Rejected(str(error), environment) from None
        except HookError as error:
            raise Rejected(f"the deployment's specification check failed: {error}", environment) from None
        refusal = await submission_refusal(self.channel_guard, event, settings.conda_channel_alias)
        if refusal:
            raise Rejected(refusal, environment)
        return await offload_large_specification(event, self.storage)

    def _defined_elsewhere(self, path: Path) -> dict[str, Path]:
        """The environments other files define, and which file defines each."""
        return {environment: other for other, environment in self.defined.items() if other != path}

    async def _reject(self, path: Path, rejection: Rejected) -> None:
        log.warning("watched file %s is not built: %s", path, rejection.reason)
        event = WatchedFileRejected(
            namespace=self.namespace, environment=rejection.environment, path=str(path), reason=rejection.reason
        )
        # The same file with the same problem is one event, whichever watcher reports it.
        digest = hashlib.sha256(f"{path}\0{rejection.reason}".encode()).hexdigest()[:32]
        await self.bus.publish(event, f"watch-rejected:{digest}")

    async def _submit_unless_built(self, path: Path, event: BuildSubmitted) -> None:
        aggregate = environment_tree(self.namespace, event.environment)

        async def decide() -> Event | None:
            latest = await latest_specification_sha256(self.read_model, self.namespace, event.environment)
            if latest == event.spec_sha256:
                log.info("%s: %s/%s is built from it already", path, self.namespace, event.environment)
                return None
            return msgspec.structs.replace(event, build_id=await self.build_ids.next(), scheduled_on=time.time())

        decision = await self._command(aggregate, decide, f"watch:{self.namespace}/{event.environment}:{event.spec_sha256}")
        if decision is None:
            return
        submitted, duplicate = decision
        if duplicate:
            log.info("%s: another watcher submitted the same build of %s/%s at this moment", path, self.namespace, event.environment)
        else:
            assert isinstance(submitted, BuildSubmitted)
            log.info("%s: submitted build %d of %s/%s", path, submitted.build_id, self.namespace, event.environment)

    async def _delete_environment(self, environment: str, why: str) -> None:
        async def decide() -> Event | None:
            return await environment_deletion(self.read_model, self.namespace, environment)

        decision = await self._command(environment_tree(self.namespace, environment), decide, f"watch-delete:{self.namespace}/{environment}")
        if decision is not None:
            log.info("%s: deleted environment %s/%s", why, self.namespace, environment)

    async def _command(self, aggregate: str, decide: Decide, message_id_prefix: str) -> tuple[Event, bool] | None:
        """As the API's commands: decide on the read model, publish expecting the aggregate's
        position the decision was taken at; when another event got there first, wait for the read
        model to catch up and decide again. The message id names the decision and the position,
        so two watchers publishing the same decision at once make one event (the second one's
        answer says duplicate). The event published and whether it was such a duplicate; None when
        the decision was to do nothing."""
        for _ in range(DECISION_ATTEMPTS):
            # The position first, then the state: a state newer than its position only makes a
            # conflict, never a decision on stale state that passes.
            position = await aggregate_position(self.read_model, aggregate)
            event = await decide()
            if event is None:
                return None
            try:
                acknowledgement = await self.bus.publish(
                    event, f"{message_id_prefix}:{position}", expect=Expectation(aggregate, position)
                )
                return event, bool(acknowledgement.duplicate)
            except Conflict:
                await self._read_model_caught_up()
                await asyncio.sleep(random.uniform(0, RETRY_JITTER_SECONDS))
        raise RuntimeError(
            f"{aggregate} kept changing while the watcher decided ({DECISION_ATTEMPTS} attempts); it will look again "
            "at the next change or restart"
        )

    async def _read_model_caught_up(self) -> None:
        """Until the read model has applied every event published so far (bounded)."""
        target = await self.bus.last_sequence()
        deadline = time.monotonic() + self.settings.projection_wait_seconds
        while await read_model_checkpoint(self.read_model) < target and time.monotonic() < deadline:
            await asyncio.sleep(READ_MODEL_POLL_SECONDS)
