"""One subscriber's choice of events: its filter, and what it may read."""

from __future__ import annotations

from dataclasses import dataclass

from envstore.api.subscriptions.event_filter import EventFilter
from envstore.api.subscriptions.readable_events import ReadableEvents
from envstore.api.subscriptions.stream_item import StreamItem


@dataclass(frozen=True)
class EventSelection:
    readable: ReadableEvents
    event_filter: EventFilter

    def accepts(self, item: StreamItem) -> bool:
        return self.event_filter.accepts(item.event_type, item.scope) and self.readable.may_read(item.event, item.scope)
