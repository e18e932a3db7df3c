"""From a tag to a build whose image exists, waiting (bounded) for a build still on its way.

conda-store's registry waited for a build's image before answering; so does envstore, for builds
that were asked for an image, watching the index instead of polling. While it waits, the build's
progress events go to the log. Every way a build can end without an image answers
``MANIFEST_UNKNOWN`` with the reason: the solver's explanation for an unsatisfiable specification,
the image producer's error, a deletion, a cancellation.
"""

from __future__ import annotations

import collections
import logging

from envstore.common.events import BuildProgress, Event
from envstore.registry.errors import RegistryError, manifest_unknown, name_unknown
from envstore.registry.repository_names import RepositoryName
from envstore.registry.tag_index import BuildImage, TagIndex

log = logging.getLogger(__name__)


def _settled(build: BuildImage) -> bool:
    return build.has_image or build.deleted or build.image_failure is not None or build.finished


class ImageWaits:
    def __init__(self, index: TagIndex, wait_seconds: float) -> None:
        self.index = index
        self.wait_seconds = wait_seconds
        self._watched: collections.Counter[int] = collections.Counter()
        index.observers.append(self._log_progress)

    def _log_progress(self, event: Event, sequence: int) -> None:
        if isinstance(event, BuildProgress) and self._watched[event.build_id]:
            log.info(
                "waiting for the image of build %d: %s %s%s",
                event.build_id,
                event.phase,
                event.state,
                f" ({event.message})" if event.message else "",
            )

    async def build_with_image(self, repository_name: RepositoryName, tag: str) -> BuildImage:
        name = repository_name.text
        repository = self.index.repository(repository_name.namespace, repository_name.environment)
        if repository is None:
            raise name_unknown(name)
        build = repository.build_for(tag)
        if build is None:
            raise manifest_unknown(name, tag, f"manifest unknown: {name} has no build tagged {tag!r}")
        if not _settled(build):
            if not build.wants_image:
                raise self._no_image(name, tag, build, "it was not asked for one (DOCKER_MANIFEST is not in its build_artifacts)")
            await self._wait(build)
        if build.has_image:
            return build
        if build.deleted:
            raise self._no_image(name, tag, build, "the build was deleted")
        if build.image_failure is not None:
            raise self._no_image(name, tag, build, f"making the image failed: {build.image_failure}")
        if build.failure is not None:
            raise self._no_image(name, tag, build, f"the build {build.status.lower()}: {build.failure}")
        raise self._no_image(name, tag, build, "the build completed without one (DOCKER_MANIFEST was not requested)")

    async def _wait(self, build: BuildImage) -> None:
        self._watched[build.build_id] += 1
        if self._watched[build.build_id] == 1:
            log.info(
                "waiting up to %.0f s for the image of build %d (%s/%s)",
                self.wait_seconds, build.build_id, build.namespace, build.environment,
            )
        try:
            settled = await self.index.wait_until(lambda: _settled(build), self.wait_seconds)
        finally:
            self._watched[build.build_id] -= 1
            last = not self._watched[build.build_id]
            if last:
                del self._watched[build.build_id]
        if not settled:
            raise manifest_unknown(
                f"{build.namespace}/{build.environment}",
                str(build.build_id),
                f"manifest unknown: build {build.build_id} is still running after {self.wait_seconds:.0f} s; pull again later",
            )
        if last:
            log.info("build %d settled: %s", build.build_id, "image ready" if build.has_image else build.status)

    @staticmethod
    def _no_image(name: str, tag: str, build: BuildImage, why: str) -> RegistryError:
        error = manifest_unknown(name, tag, f"manifest unknown: build {build.build_id} of {name} has no image: {why}")
        error.detail = {"name": name, "reference": tag, "build_id": build.build_id, "reason": why}
        return error
