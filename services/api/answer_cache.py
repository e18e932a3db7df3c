"""Answers of read routes, kept encoded until the read model changes them.

Reads dominate: a listing or a build's page is asked for far more often than the log moves. So
each answer is kept as the bytes sent, and dropped when the projection applies something that can
change it (``ReadModelChange``, reported by the projector as it commits, or as another replica's
commit is heard of):

- a finished build's answer (COMPLETED, FAILED, CANCELED) only when its rows change;
- a running build's answer when its rows change, every other answer (listings, environments,
  queued builds) when anything they show changes — a running build's progress lines change none;
- what role mappings grant a caller's namespace, when access changes.

An answer computed while the read model moved is not kept (it may be older than the change that
just dropped its key). The projector reports a change before it wakes the requests waiting for it,
so a client told that its command landed never reads an answer from before it. (A replica that has
not yet heard of another replica's commit may answer from before it for that long — the time a
PostgreSQL notification takes — as a replica without this cache would while its query ran.)

Bounded: answers by their bytes (least recently used go first), role mappings by namespaces.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

from envstore.api.read_model_change import ReadModelChange

NAMESPACES_KEPT = 4096


@dataclass(frozen=True)
class CachedAnswer:
    body: bytes  # the JSON answer, encoded
    arn: str = ""  # where the caller must hold the route's permission ("": checked before lookup)


class _Shelf:
    """Answers in least-recently-used order, and their size."""

    def __init__(self) -> None:
        self.answers: OrderedDict[Hashable, CachedAnswer] = OrderedDict()
        self.bytes = 0

    def get(self, key: Hashable) -> CachedAnswer | None:
        answer = self.answers.get(key)
        if answer is not None:
            self.answers.move_to_end(key)
        return answer

    def put(self, key: Hashable, answer: CachedAnswer) -> None:
        self.discard(key)
        self.answers[key] = answer
        self.bytes += len(answer.body)

    def discard(self, key: Hashable) -> None:
        dropped = self.answers.pop(key, None)
        if dropped is not None:
            self.bytes -= len(dropped.body)

    def drop_oldest(self) -> None:
        _, dropped = self.answers.popitem(last=False)
        self.bytes -= len(dropped.body)

    def clear(self) -> None:
        self.answers.clear()
        self.bytes = 0


class AnswerCache:
    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.generation = 0  # moves with every change the projector reports
        self.hits = 0
        self.misses = 0
        self._finished_builds = _Shelf()  # build id → answer
        self._moving = _Shelf()
        self._bindings: OrderedDict[str, dict[str, list[str]]] = OrderedDict()

    # --- answers ------------------------------------------------------------------------------

    def build(self, build_id: int) -> CachedAnswer | None:
        return self._counted(self._finished_builds.get(build_id))

    def answer(self, key: Hashable) -> CachedAnswer | None:
        return self._counted(self._moving.get(key))

    def keep_build(self, build_id: int, answer: CachedAnswer, generation: int) -> None:
        """A finished build's answer, computed at ``generation``."""
        self._keep(self._finished_builds, build_id, answer, generation)

    def keep(self, key: Hashable, answer: CachedAnswer, generation: int) -> None:
        """An answer any change may alter, computed at ``generation``."""
        self._keep(self._moving, key, answer, generation)

    def _counted(self, answer: CachedAnswer | None) -> CachedAnswer | None:
        if answer is None:
            self.misses += 1
        else:
            self.hits += 1
        return answer

    def _keep(self, shelf: _Shelf, key: Hashable, answer: CachedAnswer, generation: int) -> None:
        if generation != self.generation or len(answer.body) > self.budget_bytes // 4:
            return
        shelf.put(key, answer)
        while self._moving.bytes + self._finished_builds.bytes > self.budget_bytes:
            (self._moving if self._moving.answers else self._finished_builds).drop_oldest()

    # --- role mappings --------------------------------------------------------------------------

    def bindings(self, namespace: str) -> dict[str, list[str]] | None:
        """What role mappings grant callers whose primary namespace is ``namespace``."""
        bindings = self._bindings.get(namespace)
        if bindings is not None:
            self._bindings.move_to_end(namespace)
        return bindings

    def keep_bindings(self, namespace: str, bindings: dict[str, list[str]], generation: int) -> None:
        if generation != self.generation or self.budget_bytes == 0:
            return
        self._bindings[namespace] = bindings
        if len(self._bindings) > NAMESPACES_KEPT:
            self._bindings.popitem(last=False)

    # --- the read model moved -----------------------------------------------------------------

    def read_model_changed(self, change: ReadModelChange) -> None:
        if change.nothing:
            return  # e.g. a running build's progress lines: in no answer kept here
        self.generation += 1
        if change.listings or change.everything:
            self._moving.clear()
        else:
            for build_id in change.builds:  # a build's answer kept while it runs
                self._moving.discard(("build", build_id))
        if change.everything:
            self._finished_builds.clear()
        else:
            for build_id in change.builds:
                self._finished_builds.discard(build_id)
        if change.everything or change.access:
            self._bindings.clear()
