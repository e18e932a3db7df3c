"""One stream message made ready for subscribers, once for all of them: the event decoded, its
type and scope found, its JSON envelope and SSE frame encoded."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from nats.aio.msg import Msg

from envstore.api.subscriptions.envelope import envelope_json
from envstore.api.subscriptions.event_filter import event_type_name
from envstore.api.subscriptions.event_scope import EventScope, EventScopes
from envstore.common.transport import EventBus
from envstore.common.events import Event, UndecodableEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamItem:
    sequence: int
    subject: str
    event: Event
    event_type: str
    scope: EventScope
    envelope: bytes

    @functools.cached_property
    def frame(self) -> bytes:
        """The Server-Sent Events frame: ``id:`` is the stream sequence."""
        return b"id: %d\ndata: %s\n\n" % (self.sequence, self.envelope)


class StreamItems:
    """Makes stream items; holds the (bounded) cache of builds' scopes."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.scopes = EventScopes(bus)

    async def item_for(self, message: Msg) -> StreamItem | None:
        """None for a message no subscriber can get (a subject this version does not know)."""
        sequence = message.metadata.sequence.stream
        try:
            event = self.bus.codec.decode(message.subject, message.data, sequence)
        except UndecodableEvent as error:
            log.warning("%s; not sent", error)
            return None
        return await self.item_of(event, message.subject, sequence, message.data)

    async def item_of(self, event: Event, subject: str, sequence: int, payload: bytes) -> StreamItem:
        """The item of an event decoded already (by the worker runtime)."""
        event_type = event_type_name(type(event))
        scope = await self.scopes.scope_of(event, sequence)
        # Release 0.1.0's events are sent as they read today (upcast: their ids filled in).
        if subject != event.subject:
            payload = self.bus.codec.encode(event)
        envelope = envelope_json(sequence, event_type, subject, event.occurred_at, event.principal, scope, payload)
        return StreamItem(sequence, subject, event, event_type, scope, envelope)
