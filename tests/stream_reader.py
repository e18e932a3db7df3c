"""Reading the event stream in tests, as an integration would: every event, in order, with the
credentials of a reader (the operator's projection rebuild, which may read but not publish)."""

from __future__ import annotations

from nats.js.api import ConsumerConfig, DeliverPolicy

from envstore.common.bus_permissions import PROJECTION_REBUILD
from envstore.common.events import BuildSubmitted, Event, EventCodec, UndecodableEvent, build_id_of
from envstore.launcher.stack import EmbeddedStack


async def stream_events(stack: EmbeddedStack) -> list[tuple[int, Event]]:
    """All events currently in the stack's stream, with their sequences."""
    stream = stack.nats_stream
    connection = await stack.connect_nats(PROJECTION_REBUILD)
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


async def events_of_build(stack: EmbeddedStack, build_id: int) -> list[Event]:
    return [event for _, event in await stream_events(stack) if build_id_of(event) == build_id]


async def submission_of(stack: EmbeddedStack, build_id: int) -> BuildSubmitted:
    """A build's ``build.submitted`` event, found by its id."""
    return next(
        event for _, event in await stream_events(stack)
        if isinstance(event, BuildSubmitted) and event.build_id == build_id
    )
