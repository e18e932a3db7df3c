"""Rehydration of an archived 61-package build against its original build, measured in the same
run (issue 16).

A big channel of 61 packages is made (``big_channel``, the real-size shape scaled to 61 packages,
~350 MB installed). On an embedded stack:

1. the original build: submit → every artifact (lockfile, YAML, conda-pack tarball, installer,
   image), polled every 50 ms;
2. another build of the environment becomes current, the first is archived (its prefix, tarball,
   installer and image freed);
3. rehydration: ``GET /api/v1/build/{id}/archive/?wait=`` until it redirects to the tarball made
   again, then the image's manifest digest is compared with the original's.

The package cache is warm for rehydration (the packager's install reuses it, as in service); the
original build fetched every package from the channel. Prints the figures and the ratio; asserts
nothing. Other work on the machine shares the CPU.

    .venv/bin/python bench/rehydration.py [--channel DIR] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import aiohttp

from envstore.common.demo_channel.big_channel import BigChannelShape, make_big_channel
from envstore.launcher.stack import EmbeddedStack

POLL_SECONDS = 0.05
PACKAGES = 61
INSTALLED_BYTES = 350 * 1000 * 1000
ARTIFACTS = "LOCKFILE,YAML,CONDA_PACK,CONSTRUCTOR_INSTALLER,DOCKER_MANIFEST"


async def wait_for_artifacts(session: aiohttp.ClientSession, build_id: int, kinds: set[str]) -> dict:
    while True:
        async with session.get(f"/api/v1/build/{build_id}/") as response:
            build = (await response.json())["data"]
        if build["status"] == "FAILED":
            raise RuntimeError(f"build {build_id} failed: {build['status_info']}")
        if build["status"] == "COMPLETED" and kinds <= {a["artifact_type"] for a in build["build_artifacts"]}:
            return build
        await asyncio.sleep(POLL_SECONDS)


async def submit(session: aiohttp.ClientSession, specification: str) -> int:
    async with session.post("/api/v1/specification/", json={"namespace": "bench", "specification": specification}) as response:
        body = await response.json()
        assert response.status == 200, body
        return body["data"]["build_id"]


async def image_digest(stack: EmbeddedStack, build_id: int) -> str:
    headers = {"Authorization": f"Bearer {stack.admin_token}", "Accept": "application/vnd.oci.image.manifest.v1+json"}
    async with aiohttp.ClientSession(stack.registry_url, headers=headers) as registry:
        async with registry.head(f"/v2/bench/big/manifests/{build_id}") as response:
            assert response.status == 200, response.status
            return response.headers["Docker-Content-Digest"]


async def run(channel_directory: Path, stack_directory: Path) -> None:
    started = time.perf_counter()
    channel = await make_big_channel(
        channel_directory, BigChannelShape(package_count=PACKAGES, installed_bytes=INSTALLED_BYTES)
    )
    print(f"channel: {channel.package_count} packages, {channel.installed_bytes / 1e6:.0f} MB installed, "
          f"made in {time.perf_counter() - started:.1f} s")
    settings = {
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel.url,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel.url,
        "ENVSTORE_BUILD_ARTIFACTS": ARTIFACTS,
    }
    kinds = set(ARTIFACTS.split(",")) | {"LOGS"}
    async with EmbeddedStack(stack_directory, settings=settings) as stack:
        headers = {"Authorization": f"Bearer {stack.admin_token}"}
        async with aiohttp.ClientSession(stack.api_url, headers=headers) as session:
            specification = "name: big\ndependencies:\n" + "".join(f"  - {spec}\n" for spec in channel.specs)
            submitted = time.perf_counter()
            build = await wait_for_artifacts(session, await submit(session, specification), kinds)
            original_seconds = time.perf_counter() - submitted
            original_digest = await image_digest(stack, build["id"])
            async with session.get(f"/api/v1/build/{build['id']}/packages/", params={"size": "200"}) as response:
                package_count = (await response.json())["count"]

            small = "name: big\ndependencies:\n  - " + sorted(channel.specs)[0] + "\n"
            await wait_for_artifacts(session, await submit(session, small), kinds)
            async with session.post(f"/api/v1/build/{build['id']}/archive/") as response:
                assert response.status == 200, await response.text()
            while True:
                async with session.get(f"/api/v1/build/{build['id']}/rehydration/") as response:
                    if (await response.json())["data"]["state"] == "ARCHIVED":
                        break
                await asyncio.sleep(POLL_SECONDS)

            asked = time.perf_counter()
            async with session.get(
                f"/api/v1/build/{build['id']}/archive/", params={"wait": "1800"}, allow_redirects=False
            ) as response:
                assert response.status == 307, (response.status, await response.text())
            await wait_for_artifacts(session, build["id"], kinds)
            rehydration_seconds = time.perf_counter() - asked
            async with session.get(f"/api/v1/build/{build['id']}/rehydration/") as response:
                packager_seconds = (await response.json())["data"]["rehydration_seconds"]
            rehydrated_digest = await image_digest(stack, build["id"])

    print(f"build: {package_count} packages; artifacts {ARTIFACTS}")
    print(f"original build (submit -> every artifact, cold package cache): {original_seconds:8.1f} s")
    print(f"rehydration (request -> every artifact again, no solve):       {rehydration_seconds:8.1f} s"
          f"  (packager: {packager_seconds:.1f} s)")
    print(f"ratio rehydration / original build: {rehydration_seconds / original_seconds:.2f}")
    print(f"image manifest digest: {original_digest} before, {rehydrated_digest} after: "
          + ("the same" if original_digest == rehydrated_digest else "DIFFERENT"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channel", type=Path, help="where to make the channel (default: a temporary directory)")
    parser.add_argument("--keep", type=Path, help="keep the stack's data here")
    arguments = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="envstore-bench-rehydration-"))
    try:
        asyncio.run(run(arguments.channel or scratch / "channel", arguments.keep or scratch / "stack"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
