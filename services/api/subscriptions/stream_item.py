"""One stream message made ready for subscribers, once for all of them: the event decoded, its
type and scope found, its JSON envelope and SSE frame encoded."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import msgspec
from nats.aio.msg import Msg

from envstore.api.subscriptions.envelope import envelope_json
from envstore.api.subscriptions.event_filter import event_type_name
from envstore.api.subscriptions.event_scope import EventScope, EventScopes
from envstore.common.bus import EventBus
from envstore.common.events import Event, UnknownEvent

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
            event = self.bus.codec.decode(message.subject, message.data)
        except UnknownEvent:
            return None
        except msgspec.DecodeError:
            log.warning("event #%s on %s cannot be decoded; not sent", sequence, message.subject)
            return None
        event_type = event_type_name(type(event))
        scope = await self.scopes.scope_of(event, sequence)
        envelope = envelope_json(sequence, event_type, message.subject, event.occurred_at, scope, message.data)
        return StreamItem(sequence, message.subject, event, event_type, scope, envelope)
