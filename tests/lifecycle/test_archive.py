"""Archive and rehydrate: an archived build keeps its spec, lock, YAML and logs and frees its prefix,
tarball and image; asking for its tarball answers 202 with Retry-After and a status to follow
until it is made again from the lock; pulling its image waits for the rehydration and gets the same
manifest digest as before. The retention policy archives what the settings let go (never the
current build)."""

from __future__ import annotations

import json

import aiohttp

from envstore.common.storage import LocalStorage
from envstore.launcher.stack import EmbeddedStack
from tests.api.conftest import fresh, wait_until
from tests.api_client import ApiClient
from tests.lifecycle.conftest import completed_build

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def build_key_of(build: dict) -> str:
    logs = next(artifact["key"] for artifact in build["build_artifacts"] if artifact["artifact_type"] == "LOGS")
    return logs.removeprefix("logs/").removesuffix(".log")


async def image_digest(stack: EmbeddedStack, name: str, tag: str) -> tuple[int, str | None]:
    headers = {"Authorization": f"Bearer {stack.admin_token}", "Accept": OCI_MANIFEST}
    async with aiohttp.ClientSession(stack.registry_url, headers=headers) as registry:
        async with registry.get(f"/v2/{name}/manifests/{tag}") as response:
            return response.status, response.headers.get("Docker-Content-Digest")


async def state_of(admin: ApiClient, build_id: int) -> str:
    status, body = await admin.get(f"/api/v1/build/{build_id}/rehydration/")
    assert status == 200, body
    return body["data"]["state"]


async def test_archived_build_rehydrates_from_its_lock_with_the_same_image(
    lifecycle_stack: EmbeddedStack, admin: ApiClient
) -> None:
    namespace = fresh("archive")
    first = await completed_build(admin, namespace, "tools", ["hello 2.1.*", "tinyjson", "textutils"])
    second = await completed_build(admin, namespace, "tools", ["tinyjson"])
    key = build_key_of(first)
    status, digest_before = await image_digest(lifecycle_stack, f"{namespace}/tools", str(first["id"]))
    assert status == 200 and digest_before
    prefix = lifecycle_stack.data_directory / "envs" / namespace / key
    assert prefix.is_dir()

    status, body = await admin.request("POST", f"/api/v1/build/{second['id']}/archive/")
    assert status == 409 and "current build" in body["message"], body
    status, body = await admin.request("POST", f"/api/v1/build/{first['id']}/archive/")
    assert status == 200, body
    assert body["data"]["archived_artifacts"] == ["CONDA_PACK", "DOCKER_MANIFEST"]
    status, body = await admin.request("POST", f"/api/v1/build/{first['id']}/archive/")
    assert status == 409 and "archived already" in body["message"], body

    async def archived() -> bool:
        return await state_of(admin, first["id"]) == "ARCHIVED"

    await wait_until(archived, "the builder freeing the archived build", timeout_seconds=30)
    assert not prefix.exists()
    storage = LocalStorage(lifecycle_stack.data_directory / "storage")
    assert await storage.resolve(f"archive/{key}.tar.gz") is None
    # Spec, lock, YAML and logs stay.
    for route in ("lockfile/", "yaml/", "logs/"):
        async with admin.raw("GET", f"/api/v1/build/{first['id']}/{route}", allow_redirects=False) as response:
            assert response.status == 307, route
    assert (await admin.get(f"/api/v1/build/{first['id']}/sbom/"))[0] == 200
    # Its prefix is gone: it cannot become current again (a rebuild can).
    status, body = await admin.request("PUT", f"/api/v1/environment/{namespace}/tools/", json={"build_id": first["id"]})
    assert status == 409 and "archived" in body["message"], body

    async with admin.raw("GET", f"/api/v1/build/{first['id']}/archive/", allow_redirects=False) as response:
        assert response.status == 202
        assert int(response.headers["Retry-After"]) > 0
        status_url = response.headers["Location"]
        answer = await response.json()
    assert answer["data"]["state"] in ("ARCHIVED", "REHYDRATING") and answer["data"]["status_url"] == status_url
    assert status_url.endswith(f"/api/v1/build/{first['id']}/rehydration/")

    async def rehydrated() -> bool:
        headers = {"Authorization": f"Bearer {lifecycle_stack.admin_token}"}
        async with aiohttp.ClientSession(headers=headers) as client, client.get(status_url) as response:
            return (await response.json())["data"]["state"] == "AVAILABLE"

    await wait_until(rehydrated, "the tarball made again from the lock", timeout_seconds=120)
    async with admin.raw("GET", f"/api/v1/build/{first['id']}/archive/", allow_redirects=False) as response:
        assert response.status == 307
    assert await storage.resolve(f"archive/{key}.tar.gz") is not None
    assert (await image_digest(lifecycle_stack, f"{namespace}/tools", str(first["id"]))) == (200, digest_before)

    # Archived again, the image is pulled straight away: the pull waits for the rehydration.
    status, body = await admin.request("POST", f"/api/v1/build/{first['id']}/archive/")
    assert status == 200, body
    await wait_until(archived, "the second archive freeing the build", timeout_seconds=30)
    assert (await image_digest(lifecycle_stack, f"{namespace}/tools", str(first["id"]))) == (200, digest_before)
    assert await state_of(admin, first["id"]) == "AVAILABLE"


