"""Which namespace, environment and build an event concerns.

Most events name them; the rest carry only a build id, and the build's ``build.submitted`` event
(found by the build's id: ``EventBus.submission_of``) names its namespace and environment. Those look-ups
are cached (bounded), and concurrent look-ups of one build share one request."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass

from envstore.common.transport import EventBus
from envstore.common.events import BuildRef, BuildSubmitted, Event, build_id_of

log = logging.getLogger(__name__)

BuildLocation = tuple[str, str]  # (namespace, environment)


@dataclass(frozen=True)
class EventScope:
    """What an event is about; None where it concerns no such thing (or it cannot be found)."""

    namespace: str | None = None
    environment: str | None = None
    build_id: int | None = None

    @property
    def arn(self) -> str:
        """The ARN permissions are checked on: ``ns/env``, ``ns``, or the global ARN ``""``."""
        if self.namespace is None:
            return ""
        if self.environment is None:
            return self.namespace
        return f"{self.namespace}/{self.environment}"


def _named(event: Event, field: str) -> str | None:
    value = getattr(event, field, None)
    return value if isinstance(value, str) and value else None


class EventScopes:
    """Finds events' scopes; one per process (or per subscriber), holding its cache."""

    def __init__(self, bus: EventBus, cached_builds: int = 4096) -> None:
        self.bus = bus
        self.cached_builds = cached_builds
        self._builds: OrderedDict[int, asyncio.Future[BuildLocation | None]] = OrderedDict()

    async def scope_of(self, event: Event, sequence: int) -> EventScope:
        build_id = build_id_of(event)
        build = getattr(event, "build", None)
        if isinstance(build, BuildRef):
            return EventScope(build.namespace, build.environment, build_id)
        namespace, environment = _named(event, "namespace"), _named(event, "environment")
        if isinstance(event, BuildSubmitted):
            self._remember(event.build_id, (event.namespace, event.environment))
        if namespace is None and build_id is not None:
            location = await self.build_location(build_id)
            if location is not None:
                namespace, environment = location
        return EventScope(namespace, environment, build_id)

    async def build_location(self, build_id: int) -> BuildLocation | None:
        """The namespace and environment of a build, None if there is no such build."""
        pending = self._builds.get(build_id)
        if pending is not None:
            self._builds.move_to_end(build_id)
            return await asyncio.shield(pending)
        pending = asyncio.ensure_future(self._look_up(build_id))
        self._builds[build_id] = pending
        self._trim()
        try:
            return await asyncio.shield(pending)
        except Exception:
            # A transient failure (bus unavailable) is not an answer: ask again next time.
            if self._builds.get(build_id) is pending:
                del self._builds[build_id]
            raise

    async def _look_up(self, build_id: int) -> BuildLocation | None:
        found = await self.bus.submission_of(build_id)
        if found is None:
            return None
        _, submission = found
        return submission.namespace, submission.environment

    def _remember(self, build_id: int, location: BuildLocation) -> None:
        if build_id in self._builds and self._builds[build_id].done():
            return
        known: asyncio.Future[BuildLocation | None] = asyncio.get_running_loop().create_future()
        known.set_result(location)
        self._builds[build_id] = known
        self._trim()

    def _trim(self) -> None:
        while len(self._builds) > self.cached_builds:
            self._builds.popitem(last=False)
