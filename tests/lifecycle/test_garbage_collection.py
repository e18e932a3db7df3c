"""Garbage collection on a real stack: a deleted build's tarball, image layers and package-cache
entries are collected (a dry run lists them and their bytes first), everything a live build needs
stays; and collecting over and over while 20 builds run at once loses nothing they need.

Blobs and cache entries already stored are aged past the grace period by setting their times a day
back (as if written then); what running builds write or reuse is young by then."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import aiohttp

from envstore.common.storage import LocalStorage
from envstore.launcher.stack import EmbeddedStack
from tests.api.conftest import fresh
from tests.api_client import ApiClient, environment_yaml
from tests.lifecycle.conftest import completed_build

GRACE_SECONDS = 600
CONCURRENT_BUILDS = 20
SHARED_PACKAGES = ["hello 2.1.*", "tinyjson", "textutils"]


def age_everything(stack: EmbeddedStack) -> None:
    """Every stored blob and package-cache entry, as if written a day ago."""
    a_day_ago = time.time() - 86400
    for directory in (stack.data_directory / "storage" / "blobs" / "sha256", stack.data_directory / "cache" / "pkgs"):
        for entry in directory.iterdir():
            os.utime(entry, (a_day_ago, a_day_ago))


def storage_of(stack: EmbeddedStack) -> LocalStorage:
    return LocalStorage(stack.data_directory / "storage")


def build_key_of(build: dict) -> str:
    logs = next(artifact["key"] for artifact in build["build_artifacts"] if artifact["artifact_type"] == "LOGS")
    return logs.removeprefix("logs/").removesuffix(".log")


async def collect(admin: ApiClient, dry_run: bool) -> dict:
    status, body = await admin.request(
        "POST", "/api/v1/storage/gc/", json={"dry_run": dry_run, "grace_seconds": GRACE_SECONDS}
    )
    assert status == 200, body
    return body["data"]


async def delete_build(admin: ApiClient, build_id: int) -> None:
    status, body = await admin.request("DELETE", f"/api/v1/build/{build_id}/")
    assert status == 200, body

    async def gone() -> bool:
        return {a["artifact_type"] for a in (await admin.build(build_id))["build_artifacts"]} == {"LOGS", "LOCKFILE", "YAML"}

    deadline = time.monotonic() + 30
    while not await gone():
        assert time.monotonic() < deadline, "the deleted build's artifacts still listed"
        await asyncio.sleep(0.1)


async def image_blobs(storage: LocalStorage, manifest_digest: str) -> list[str]:
    """An image's configuration and layers; an image index's images and theirs."""
    manifest = json.loads(await storage.get_bytes(manifest_digest))
    if "manifests" in manifest:
        found = []
        for child in manifest["manifests"]:
            found += [child["digest"], *await image_blobs(storage, child["digest"])]
        return found
    return [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]


async def everything_a_build_needs(storage: LocalStorage, build: dict, further_platforms: tuple[str, ...] = ()) -> list[str]:
    digests = []
    for platform in further_platforms:
        blob = await storage.resolve(f"archive/{platform}/{build_key_of(build)}.tar.gz")
        assert blob is not None, platform
        digests.append(blob.digest)
    for artifact in build["build_artifacts"]:
        blob = await storage.resolve(artifact["key"])
        assert blob is not None, artifact
        digests.append(blob.digest)
        if artifact["artifact_type"] == "DOCKER_MANIFEST":
            digests += await image_blobs(storage, blob.digest)
    return digests


async def test_dry_run_lists_and_collection_frees_only_what_no_live_build_uses(
    lifecycle_stack: EmbeddedStack, admin: ApiClient
) -> None:
    namespace = fresh("gc")
    # A package no other test of this stack installs: its cache entry is the doomed build's alone.
    doomed = await completed_build(admin, namespace, "old", ["compresslite"])
    # Kept: a build for two Linux platforms — an image index, and a further platform's tarball.
    status, body = await admin.request("PUT", f"/api/v1/setting/{namespace}/kept/", json={"conda_solve_platforms": ["linux-64", "linux-aarch64"]})
    assert status == 200, body
    kept = await completed_build(admin, namespace, "kept", ["tinyjson", "hello 2.1.*"])
    storage = storage_of(lifecycle_stack)
    tarball = await storage.resolve(f"archive/{build_key_of(doomed)}.tar.gz")
    assert tarball is not None
    await delete_build(admin, doomed["id"])
    age_everything(lifecycle_stack)
    kept_needs = await everything_a_build_needs(storage, await admin.build(kept["id"]), ("linux-aarch64",))
    manifest = json.loads(await storage.get_bytes((await storage.resolve(f"docker/manifest/{build_key_of(kept)}")).digest))
    assert len(manifest["manifests"]) == 2, "an image index of two platforms"

    preview = await collect(admin, dry_run=True)
    listed = {blob["digest"] for blob in preview["blobs"]}
    assert tarball.digest in listed and preview["blob_bytes"] >= tarball.size and preview["bytes_freed"] == 0
    assert not listed & set(kept_needs)
    cache_entries = {entry["name"] for entry in preview["package_cache_entries"]}
    assert any(name.startswith("compresslite-") for name in cache_entries), cache_entries
    assert await storage.has_blob(tarball.digest), "a dry run deletes nothing"
    # The same from the command line, on the stack found by its data directory.
    command = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "envstore.launcher.cli", "gc", "--dry-run", "--grace-seconds", str(GRACE_SECONDS),
        "--data-dir", str(lifecycle_stack.data_directory),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(command.communicate(), 120)
    assert command.returncode == 0, stderr.decode()
    assert f"would collect: {tarball.digest} ({tarball.size} bytes)" in stdout.decode()
    assert "would free" in stdout.decode().splitlines()[-1]
    assert await storage.has_blob(tarball.digest)

    report = await collect(admin, dry_run=False)
    assert tarball.digest in {blob["digest"] for blob in report["blobs"]}
    assert report["bytes_freed"] == report["blob_bytes"] + report["package_cache_bytes"] > 0
    assert not await storage.has_blob(tarball.digest)
    assert not any(
        (lifecycle_stack.data_directory / "cache" / "pkgs" / name).exists() for name in cache_entries
    )
    for digest in kept_needs:
        assert await storage.has_blob(digest), digest
    # What a deleted build keeps stays: its lockfile, YAML, logs, and the lock behind its diff and SBOM.
    for route in ("lockfile/", "yaml/", "logs/"):
        async with admin.raw("GET", f"/api/v1/build/{doomed['id']}/{route}") as response:
            assert response.status == 200, route
    assert (await admin.get(f"/api/v1/build/{doomed['id']}/sbom/"))[0] == 200

    status, body = await admin.get("/api/v1/storage/")
    totals = next(entry for entry in body["data"] if entry["namespace"] == namespace)
    assert totals["artifact_bytes"] > 0 and totals["builds"] == 1, "the deleted build is no longer counted"
    async with admin.raw("GET", "/metrics") as response:
        metrics = await response.text()
    assert f'envstore_storage_bytes{{namespace="{namespace}",kind="artifacts"}} {totals["artifact_bytes"]}' in metrics
    status, body = await admin.request("POST", "/api/v1/storage/gc/", json={"dry_run": "please"})
    assert status == 400 and "dry_run" in body["message"]


async def test_collecting_during_twenty_concurrent_builds_loses_nothing_they_need(
    lifecycle_stack: EmbeddedStack, admin: ApiClient
) -> None:
    namespace = fresh("gc-busy")
    # An earlier build of the same packages, deleted: its layers and cache entries are unreferenced
    # and old — exactly what the running builds reuse.
    earlier = await completed_build(admin, namespace, "earlier", SHARED_PACKAGES)
    storage = storage_of(lifecycle_stack)
    earlier_tarball = await storage.resolve(f"archive/{build_key_of(earlier)}.tar.gz")
    await delete_build(admin, earlier["id"])
    age_everything(lifecycle_stack)

    build_ids = await asyncio.gather(
        *(admin.submit(environment_yaml(f"busy-{index}", SHARED_PACKAGES), namespace) for index in range(CONCURRENT_BUILDS))
    )
    finished = asyncio.gather(*(admin.wait_for_build(build_id, timeout_seconds=600) for build_id in build_ids))

    # Collect from the moment the first prefix is installed: packaging (which reuses the old
    # layers) follows at once, so collections run while images are half made.
    prefixes = lifecycle_stack.data_directory / "envs" / namespace
    while not finished.done() and not any(entry.name != "envs" for entry in prefixes.iterdir()):
        await asyncio.sleep(0.01)
    collections = []
    while not finished.done():
        collections.append(await collect(admin, dry_run=False))
        await asyncio.wait([finished], timeout=0.01)
    builds = await finished
    assert [build["status"] for build in builds] == ["COMPLETED"] * CONCURRENT_BUILDS, [b["status_info"] for b in builds]
    collected = {blob["digest"] for report in collections for blob in report["blobs"]}
    assert collections and earlier_tarball is not None and earlier_tarball.digest in collected

    headers = {"Authorization": f"Bearer {lifecycle_stack.admin_token}", "Accept": "application/vnd.oci.image.manifest.v1+json"}
    async with aiohttp.ClientSession(lifecycle_stack.registry_url, headers=headers) as registry:
        for build in builds:
            build = await admin.wait_for_artifacts(build["id"], {"LOGS", "LOCKFILE", "YAML", "CONDA_PACK", "DOCKER_MANIFEST"})
            for digest in await everything_a_build_needs(storage, build):
                assert await storage.has_blob(digest), (build["id"], digest)
            async with admin.raw("GET", f"/api/v1/build/{build['id']}/archive/") as response:
                assert response.status == 200
        manifest_name = f"{namespace}/busy-0"
        async with registry.get(f"/v2/{manifest_name}/manifests/latest") as response:
            assert response.status == 200
            manifest = await response.json(content_type=None)
        for layer in manifest["layers"]:
            async with registry.get(f"/v2/{manifest_name}/blobs/{layer['digest']}") as response:
                assert response.status == 200
                await response.read()