async def test_retention_archives_what_the_settings_let_go(admin: ApiClient) -> None:
    namespace = fresh("retention")
    builds = [await completed_build(admin, namespace, "tools", [package]) for package in ("tinyjson", "textutils", "hello")]
    status, body = await admin.request("POST", "/api/v1/retention/", json={"namespace": namespace, "dry_run": True})
    assert (status, body["data"]["builds"]) == (200, []), "no retention settings: nothing goes"

    status, body = await admin.request("PUT", f"/api/v1/setting/{namespace}/", json={"retention_keep_builds": 1})
    assert status == 200, body
    status, body = await admin.request("POST", "/api/v1/retention/", json={"namespace": namespace, "dry_run": True})
    assert status == 200, body
    assert [entry["build_id"] for entry in body["data"]["builds"]] == [builds[1]["id"], builds[0]["id"]]
    assert [await state_of(admin, build["id"]) for build in builds] == ["AVAILABLE"] * 3

    status, body = await admin.request("POST", "/api/v1/retention/", json={"namespace": namespace})
    assert status == 200, body
    assert {entry["build_id"] for entry in body["data"]["builds"]} == {builds[0]["id"], builds[1]["id"]}
    assert await state_of(admin, builds[2]["id"]) == "AVAILABLE"  # the current build is never archived
    for build in builds[:2]:
        assert await state_of(admin, build["id"]) in ("ARCHIVING", "ARCHIVED")

    status, body = await admin.request("POST", "/api/v1/retention/", json={"dry_run": "yes"})
    assert status == 400 and "dry_run" in body["message"], body


async def test_a_failed_rehydration_says_why_and_is_asked_again(lifecycle_stack: EmbeddedStack, admin: ApiClient) -> None:
    """The lock is lost from storage meanwhile: the rehydration fails and says why (409 naming how to
    ask again); once the lock is back, asking again rehydrates."""
    namespace = fresh("rehydration-failure")
    first = await completed_build(admin, namespace, "tools", ["textutils"])
    await completed_build(admin, namespace, "tools", ["tinyjson"])
    storage = LocalStorage(lifecycle_stack.data_directory / "storage")
    manifest = json.loads(await storage.get_bytes((await storage.resolve(f"docker/manifest/{build_key_of(first)}")).digest))
    config = json.loads(await storage.get_bytes(manifest["config"]["digest"]))
    lock_file = storage.local_path(config["config"]["Labels"]["org.envstore.lock-digest"])
    assert lock_file is not None
    status, body = await admin.request("POST", f"/api/v1/build/{first['id']}/archive/")
    assert status == 200, body

    async def archived() -> bool:
        return await state_of(admin, first["id"]) == "ARCHIVED"

    await wait_until(archived, "the archive freeing the build", timeout_seconds=30)
    aside = lock_file.with_name(lock_file.name + ".aside")
    lock_file.rename(aside)
    try:
        status, body = await admin.get(f"/api/v1/build/{first['id']}/archive/", params={"wait": "120"})
        assert status == 409, body
        assert "could not be rehydrated" in body["message"] and f"POST /api/v1/build/{first['id']}/rehydrate/" in body["message"]
        assert await state_of(admin, first["id"]) == "FAILED"
    finally:
        aside.rename(lock_file)
    status, body = await admin.request("POST", f"/api/v1/build/{first['id']}/rehydrate/", params={"wait": "120"})
    assert (status, body["data"]["state"]) == (200, "AVAILABLE"), body
    async with admin.raw("GET", f"/api/v1/build/{first['id']}/archive/", allow_redirects=False) as response:
        assert response.status == 307
