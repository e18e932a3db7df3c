"""The live event stream (``GET /api/v1/events/`` as Server-Sent Events), read by a real client
while real builds run: every event of a build in stream order, resumption after a disconnect, and
only what the caller may read."""

from __future__ import annotations

import asyncio
import time


from envstore.common.bus_permissions import PROJECTION_REBUILD
from envstore.common.events import build_id_of
from envstore.launcher.stack import EmbeddedStack
from tests.api_client import ApiClient, environment_yaml
from tests.events.sse_client import ServerSentEvent, live_events
from tests.stream_reader import stream_events

TERMINAL_TYPES = ("build.completed", "build.failed", "build.canceled")


def ends_build(build_id: int):  # type: ignore[no-untyped-def]
    return lambda event: event.build_id == build_id and event.type in TERMINAL_TYPES


async def build_history(stack: EmbeddedStack, build_id: int, through: int) -> list[tuple[int, str]]:
    """(sequence, type) of the build's events in the stream, up to sequence ``through``."""
    return [
        (sequence, event.__struct_config__.tag)
        for sequence, event in await stream_events(stack)
        if build_id_of(event) == build_id and sequence <= through
    ]


def of_build(events: list[ServerSentEvent], build_id: int) -> list[tuple[int, str]]:
    return [(event.id, event.type) for event in events if event.build_id == build_id]


async def test_a_client_sees_every_phase_of_a_build_in_order(
    subscription_stack: EmbeddedStack, admin: ApiClient
) -> None:
    async with live_events(subscription_stack.api_url, subscription_stack.admin_token, namespace="live") as stream:
        build_id = await admin.submit(environment_yaml("phases", ["hello", "tinyjson"]), namespace="live")
        received = await stream.read_until(ends_build(build_id))

    assert received[-1].type == "build.completed", received[-1].data
    assert [event.id for event in received] == sorted({event.id for event in received}), "ids not increasing"
    assert of_build(received, build_id) == await build_history(subscription_stack, build_id, received[-1].id)
    types = [event.type for event in received if event.build_id == build_id]
    assert types[0] == "build.submitted"
    assert {"build.solved", "build.built", "artifact.ready"} <= set(types)
    phases = [
        (event.data["event"]["phase"], event.data["event"]["state"])
        for event in received
        if event.type == "build.progress"
    ]
    started = [phase for phase, state in phases if state == "started"]
    assert "solve" in started, phases
    for phase in started:
        assert phases.index((phase, "started")) < phases.index((phase, "ended")), phases
    assert all(event.data["namespace"] == "live" for event in received)
    assert all(event.data["environment"] == "phases" for event in received if event.build_id == build_id)


async def test_reconnecting_with_last_event_id_misses_nothing_and_repeats_nothing(
    subscription_stack: EmbeddedStack, admin: ApiClient
) -> None:
    url, token = subscription_stack.api_url, subscription_stack.admin_token
    async with live_events(url, token, namespace="resume") as first:
        build_id = await admin.submit(environment_yaml("resumed", ["hello", "tinyjson"]), namespace="resume")
        # Hang up after the build's first event, while it is still being solved and built.
        before = await first.read_until(lambda event: event.build_id == build_id)
    async with live_events(url, token, resume_after=before[-1].id, namespace="resume") as second:
        after = await second.read_until(ends_build(build_id))

    ids = [event.id for event in before + after]
    assert len(ids) == len(set(ids)), f"repeated: {ids}"
    assert of_build(before + after, build_id) == await build_history(subscription_stack, build_id, after[-1].id)
    assert after[-1].type == "build.completed"


async def test_history_is_replayed_from_the_stream(subscription_stack: EmbeddedStack, admin: ApiClient) -> None:
    build_id = await admin.submit(environment_yaml("history", ["hello"]), namespace="replayed")
    build = await admin.wait_for_build(build_id)
    assert build["status"] == "COMPLETED", build["status_info"]

    # last_event_id=0 as a query parameter (EventSource cannot set headers on its first request).
    async with live_events(
        subscription_stack.api_url, subscription_stack.admin_token, build_id=build_id, last_event_id=0
    ) as stream:
        received = await stream.read_until(ends_build(build_id))

    assert of_build(received, build_id) == await build_history(subscription_stack, build_id, received[-1].id)
    assert len(received) == len(of_build(received, build_id)), "an event of another build was sent"


