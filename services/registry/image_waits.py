"""From a tag to a build whose image exists, waiting (bounded) for a build still on its way.

conda-store's registry waited for a build's image before answering; so does envstore, for builds
that were asked for an image, woken whenever the read model moves instead of polling. Every way a
build can end without an image answers ``MANIFEST_UNKNOWN`` with the reason: the solver's
explanation for an unsatisfiable specification, a failed artifact, a deletion, a cancellation.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from envstore.registry.catalog import BuildImage, Catalog
from envstore.registry.errors import RegistryError, manifest_unknown, name_unknown
from envstore.registry.projection_watch import ProjectionWatch
from envstore.registry.repository_names import RepositoryName

log = logging.getLogger(__name__)
Rehydrate = Callable[[BuildImage], Awaitable[None]]


class ImageWaits:
    def __init__(
        self, catalog: Catalog, watch: ProjectionWatch, wait_seconds: float, rehydrate: Rehydrate | None = None
    ) -> None:
        self.catalog = catalog
        self.watch = watch
        self.wait_seconds = wait_seconds
        self.rehydrate = rehydrate

    async def build_with_image(self, repository_name: RepositoryName, tag: str) -> BuildImage:
        name = repository_name.text
        repository = await self.catalog.repository(repository_name.namespace, repository_name.environment)
        if repository is None:
            raise name_unknown(name)
        build = await self.catalog.build_for(repository, tag)
        if build is None:
            raise manifest_unknown(name, tag, f"manifest unknown: {name} has no build tagged {tag!r}")
        if not build.settled:
            if not build.wants_image and not build.archived:
                raise self._no_image(name, tag, build, "it was not asked for one (DOCKER_MANIFEST is not in its build_artifacts)")
            build = await self._wait(build)
        if build.has_image:
            return build
        if build.deleted:
            raise self._no_image(name, tag, build, "the build was deleted")
        if build.rehydration_failure is not None:
            raise self._no_image(name, tag, build, f"it was archived and could not be rehydrated: {build.rehydration_failure}")
        if build.failure is not None:
            raise self._no_image(name, tag, build, f"the build {build.status.lower()}: {build.failure}")
        raise self._no_image(name, tag, build, "the build completed without one (DOCKER_MANIFEST was not requested)")

    async def _wait(self, build: BuildImage) -> BuildImage:
        log.info(
            "waiting up to %.0f s for the image of build %d (%s/%s)",
            self.wait_seconds, build.build_id, build.namespace, build.environment,
        )
        latest = build

        async def settled() -> bool:
            nonlocal latest
            latest = await self.catalog.build(build.build_id) or latest
            if latest.archived and self.rehydrate is not None:
                # An archived image is made again from the lock (asked once per archive).
                await self.rehydrate(latest)
            return latest.settled

        if not await self.watch.wait_until(settled, self.wait_seconds):
            raise manifest_unknown(
                f"{build.namespace}/{build.environment}",
                str(build.build_id),
                f"manifest unknown: build {build.build_id} is still running after {self.wait_seconds:.0f} s; pull again later",
            )
        log.info("build %d settled: %s", build.build_id, "image ready" if latest.has_image else latest.status)
        return latest

    @staticmethod
    def _no_image(name: str, tag: str, build: BuildImage, why: str) -> RegistryError:
        error = manifest_unknown(name, tag, f"manifest unknown: build {build.build_id} of {name} has no image: {why}")
        error.detail = {"name": name, "reference": tag, "build_id": build.build_id, "reason": why}
        return error
