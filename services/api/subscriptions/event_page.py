"""A bounded page of past events, for clients that poll instead of keeping a stream open: the
events after a sequence, up to the stream's end when asked, at most ``size`` of them and at most
``scan_limit`` messages read. ``last_event_id`` is where the next page starts (past events the
caller does not get too, so a sparse filter still moves forward)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from envstore.api.subscriptions.selection import EventSelection
from envstore.api.subscriptions.stream_item import StreamItems
from envstore.common.events import STREAM_SUBJECTS

MESSAGE_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class EventPage:
    envelopes: list[bytes]
    last_event_id: int

    def json(self) -> bytes:
        return (
            b'{"status":"ok","message":null,"last_event_id":%d,"data":[' % self.last_event_id
            + b",".join(self.envelopes)
            + b"]}"
        )


async def event_page(
    items: StreamItems, selection: EventSelection, start_sequence: int, size: int, scan_limit: int
) -> EventPage:
    end = await items.bus.last_sequence()
    if start_sequence > end:
        return EventPage([], start_sequence - 1)
    # Every subject: the sequences from start to end then arrive without gaps (events are never
    # deleted), so the page knows when it has reached the end.
    subscription = await items.bus.replay(start_sequence, STREAM_SUBJECTS)
    envelopes: list[bytes] = []
    scanned_to = start_sequence - 1
    try:
        for _ in range(scan_limit):
            if len(envelopes) >= size or scanned_to >= end:
                break
            message = await subscription.next_msg(timeout=MESSAGE_WAIT_SECONDS)
            scanned_to = message.metadata.sequence.stream
            item = await items.item_for(message)
            if item is not None and selection.accepts(item):
                envelopes.append(item.envelope)
    finally:
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()
    return EventPage(envelopes, scanned_to)
