"""Webhooks against a real receiver (an aiohttp server on 127.0.0.1) while real builds run:
every event of a build arrives signed, failures are retried and logged, a killed delivering
process loses nothing, and targets are checked."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from envstore.api.webhooks.signature import signature_is_valid
from envstore.common.events import BuildRef, BuildSubmitted, Event, WebhookRegistered, build_id_of
from envstore.launcher.stack import EmbeddedStack
from tests.api_client import ApiClient, environment_yaml
from tests.events.webhook_receiver import WebhookReceiver
from tests.stream_reader import stream_events

DELIVERING_PROCESS = "api.webhooks"


async def register(admin: ApiClient, **fields: Any) -> dict[str, Any]:
    status, body = await admin.request("POST", "/api/v1/webhook/", json=fields)
    assert status == 200, body
    return body["data"]


async def namespace_events(stack: EmbeddedStack, namespace: str, webhook_id: int) -> dict[int, str]:
    """The stream's events after the webhook's registration that concern ``namespace``: id → type."""
    after = next(
        sequence for sequence, event in await stream_events(stack)
        if isinstance(event, WebhookRegistered) and event.webhook_id == webhook_id
    )
    build_namespaces: dict[int, str] = {}
    selected: dict[int, str] = {}
    for sequence, event in await stream_events(stack):
        if isinstance(event, BuildSubmitted):
            build_namespaces[event.build_id] = event.namespace
        if sequence > after and _namespace_of(event, sequence, build_namespaces) == namespace:
            selected[sequence] = event.__struct_config__.tag
    return selected


def _namespace_of(event: Event, sequence: int, build_namespaces: dict[int, str]) -> str | None:
    if isinstance(getattr(event, "build", None), BuildRef):
        return event.build.namespace  # type: ignore[attr-defined]
    if getattr(event, "namespace", None):
        return event.namespace  # type: ignore[attr-defined]
    build_id = build_id_of(event)
    return build_namespaces.get(build_id) if build_id is not None else None


async def attempts_of(admin: ApiClient, webhook_id: int, event_id: int, count: int, timeout_seconds: float = 30):  # type: ignore[no-untyped-def]
    """The delivery log of one event, once it holds ``count`` attempts (bounded wait)."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        status, body = await admin.get(f"/api/v1/webhook/{webhook_id}/delivery/", params={"event_id": event_id})
        assert status == 200, body
        if len(body["data"]) >= count or time.monotonic() > deadline:
            return body["data"]
        await asyncio.sleep(0.05)


async def test_a_receiver_gets_every_event_of_a_build_with_valid_signatures(
    subscription_stack: EmbeddedStack, admin: ApiClient
) -> None:
    async with WebhookReceiver() as receiver:
        webhook = await register(admin, url=receiver.url, namespace="hooked", description="all of hooked")
        secret = webhook["secret"]
        build_id = await admin.submit(environment_yaml("signed", ["hello", "tinyjson"]), namespace="hooked")
        assert (await admin.wait_for_build(build_id))["status"] == "COMPLETED"
        expected = await namespace_events(subscription_stack, "hooked", webhook["id"])
        await receiver.wait_until(lambda: set(expected) <= receiver.delivered_ids())

    delivered = {post.event_id: post for post in receiver.posts}
    assert set(delivered) == set(expected), "an event of another namespace was delivered"
    for event_id, post in delivered.items():
        assert post.signed_with(secret), f"event {event_id}: signature does not verify"
        assert not signature_is_valid("another secret of 16+", post.timestamp, post.signature, post.body, time.time())
        assert post.document["id"] == event_id
        assert post.document["type"] == expected[event_id]
        assert post.document["namespace"] == "hooked"
    build_events = [
        post.document["type"] for _, post in sorted(delivered.items()) if post.document["build_id"] == build_id
    ]
    assert build_events[0] == "build.submitted" and "build.completed" in build_events


async def test_three_failures_then_success_all_four_attempts_are_in_the_log(
    subscription_stack: EmbeddedStack, admin: ApiClient
) -> None:
    async with WebhookReceiver(failures_per_event=3) as receiver:
        webhook = await register(admin, url=receiver.url, namespace="flaky", event_types=["build.completed"])
        build_id = await admin.submit(environment_yaml("retried", ["hello"]), namespace="flaky")
        assert (await admin.wait_for_build(build_id))["status"] == "COMPLETED"
        expected = await namespace_events(subscription_stack, "flaky", webhook["id"])
        completed = next(event_id for event_id, kind in expected.items() if kind == "build.completed")
        await receiver.wait_until(lambda: completed in receiver.delivered_ids())

    posts = [post for post in receiver.posts if post.event_id == completed]
    assert [(post.attempt, post.answered) for post in posts] == [(1, 500), (2, 500), (3, 500), (4, 200)]
    assert {post.event_id for post in receiver.posts} == {completed}, "only build.completed was asked for"

    log = await attempts_of(admin, webhook["id"], completed, count=4)
    assert [entry["attempt"] for entry in log] == [1, 2, 3, 4]
    assert [entry["status_code"] for entry in log] == [500, 500, 500, 200]
    assert [entry["succeeded"] for entry in log] == [False, False, False, True]
    assert [entry["final"] for entry in log] == [False, False, False, True]
    assert all(entry["retry_in_seconds"] > 0 for entry in log[:3]) and log[3]["retry_in_seconds"] is None
    assert "receiver says no" in log[0]["error"]
    status, body = await admin.get(f"/api/v1/webhook/{webhook['id']}/")
    assert status == 200, body
    assert body["data"]["last_status_code"] == 200 and body["data"]["last_succeeded"] is True
    assert body["data"]["last_event_id"] == completed and body["data"]["delivered_count"] == 1


