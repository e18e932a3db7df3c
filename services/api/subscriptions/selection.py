"""One subscriber's view of the stream: which messages it gets (its filter, and what it may read),
each as its JSON envelope."""

from __future__ import annotations

import logging

import msgspec
from nats.aio.msg import Msg

from envstore.api.subscriptions.envelope import envelope_json
from envstore.api.subscriptions.event_filter import EventFilter, event_type_name
from envstore.api.subscriptions.event_scope import EventScopes
from envstore.api.subscriptions.readable_events import ReadableEvents
from envstore.common.bus import EventBus
from envstore.common.events import UnknownEvent

log = logging.getLogger(__name__)


class EventSelection:
    def __init__(self, bus: EventBus, readable: ReadableEvents, event_filter: EventFilter) -> None:
        self.bus = bus
        self.scopes = EventScopes(bus)
        self.readable = readable
        self.event_filter = event_filter

    async def envelope_for(self, message: Msg) -> bytes | None:
        """The envelope of one stream message, or None if this subscriber does not get it."""
        sequence = message.metadata.sequence.stream
        try:
            event = self.bus.codec.decode(message.subject, message.data)
        except UnknownEvent:
            return None
        except msgspec.DecodeError:
            log.warning("event #%s on %s cannot be decoded; not sent", sequence, message.subject)
            return None
        event_type = event_type_name(type(event))
        if not self.event_filter.accepts_type(event_type):
            return None
        scope = await self.scopes.scope_of(event, sequence)
        if not self.event_filter.accepts(event_type, scope) or not self.readable.may_read(event, scope):
            return None
        return envelope_json(sequence, event_type, message.subject, event.occurred_at, scope, message.data)
