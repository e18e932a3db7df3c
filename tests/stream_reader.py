"""Reading the event stream in tests, as an integration would: every event, in order."""

from __future__ import annotations

import nats
from nats.js.api import ConsumerConfig, DeliverPolicy

from envstore.common.events import BuildSubmitted, Event, EventCodec, UndecodableEvent, build_id_of


async def stream_events(nats_url: str, stream: str = "ENVSTORE") -> list[tuple[int, Event]]:
    """All events currently in the stream, with their sequences (``nats_url``: one server, or a
    cluster's, comma-separated)."""
    connection = await nats.connect(nats_url.split(","))
    codec = EventCodec()
    events: list[tuple[int, Event]] = []
    try:
        jetstream = connection.jetstream()
        last = (await jetstream.stream_info(stream)).state.last_seq
        if last == 0:
            return events
        subscription = await jetstream.subscribe(
            "envstore.>",
            stream=stream,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )
        async for message in subscription.messages:
            sequence = message.metadata.sequence.stream
            try:
                events.append((sequence, codec.decode(message.subject, message.data, sequence)))
            except UndecodableEvent:
                pass
            if sequence >= last:
                break
        await subscription.unsubscribe()
    finally:
        await connection.close()
    return events


async def events_of_build(nats_url: str, build_id: int) -> list[Event]:
    return [event for _, event in await stream_events(nats_url) if build_id_of(event) == build_id]


async def submission_of(nats_url: str, build_id: int) -> BuildSubmitted:
    """A build's ``build.submitted`` event, found by its id."""
    return next(
        event for _, event in await stream_events(nats_url)
        if isinstance(event, BuildSubmitted) and event.build_id == build_id
    )
