"""Which events a subscriber wants: by namespace, environment, build and event type. Every filter
given must match; none given selects every event the subscriber may read."""

from __future__ import annotations

from dataclasses import dataclass

from envstore.api.subscriptions.event_scope import EventScope
from envstore.common.events import EVENT_TYPES, STREAM_SUBJECTS, WEBHOOK_EVENTS, Event, ProjectionEventSkipped, subject_patterns


def event_type_name(event_type: type[Event]) -> str:
    """The ``type`` tag of an event class (``build.progress``)."""
    return event_type.tag()


# Webhook events are bookkeeping of deliveries, and operators' decisions about the read model are
# not users' business: they are neither streamed nor delivered.
SUBSCRIBABLE_EVENT_TYPES: dict[str, type[Event]] = {
    event_type_name(event_type): event_type
    for event_type in EVENT_TYPES
    if event_type not in WEBHOOK_EVENTS and event_type is not ProjectionEventSkipped
}
# Today's subjects and release 0.1.0's (a resumed stream may start in an old log).
SUBSCRIBABLE_SUBJECTS: tuple[str, ...] = tuple(
    subject
    for event_type in SUBSCRIBABLE_EVENT_TYPES.values()
    for subject in (*subject_patterns(event_type), event_type.legacy_subject())
)


class FilterError(ValueError):
    """A filter a subscriber asked for that cannot work; the message says what to send instead."""


@dataclass(frozen=True)
class EventFilter:
    namespace: str | None = None
    environment: str | None = None
    build_id: int | None = None
    event_types: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        namespace: str | None = None,
        environment: str | None = None,
        build_id: int | None = None,
        event_types: list[str] | tuple[str, ...] = (),
    ) -> EventFilter:
        unknown = sorted(set(event_types) - set(SUBSCRIBABLE_EVENT_TYPES))
        if unknown:
            raise FilterError(
                f"unknown event type(s) {', '.join(unknown)}; known: {', '.join(sorted(SUBSCRIBABLE_EVENT_TYPES))}"
            )
        if build_id is not None and build_id < 1:
            raise FilterError("build_id must be a whole number >= 1")
        return cls(namespace or None, environment or None, build_id, frozenset(event_types))

    @property
    def needs_scope(self) -> bool:
        """True when matching needs the event's namespace, environment or build."""
        return self.namespace is not None or self.environment is not None or self.build_id is not None

    def accepts_type(self, event_type: str) -> bool:
        return event_type in SUBSCRIBABLE_EVENT_TYPES and (not self.event_types or event_type in self.event_types)

    def accepts(self, event_type: str, scope: EventScope) -> bool:
        if not self.accepts_type(event_type):
            return False
        if self.namespace is not None and scope.namespace != self.namespace:
            return False
        if self.environment is not None and scope.environment != self.environment:
            return False
        return self.build_id is None or scope.build_id == self.build_id

    def stream_subject(self) -> str:
        """The narrowest single subject to read from the stream for this filter."""
        if len(self.event_types) == 1:
            patterns = subject_patterns(SUBSCRIBABLE_EVENT_TYPES[next(iter(self.event_types))])
            if len(patterns) == 1:
                return patterns[0]
        return STREAM_SUBJECTS