async def test_killing_the_delivering_process_mid_stream_loses_no_delivery(
    subscription_stack: EmbeddedStack, admin: ApiClient
) -> None:
    async with WebhookReceiver(hold_first_request=True) as receiver:
        webhook = await register(admin, url=receiver.url, namespace="crashing")
        first = await admin.submit(environment_yaml("first", ["hello", "tinyjson"]), namespace="crashing")
        await asyncio.wait_for(receiver.first_request_held.wait(), 30)
        # SIGKILL while a POST is in flight and the build's other events are still coming.
        await subscription_stack.kill_service(DELIVERING_PROCESS)
        second = await admin.submit(environment_yaml("second", ["hello"]), namespace="crashing")
        for build_id in (first, second):
            assert (await admin.wait_for_build(build_id))["status"] == "COMPLETED"
        await subscription_stack.start_service(DELIVERING_PROCESS)

        expected = await namespace_events(subscription_stack, "crashing", webhook["id"])
        await receiver.wait_until(lambda: set(expected) <= receiver.delivered_ids())

    assert receiver.delivered_ids() == set(expected)
    assert {post.document["build_id"] for post in receiver.posts} >= {first, second}
    # The POST in flight at the kill was made again by the restarted process.
    assert any(post.event_id == receiver.held_event_id and post.attempt >= 2 for post in receiver.posts)


async def test_webhooks_are_listed_without_secrets_changed_and_deleted(
    subscription_stack: EmbeddedStack, admin: ApiClient
) -> None:
    async with WebhookReceiver() as receiver:
        chosen = "a-secret-the-caller-chose"
        webhook = await register(admin, url=receiver.url, namespace="managed", secret=chosen)
        assert "secret" not in webhook

        status, listed = await admin.get("/api/v1/webhook/")
        assert status == 200, listed
        mine = [entry for entry in listed["data"] if entry["id"] == webhook["id"]]
        assert mine and all("secret" not in entry for entry in listed["data"])
        assert chosen not in str(listed)

        status, changed = await admin.request(
            "PUT", f"/api/v1/webhook/{webhook['id']}/", json={"event_types": ["build.completed"], "rotate_secret": True}
        )
        assert status == 200, changed
        assert changed["data"]["event_types"] == ["build.completed"] and len(changed["data"]["secret"]) >= 16
        status, read = await admin.get(f"/api/v1/webhook/{webhook['id']}/")
        assert status == 200 and "secret" not in read["data"] and read["data"]["namespace"] == "managed"

        build_id = await admin.submit(environment_yaml("rotated", ["hello"]), namespace="managed")
        assert (await admin.wait_for_build(build_id))["status"] == "COMPLETED"
        await receiver.wait_until(lambda: len(receiver.delivered_ids()) == 1)
        assert receiver.posts[0].signed_with(changed["data"]["secret"])
        assert not receiver.posts[0].signed_with(chosen)

        status, deleted = await admin.request("DELETE", f"/api/v1/webhook/{webhook['id']}/")
        assert status == 200, deleted
        status, gone = await admin.get(f"/api/v1/webhook/{webhook['id']}/")
        assert status == 404, gone


async def test_targets_are_checked(subscription_stack: EmbeddedStack, admin: ApiClient) -> None:
    refused = {
        "ftp://127.0.0.1/hook": "http:// or https://",
        "http://10.0.0.7/hook": "ENVSTORE_WEBHOOK_ALLOWED_HOSTS",
        "http://169.254.169.254/latest/meta-data/": "ENVSTORE_WEBHOOK_ALLOWED_HOSTS",
        "http://[::1]:9000/hook": "ENVSTORE_WEBHOOK_ALLOWED_HOSTS",
        f"{subscription_stack.api_url}/api/v1/": "envstore's own API",
        "http://user:password@127.0.0.1/hook": "credentials",
    }
    for url, reason in refused.items():
        status, body = await admin.request("POST", "/api/v1/webhook/", json={"url": url})
        assert status == 400 and reason in body["message"], (url, body)
    status, body = await admin.request(
        "POST", "/api/v1/webhook/", json={"url": "http://127.0.0.1:9/", "event_types": ["nope"]}
    )
    assert status == 400 and "unknown event type" in body["message"], body


async def test_managing_webhooks_needs_the_admin_role_on_their_namespace(
    subscription_stack: EmbeddedStack, admin: ApiClient
) -> None:
    status, body = await admin.request(
        "POST",
        "/api/v1/token/",
        json={"primary_namespace": "hooks-viewer", "role_bindings": {"watched/*": ["viewer"], "owned/*": ["admin"]}},
    )
    assert status == 200, body
    async with ApiClient(subscription_stack.api_url, token=body["data"]["token"]) as user:
        status, refused = await user.request(
            "POST", "/api/v1/webhook/", json={"url": "http://127.0.0.1:9/", "namespace": "watched"}
        )
        assert status == 403, refused
        status, refused = await user.request("POST", "/api/v1/webhook/", json={"url": "http://127.0.0.1:9/"})
        assert status == 403, refused
        status, created = await user.request(
            "POST", "/api/v1/webhook/", json={"url": "http://127.0.0.1:9/", "namespace": "owned"}
        )
        assert status == 200, created
        status, listed = await user.get("/api/v1/webhook/")
        assert [entry["id"] for entry in listed["data"]] == [created["data"]["id"]]
        status, _ = await user.request("DELETE", f"/api/v1/webhook/{created['data']['id']}/")
        assert status == 200
