"""The audit trail: three principals act on one namespace (an admin token and two users' tokens),
then ``GET /api/v1/audit/`` lists exactly their commands, in order, each with the principal the
API authenticated (never one the request claims); its filters and cursors work; only admins read
it; the live stream carries the same principal."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import pytest

from envstore.launcher.stack import EmbeddedStack
from tests.api.conftest import fresh, mint
from tests.api_client import ApiClient, environment_yaml
from tests.events.sse_client import live_events

ADMIN = "service-account:admin-token"


@dataclass(frozen=True)
class Story:
    namespace: str
    alice: str  # the principals as the trail names them
    bob: str
    alice_token: str
    expected: list[tuple[str, str]]  # (type, principal), in order
    first_build: int
    second_build: int


@pytest.fixture(scope="module")
async def story(stack: EmbeddedStack) -> Story:
    namespace = fresh("audited")
    alice, bob = fresh("alice"), fresh("bob")
    # Two users who may administer the namespace (their tokens' subjects are their names).
    owner = {f"{namespace}/*": ["admin"]}
    alice_token = await mint(stack, owner, primary_namespace=alice)
    bob_token = await mint(stack, owner, primary_namespace=bob)
    async with (
        ApiClient(stack.api_url, token=stack.admin_token) as admin,
        ApiClient(stack.api_url, token=alice_token) as as_alice,
        ApiClient(stack.api_url, token=bob_token) as as_bob,
    ):
        status, body = await admin.request("POST", f"/api/v1/namespace/{namespace}/")
        assert status == 200, body
        # A request that claims a principal: the trail must show who sent it.
        first = await as_alice.submit(environment_yaml("tools", ["hello"]), namespace=namespace, principal="user:mallory")
        assert (await as_alice.wait_for_build(first))["status"] == "COMPLETED"
        second = await as_bob.submit(environment_yaml("tools", ["hello", "tinyjson"]), namespace=namespace)
        assert (await as_bob.wait_for_build(second))["status"] == "COMPLETED"
        status, body = await as_alice.request("PUT", f"/api/v1/environment/{namespace}/tools/", json={"build_id": first})
        assert status == 200, body
        status, body = await as_bob.request(
            "PUT", f"/api/v1/environment/{namespace}/tools/", json={"description": "audited tools"}
        )
        assert status == 200, body
        status, body = await admin.request(
            "PUT", f"/api/v1/setting/{namespace}/", json={"conda_included_packages": ["tinyjson"]}
        )
        assert status == 200, body
        status, body = await as_bob.request("DELETE", f"/api/v1/build/{second}/")
        assert status == 200, body
    expected = [
        ("namespace.created", ADMIN),
        ("build.submitted", f"user:{alice}"),
        ("build.submitted", f"user:{bob}"),
        ("environment.current_build_set", f"user:{alice}"),
        ("environment.updated", f"user:{bob}"),
        ("settings.changed", ADMIN),
        ("build.delete_requested", f"user:{bob}"),
    ]
    return Story(namespace, f"user:{alice}", f"user:{bob}", alice_token, expected, first, second)


async def trail(client: ApiClient, **query: str | int) -> dict:
    status, body = await client.get("/api/v1/audit/", params={key: str(value) for key, value in query.items()})
    assert status == 200, body
    return body


async def test_the_trail_lists_exactly_the_principals_commands_in_order(api: ApiClient, story: Story) -> None:
    body = await trail(api, namespace=story.namespace)
    assert [(entry["type"], entry["principal"]) for entry in body["data"]] == story.expected
    assert body["count"] == len(story.expected)
    ids = [entry["id"] for entry in body["data"]]
    assert ids == sorted(ids), "in the order of the log"
    rollback = body["data"][3]
    assert (rollback["environment"], rollback["build_id"]) == ("tools", story.first_build)
    submission = body["data"][1]
    assert "specification" not in submission["details"] and submission["details"]["build_id"] == story.first_build
    assert body["data"][5]["details"]["values"] == {"conda_included_packages": ["tinyjson"]}


async def test_who_rolled_back_an_environment_on_a_day_is_one_request(api: ApiClient, story: Story) -> None:
    everything = (await trail(api, namespace=story.namespace))["data"]
    day = datetime.datetime.fromisoformat(everything[3]["occurred_at"]).date()
    body = await trail(
        api,
        namespace=story.namespace,
        environment="tools",
        type="environment.current_build_set",
        since=day.isoformat(),
        until=(day + datetime.timedelta(days=1)).isoformat(),
    )
    assert [(entry["principal"], entry["build_id"]) for entry in body["data"]] == [(story.alice, story.first_build)]
    # The day before holds nothing.
    earlier = await trail(
        api, namespace=story.namespace, since=(day - datetime.timedelta(days=1)).isoformat(), until=day.isoformat()
    )
    assert earlier["data"] == [] and earlier["count"] == 0


async def test_filters_by_principal_type_and_time(api: ApiClient, story: Story) -> None:
    by_bob = await trail(api, namespace=story.namespace, principal=story.bob)
    assert [entry["type"] for entry in by_bob["data"]] == [t for t, who in story.expected if who == story.bob]
    submissions = await trail(api, namespace=story.namespace, type="build.submitted,namespace.created")
    assert [entry["type"] for entry in submissions["data"]] == ["namespace.created", "build.submitted", "build.submitted"]
    everything = (await trail(api, namespace=story.namespace))["data"]
    # since is included, until is not (Unix seconds work too).
    since = datetime.datetime.fromisoformat(everything[2]["occurred_at"]).replace(tzinfo=datetime.UTC)
    until = datetime.datetime.fromisoformat(everything[4]["occurred_at"]).replace(tzinfo=datetime.UTC)
    window = await trail(api, namespace=story.namespace, since=since.isoformat(), until=str(until.timestamp()))
    assert [entry["id"] for entry in window["data"]] == [entry["id"] for entry in everything[2:4]]


async def test_cursor_pagination_walks_the_trail_both_ways(api: ApiClient, story: Story) -> None:
    everything = (await trail(api, namespace=story.namespace))["data"]
    for order, expected in (("asc", everything), ("desc", everything[::-1])):
        walked, cursor = [], None
        for _ in range(10):
            query = {"namespace": story.namespace, "limit": 3, "order": order, **({"cursor": cursor} if cursor else {})}
            page = await trail(api, **query)
            assert page["count"] == len(everything)
            if not page["data"]:
                break
            assert len(page["data"]) <= 3
            walked += page["data"]
            cursor = page["cursor"]
        assert walked == expected, order


async def test_only_admins_read_the_trail_and_bad_filters_say_what_to_fix(
    stack: EmbeddedStack, api: ApiClient, story: Story
) -> None:
    async with ApiClient(stack.api_url, token=story.alice_token) as namespace_admin, ApiClient(stack.api_url) as anonymous:
        for client in (namespace_admin, anonymous):
            status, body = await client.get("/api/v1/audit/", params={"namespace": story.namespace})
            assert status == 403, body
            assert "admin" in body["message"]
    for query, fix in (
        ({"type": "build.solved"}, "holds no events of type"),
        ({"since": "last tuesday"}, "ISO 8601"),
        ({"since": "2025-06-11", "until": "2025-06-10"}, "since must be before until"),
        ({"order": "sideways"}, "order must be"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ):
        status, body = await api.get("/api/v1/audit/", params=query)
        assert status == 400, (query, body)
        assert fix in body["message"], (query, body)


async def test_the_live_stream_names_each_events_principal(stack: EmbeddedStack, story: Story) -> None:
    async with ApiClient(stack.api_url, token=stack.admin_token) as admin:
        everything = (await trail(admin, namespace=story.namespace))["data"]
    async with live_events(
        stack.api_url, stack.admin_token, resume_after=everything[0]["id"] - 1, namespace=story.namespace
    ) as stream:
        events = await stream.read_until(lambda event: event.id == everything[-1]["id"])
    principals = {event.id: event.data["principal"] for event in events}
    assert {entry["id"]: principals[entry["id"]] for entry in everything} == {
        entry["id"]: entry["principal"] for entry in everything
    }
    # The pipeline's events are the workers'.
    assert {principals[event.id] for event in events if event.type == "build.solved"} == {"service:solver"}
    assert {principals[event.id] for event in events if event.type == "build.completed"} == {"service:packager"}