async def test_a_viewer_of_one_namespace_gets_none_of_another_namespaces_events(
    subscription_stack: EmbeddedStack, admin: ApiClient
) -> None:
    status, body = await admin.request(
        "POST",
        "/api/v1/token/",
        json={"primary_namespace": "viewer-a", "role_bindings": {"team-a/*": ["viewer"]}},
    )
    assert status == 200, body
    viewer_token = body["data"]["token"]

    async with live_events(subscription_stack.api_url, viewer_token) as stream:
        other_build = await admin.submit(environment_yaml("secret", ["hello"]), namespace="team-b")
        assert (await admin.wait_for_build(other_build))["status"] == "COMPLETED"
        own_build = await admin.submit(environment_yaml("open", ["hello"]), namespace="team-a")
        received = await stream.read_until(ends_build(own_build))

    other_history = await build_history(subscription_stack, other_build, received[-1].id)
    # The other build's events all came before the viewer's stream reached its last event.
    assert other_history and max(sequence for sequence, _ in other_history) < received[-1].id
    assert {event.data["namespace"] for event in received} == {"team-a"}
    assert of_build(received, other_build) == []
    assert of_build(received, own_build) == await build_history(subscription_stack, own_build, received[-1].id)


async def test_a_filter_on_a_namespace_the_caller_cannot_read_is_refused(
    subscription_stack: EmbeddedStack, admin: ApiClient
) -> None:
    status, body = await admin.request(
        "POST",
        "/api/v1/token/",
        json={"primary_namespace": "viewer-c", "role_bindings": {"team-c/*": ["viewer"]}},
    )
    assert status == 200, body
    async with ApiClient(subscription_stack.api_url, token=body["data"]["token"]) as viewer:
        status, refused = await viewer.get(
            "/api/v1/events/", params={"namespace": "team-b"}, headers={"Accept": "text/event-stream"}
        )
        assert status == 403, refused
        status, invalid = await viewer.get("/api/v1/events/", params={"type": "build.exploded"})
        assert status == 400 and "build.progress" in invalid["message"], invalid


async def test_without_event_stream_accept_a_bounded_json_page_is_answered(
    subscription_stack: EmbeddedStack, admin: ApiClient
) -> None:
    build_id = await admin.submit(environment_yaml("polled", ["hello"]), namespace="polling")
    assert (await admin.wait_for_build(build_id))["status"] == "COMPLETED"

    collected: list[dict] = []
    last_event_id = 0
    for _ in range(1000):
        status, page = await admin.get(
            "/api/v1/events/", params={"build_id": build_id, "last_event_id": last_event_id, "size": 5}
        )
        assert status == 200, page
        collected += page["data"]
        if page["last_event_id"] == last_event_id:
            break
        last_event_id = page["last_event_id"]
    else:
        raise AssertionError("the pages never reached the end of the stream")

    history = await build_history(subscription_stack, build_id, last_event_id)
    assert [(event["id"], event["type"]) for event in collected] == history


async def test_a_client_that_hangs_up_leaves_no_subscription_behind(
    subscription_stack: EmbeddedStack, admin: ApiClient
) -> None:
    build_id = await admin.submit(environment_yaml("left", ["hello"]), namespace="hangups")
    assert (await admin.wait_for_build(build_id))["status"] == "COMPLETED"
    connection = await subscription_stack.connect_nats(PROJECTION_REBUILD)
    jetstream = connection.jetstream()
    try:
        # A live client first, so the API's shared tail of the stream exists before counting.
        async with live_events(subscription_stack.api_url, subscription_stack.admin_token) as stream:
            await stream.next_keepalive()
        baseline = (await jetstream.stream_info("ENVSTORE")).state.consumer_count
        for _ in range(3):
            # Replaying history from the first event: each client has a subscription of its own.
            async with live_events(
                subscription_stack.api_url, subscription_stack.admin_token, resume_after=0, build_id=build_id
            ) as stream:
                await stream.next_event()
        deadline = time.monotonic() + 30
        while (await jetstream.stream_info("ENVSTORE")).state.consumer_count > baseline:
            assert time.monotonic() < deadline, "the hung-up clients' subscriptions are still there"
            await asyncio.sleep(0.1)
    finally:
        await connection.close()
