"""Tags and the registry's own index: ``latest`` follows the current build (rollbacks included),
deleted builds lose their tags, tags are listed in pages, the spec's errors answer mistakes, and the
index comes back after a restart from the event stream alone (the API is down meanwhile)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from envstore.common.events import BuildDeleted, EnvironmentCurrentBuildSet
from envstore.launcher.stack import EmbeddedStack
from tests.api_client import ApiClient
from tests.registry.conftest import auth, built_image, manifest_digest, wait_for_digest


@pytest.fixture(scope="module")
async def two_builds(registry_stack: EmbeddedStack) -> tuple[dict, dict]:
    """Two builds of team/versions: tinyjson 1.0, then tinyjson 1.1 (current)."""
    async with ApiClient(registry_stack.api_url, token=registry_stack.admin_token) as api:
        first = await built_image(api, "team", "versions", ["hello 2.1.*", "tinyjson 1.0.*"])
        second = await built_image(api, "team", "versions", ["hello 2.1.*", "tinyjson 1.1.*"])
    return first, second


def key_of(build: dict) -> str:
    return next(a["key"] for a in build["build_artifacts"] if a["artifact_type"] == "DOCKER_MANIFEST").rsplit("/", 1)[1]


async def publish(stack: EmbeddedStack, event, message_id: str) -> None:  # type: ignore[no-untyped-def]
    """As the service that publishes this type does (with its credentials)."""
    bus = await stack.connect_bus(type(event).PUBLISHED_BY[0])
    try:
        await bus.publish(event, message_id=message_id)
    finally:
        await bus.close()


async def errors_of(http: aiohttp.ClientSession, method: str, path: str, token: str) -> tuple[int, str]:
    async with http.request(method, path, headers=auth(token)) as response:
        body = await response.json()
        return response.status, body["errors"][0]["code"]


async def test_tags_listed_in_lexical_pages(
    two_builds: tuple[dict, dict], registry_stack: EmbeddedStack, http: aiohttp.ClientSession
) -> None:
    first, second = two_builds
    token = registry_stack.admin_token
    expected = sorted([str(first["id"]), str(second["id"]), key_of(first), key_of(second), "latest"])
    async with http.get("/v2/team/versions/tags/list", headers=auth(token)) as response:
        assert await response.json() == {"name": "team/versions", "tags": expected}
    collected, path = [], "/v2/team/versions/tags/list?n=2"
    while path:
        async with http.get(path, headers=auth(token)) as response:
            page = (await response.json())["tags"]
            assert len(page) <= 2
            collected += page
            link = response.headers.get("Link")
        path = link.split(">")[0].lstrip("<") if link else ""
    assert collected == expected
    async with http.get(f"/v2/team/versions/tags/list?last={expected[2]}", headers=auth(token)) as response:
        assert (await response.json())["tags"] == expected[3:]
    async with http.get("/v2/team/versions/tags/list?n=zero", headers=auth(token)) as response:
        assert response.status == 400


async def test_latest_follows_a_rollback(
    two_builds: tuple[dict, dict], registry_stack: EmbeddedStack, http: aiohttp.ClientSession
) -> None:
    """The rollback is published on the bus as the API publishes it for ``PUT
    /api/v1/environment/team/versions/ {"build_id"}`` (the API route is another engineer's work)."""
    first, second = two_builds
    token = registry_stack.admin_token
    first_digest = await manifest_digest(http, "team/versions", key_of(first), token)
    second_digest = await manifest_digest(http, "team/versions", key_of(second), token)
    assert first_digest and second_digest and first_digest != second_digest
    assert await manifest_digest(http, "team/versions", "latest", token) == second_digest

    await publish(
        registry_stack,
        EnvironmentCurrentBuildSet(namespace="team", environment="versions", build_id=first["id"]),
        f"test-rollback:{first['id']}",
    )
    await wait_for_digest(http, "team/versions", "latest", token, first_digest)
    await publish(
        registry_stack,
        EnvironmentCurrentBuildSet(namespace="team", environment="versions", build_id=second["id"]),
        f"test-roll-forward:{second['id']}",
    )
    await wait_for_digest(http, "team/versions", "latest", token, second_digest)


async def test_deleted_build_loses_its_tags(
    registry_stack: EmbeddedStack, registry_api: ApiClient, http: aiohttp.ClientSession
) -> None:
    """``build.deleted`` is published on the bus as the packager's cleanup publishes it after
    ``DELETE /api/v1/build/{id}/`` (that route and worker are another engineer's work)."""
    token = registry_stack.admin_token
    build = await built_image(registry_api, "team", "short-lived", ["tinyjson"])
    key = key_of(build)
    assert await manifest_digest(http, "team/short-lived", key, token) is not None

    await publish(registry_stack, BuildDeleted(build_id=build["id"], kept=["LOGS", "LOCKFILE", "YAML"]), f"test-deleted:{build['id']}")
    await wait_for_digest(http, "team/short-lived", key, token, None)
    for tag in (key, str(build["id"]), "latest"):
        async with http.get(f"/v2/team/short-lived/manifests/{tag}", headers=auth(token)) as response:
            assert response.status == 404
            assert (await response.json())["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    async with http.get("/v2/team/short-lived/tags/list", headers=auth(token)) as response:
        assert (await response.json())["tags"] == []


async def test_spec_errors_for_mistakes_and_pushes(
    two_builds: tuple[dict, dict], registry_stack: EmbeddedStack, http: aiohttp.ClientSession
) -> None:
    token = registry_stack.admin_token
    missing = "sha256:" + "0" * 64
    assert await errors_of(http, "GET", "/v2/team/nothing-here/manifests/latest", token) == (404, "NAME_UNKNOWN")
    assert await errors_of(http, "GET", "/v2/team/versions/manifests/no-such-tag", token) == (404, "MANIFEST_UNKNOWN")
    assert await errors_of(http, "GET", f"/v2/team/versions/manifests/{missing}", token) == (404, "MANIFEST_UNKNOWN")
    assert await errors_of(http, "GET", "/v2/team/versions/manifests/sha256:nothex", token) == (400, "DIGEST_INVALID")
    assert await errors_of(http, "GET", f"/v2/team/versions/blobs/{missing}", token) == (404, "BLOB_UNKNOWN")
    assert await errors_of(http, "GET", "/v2/team/versions/extra/manifests/latest", token) == (404, "NAME_UNKNOWN")
    assert await errors_of(http, "GET", "/v2/team/bad%20name/manifests/latest", token) == (400, "NAME_INVALID")
    # Pushes are refused with the spec's UNSUPPORTED, whatever the credentials.
    for method, path in (
        ("POST", "/v2/team/versions/blobs/uploads/"),
        ("PUT", "/v2/team/versions/manifests/latest"),
        ("DELETE", "/v2/team/versions/manifests/latest"),
        ("PATCH", "/v2/team/versions/blobs/uploads/some-upload"),
    ):
        assert await errors_of(http, method, path, token) == (405, "UNSUPPORTED")


async def test_index_rebuilt_from_the_stream_after_a_restart_without_the_api(
    two_builds: tuple[dict, dict], registry_stack: EmbeddedStack, http: aiohttp.ClientSession
) -> None:
    token = registry_stack.admin_token
    before = {tag: await manifest_digest(http, "team/versions", tag, token) for tag in ("latest", key_of(two_builds[0]))}
    await registry_stack.stop_service("api")
    await registry_stack.stop_service("registry")
    try:
        await registry_stack.start_service("registry")
        deadline = time.monotonic() + 60
        while True:
            try:
                async with http.get("/v2/") as response:
                    if response.status == 401:
                        break
            except aiohttp.ClientError:
                pass
            assert time.monotonic() < deadline, "the registry did not come back within 60 s"
            await asyncio.sleep(0.1)
        after = {tag: await manifest_digest(http, "team/versions", tag, token) for tag in before}
        assert after == before and None not in after.values()
    finally:
        await registry_stack.start_service("api")
        await registry_stack.wait_until_ready()
