"""The registry's own index: repositories (``<namespace>/<environment>``), their builds, tags and
images, kept from the event stream only (never from the API), so it is rebuilt by replaying the
stream after a restart.

Tags, as conda-store names them: ``latest`` (the environment's current build), a build key, or a
build id. The current build follows the API's rules: the first build of a new environment at
once, then every build that completes, and any build named by ``environment.current_build_set``
(rollback); an environment created again after its deletion starts as a new one. A deleted build (requested or done, unless its image is kept) has no tags; a deleted
environment or namespace has no repository until a build brings it back.

``apply`` is synchronous and called in stream order by the follower; code that needs a state not
reached yet awaits ``wait_until`` (bounded), which is woken after every applied event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from envstore.common.artifact_kinds import ArtifactKind
from envstore.common.build_keys import build_key_of_submission
from envstore.common.events import (
    ArtifactFailed,
    ArtifactReady,
    BlobRef,
    BuildCanceled,
    BuildCompleted,
    BuildDeleted,
    BuildDeleteRequested,
    BuildFailed,
    BuildSubmitted,
    EnvironmentCurrentBuildSet,
    EnvironmentDeleted,
    Event,
    NamespaceCreated,
    NamespaceDeleted,
)

log = logging.getLogger(__name__)

LATEST = "latest"
QUEUED, COMPLETED, FAILED, CANCELED = "QUEUED", "COMPLETED", "FAILED", "CANCELED"
IMAGE = str(ArtifactKind.DOCKER_MANIFEST)


@dataclass
class BuildImage:
    """One build as the registry sees it: what it was asked for and how far it got."""

    build_id: int
    namespace: str
    environment: str
    build_key: str
    wants_image: bool
    status: str = QUEUED  # QUEUED until it completes, fails or is canceled
    manifest: BlobRef | None = None
    manifest_type: str = ""
    failure: str | None = None  # build.failed's reason for users (e.g. the solver's explanation)
    image_failure: str | None = None  # artifact.failed for the image
    deleted: bool = False

    @property
    def finished(self) -> bool:
        return self.status != QUEUED

    @property
    def has_image(self) -> bool:
        return self.manifest is not None and not self.deleted


@dataclass
class Repository:
    namespace: str
    environment: str
    builds: dict[int, BuildImage] = field(default_factory=dict)
    by_key: dict[str, int] = field(default_factory=dict)
    current_build_id: int | None = None
    deleted: bool = False
    deletions: int = 0  # how often the environment (or its namespace) was deleted
    version: int = 0  # changes whenever the repository's images change (for caches)

    @property
    def name(self) -> str:
        return f"{self.namespace}/{self.environment}"

    def build_for(self, tag: str) -> BuildImage | None:
        """The build a tag names (its image may not exist yet)."""
        if tag == LATEST:
            build_id = self.current_build_id
        elif tag.isascii() and tag.isdigit():
            build_id = int(tag)
        else:
            build_id = self.by_key.get(tag)
        build = self.builds.get(build_id) if build_id is not None else None
        return None if build is None or build.deleted else build

    def images(self) -> list[BuildImage]:
        return [build for build in self.builds.values() if build.has_image]

    def tags(self) -> list[str]:
        """Every tag with an image, in lexical order (as the distribution spec lists them)."""
        tags = {tag for build in self.images() for tag in (build.build_key, str(build.build_id))}
        current = self.builds.get(self.current_build_id) if self.current_build_id is not None else None
        if current is not None and current.has_image:
            tags.add(LATEST)
        return sorted(tags)


Observer = Callable[[Event, int], None]


@dataclass
class _Waiter:
    ready: Callable[[], bool]
    future: asyncio.Future[None]


class TagIndex:
    def __init__(self) -> None:
        self.applied_sequence = 0
        self._repositories: dict[tuple[str, str], Repository] = {}
        self._builds: dict[int, BuildImage] = {}
        self._namespaces: set[str] = set()
        self._waiters: list[_Waiter] = []
        self.observers: list[Observer] = []

    # --- reading ---------------------------------------------------------------------------------

    def repository(self, namespace: str, environment: str) -> Repository | None:
        repository = self._repositories.get((namespace, environment))
        return None if repository is None or repository.deleted else repository

    def repositories(self) -> list[Repository]:
        return sorted(
            (repository for repository in self._repositories.values() if not repository.deleted),
            key=lambda repository: repository.name,
        )

    def build(self, build_id: int) -> BuildImage | None:
        return self._builds.get(build_id)

    def deletions(self, namespace: str, environment: str) -> int:
        repository = self._repositories.get((namespace, environment))
        return 0 if repository is None else repository.deletions

    def namespace_exists(self, namespace: str) -> bool:
        return namespace in self._namespaces

    async def wait_until(self, ready: Callable[[], bool], timeout_seconds: float) -> bool:
        """True once ``ready()`` holds (checked after every applied event), False at the timeout."""
        if ready():
            return True
        waiter = _Waiter(ready, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), timeout_seconds)
            return True
        except TimeoutError:
            return ready()
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    # --- applying events, in stream order ----------------------------------------------------------

    def apply(self, event: Event | None, sequence: int) -> None:
        """Apply the event at ``sequence`` (None: an event this version does not know)."""
        if event is not None:
            handler = self._HANDLERS.get(type(event))
            if handler is not None:
                handler(self, event, sequence)
            for observer in self.observers:
                try:
                    observer(event, sequence)
                except Exception:
                    log.exception("an index observer failed on event %s", sequence)
        self.applied_sequence = max(self.applied_sequence, sequence)
        self._wake()

    def _wake(self) -> None:
        for waiter in list(self._waiters):
            if not waiter.future.done() and waiter.ready():
                waiter.future.set_result(None)

    def _changed(self, build: BuildImage) -> None:
        repository = self._repositories.get((build.namespace, build.environment))
        if repository is not None:
            repository.version += 1

    def _build_submitted(self, event: BuildSubmitted, sequence: int) -> None:
        self._namespaces.add(event.namespace)
        key = (event.namespace, event.environment)
        repository = self._repositories.get(key)
        if repository is None:
            repository = self._repositories[key] = Repository(event.namespace, event.environment)
        if repository.deleted:
            # Created again after a deletion: it starts as a new environment does.
            repository.deleted = False
            repository.current_build_id = None
        build = BuildImage(
            build_id=sequence,
            namespace=event.namespace,
            environment=event.environment,
            build_key=build_key_of_submission(event, sequence),
            wants_image=IMAGE in event.artifacts,
        )
        repository.builds[sequence] = build
        repository.by_key[build.build_key] = sequence
        self._builds[sequence] = build
        if repository.current_build_id is None:
            repository.current_build_id = sequence  # the first build is current at once
        repository.version += 1

    def _artifact_ready(self, event: ArtifactReady, sequence: int) -> None:
        build = self._builds.get(event.build_id)
        if build is not None and event.kind == IMAGE:
            build.manifest = event.blob
            build.manifest_type = event.content_type
            self._changed(build)

    def _artifact_failed(self, event: ArtifactFailed, sequence: int) -> None:
        build = self._builds.get(event.build_id)
        if build is not None and event.kind == IMAGE:
            build.image_failure = event.reason

    def _build_completed(self, event: BuildCompleted, sequence: int) -> None:
        build = self._builds.get(event.build_id)
        if build is None or build.finished:
            return
        build.status = COMPLETED
        repository = self._repositories.get((build.namespace, build.environment))
        if repository is not None:
            repository.current_build_id = build.build_id  # every completed build becomes current
            repository.version += 1

    def _build_failed(self, event: BuildFailed, sequence: int) -> None:
        build = self._builds.get(event.build_id)
        if build is not None and not build.finished:
            build.status = FAILED
            build.failure = event.reason

    def _build_canceled(self, event: BuildCanceled, sequence: int) -> None:
        build = self._builds.get(event.build_id)
        if build is not None and not build.finished:
            build.status = CANCELED
            build.failure = event.reason or f"build {event.build_id} was canceled"

    def _build_deleted(self, event: BuildDeleteRequested | BuildDeleted, sequence: int) -> None:
        kept = event.keep if isinstance(event, BuildDeleteRequested) else event.kept
        build = self._builds.get(event.build_id)
        if build is not None and IMAGE not in kept:
            build.deleted = True
            self._changed(build)

    def _current_build_set(self, event: EnvironmentCurrentBuildSet, sequence: int) -> None:
        repository = self._repositories.get((event.namespace, event.environment))
        if repository is not None:
            repository.current_build_id = event.build_id
            repository.version += 1

    def _environment_deleted(self, event: EnvironmentDeleted, sequence: int) -> None:
        repository = self._repositories.get((event.namespace, event.environment))
        if repository is not None:
            self._delete(repository)

    def _namespace_created(self, event: NamespaceCreated, sequence: int) -> None:
        self._namespaces.add(event.namespace)

    def _namespace_deleted(self, event: NamespaceDeleted, sequence: int) -> None:
        self._namespaces.discard(event.namespace)
        for (namespace, _), repository in self._repositories.items():
            if namespace == event.namespace:
                self._delete(repository)

    def _delete(self, repository: Repository) -> None:
        if not repository.deleted:
            repository.deletions += 1
        repository.deleted = True
        for build in repository.builds.values():
            build.deleted = True
        repository.version += 1

    _HANDLERS: ClassVar[dict[type, Callable[[TagIndex, Event, int], None]]] = {
        BuildSubmitted: _build_submitted,
        ArtifactReady: _artifact_ready,
        ArtifactFailed: _artifact_failed,
        BuildCompleted: _build_completed,
        BuildFailed: _build_failed,
        BuildCanceled: _build_canceled,
        BuildDeleteRequested: _build_deleted,
        BuildDeleted: _build_deleted,
        EnvironmentCurrentBuildSet: _current_build_set,
        EnvironmentDeleted: _environment_deleted,
        NamespaceCreated: _namespace_created,
        NamespaceDeleted: _namespace_deleted,
    }  # type: ignore[assignment]
