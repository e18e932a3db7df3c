"""Usage: image pulls (registry), artifact downloads and activations (API) are counted, published
as batched ``build.used`` events, and shown per build and per environment with ``last_used_at``."""

from __future__ import annotations

import asyncio
import math
import time

import aiohttp

from envstore.launcher.stack import EmbeddedStack
from tests.api.conftest import fresh, wait_until
from tests.api_client import ApiClient
from tests.lifecycle.conftest import USAGE_FLUSH_SECONDS, completed_build

DOWNLOADS = 30


async def test_pulls_downloads_and_activations_are_counted_in_batches(
    lifecycle_stack: EmbeddedStack, admin: ApiClient
) -> None:
    namespace = fresh("usage")
    build = await completed_build(admin, namespace, "tools", ["tinyjson"])
    build_id = build["id"]
    status, body = await admin.get(f"/api/v1/build/{build_id}/usage/")
    assert status == 200 and body["data"] == {
        "build_id": build_id, "pulls": 0, "downloads": 0, "activations": 0, "first_used_at": None, "last_used_at": None,
    }

    async def download(path: str) -> None:
        async with admin.raw("GET", path, allow_redirects=False) as response:
            assert response.status == 307

    started = time.monotonic()
    await asyncio.gather(*(download(f"/api/v1/build/{build_id}/lockfile/") for _ in range(DOWNLOADS)))
    await download(f"/api/v1/environment/{namespace}/tools/lockfile/")
    api_seconds = time.monotonic() - started
    headers = {"Authorization": f"Bearer {lifecycle_stack.admin_token}", "Accept": "application/vnd.oci.image.manifest.v1+json"}
    async with aiohttp.ClientSession(lifecycle_stack.registry_url, headers=headers) as registry:
        async with registry.head(f"/v2/{namespace}/tools/manifests/latest") as response:
            assert response.status == 200  # a HEAD is no pull
        async with registry.get(f"/v2/{namespace}/tools/manifests/{build_id}") as response:
            assert response.status == 200

    async def counted() -> dict | None:
        usage = (await admin.get(f"/api/v1/build/{build_id}/usage/"))[1]["data"]
        return usage if (usage["pulls"], usage["downloads"], usage["activations"]) == (1, DOWNLOADS, 1) else None

    usage = await wait_until(counted, "the build's pulls, downloads and activations counted", timeout_seconds=30)
    assert usage["last_used_at"] is not None and usage["first_used_at"] <= usage["last_used_at"]

    status, body = await admin.get(f"/api/v1/environment/{namespace}/tools/usage/")
    assert status == 200, body
    environment = body["data"]
    assert (environment["pulls"], environment["downloads"], environment["activations"]) == (1, DOWNLOADS, 1)
    assert environment["last_used_at"] == usage["last_used_at"]
    assert [entry["build_id"] for entry in environment["builds"]] == [build_id]

    # Batched: one event per build per flush interval and process, however many uses — the API's
    # 31 uses fall in the few intervals they took, the registry's pull in one.
    status, body = await admin.get("/api/v1/events/", params={"build_id": str(build_id), "type": "build.used", "size": "100"})
    assert status == 200, body
    events = body["data"]
    api_intervals = math.ceil(api_seconds / USAGE_FLUSH_SECONDS) + 1
    assert 2 <= len(events) <= api_intervals + 1 and len(events) < DOWNLOADS, [event["event"] for event in events]
    assert sum(event["event"]["downloads"] for event in events) == DOWNLOADS


async def test_usage_of_unknown_builds_and_environments_is_404(admin: ApiClient) -> None:
    assert (await admin.get("/api/v1/build/987654321/usage/"))[0] == 404
    assert (await admin.get(f"/api/v1/environment/{fresh('none')}/missing/usage/"))[0] == 404
