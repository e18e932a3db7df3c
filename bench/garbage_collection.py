"""Garbage collection after 200 builds: its time and the bytes it frees, against the floor of
listing and stating every stored blob (what any sweep must do), measured in the same run (issue 16).

On an embedded stack with the offline demo channel: 200 builds over 20 environments (10 each, the
specifications rotating through the channel's packages; tarball, image, lockfile and YAML each),
then the retention policy keeps the last 2 builds of each environment and archives the other 160
(their tarballs and images freed), and 20 more builds are deleted. Then, with no grace period:

1. a dry run (mark, list, nothing deleted),
2. the collection itself,
3. the floor: ``os.scandir`` + ``stat`` of every blob file, as the sweep's listing does.

Prints the figures; asserts nothing. Other work on the machine shares the CPU.

    .venv/bin/python bench/garbage_collection.py [--builds N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

import aiohttp

from envstore.common.demo_channel import make_channel
from envstore.launcher.stack import EmbeddedStack

ENVIRONMENTS = 20
PACKAGE_CHOICES = (
    ("tinyjson",), ("textutils",), ("hello 2.1.*",), ("hello 1.0.*",), ("compresslite",),
    ("greeting-data",), ("tinyjson", "textutils"), ("colorterm",), ("configlib",), ("logkit",),
)
ARTIFACTS = "LOCKFILE,YAML,CONDA_PACK,DOCKER_MANIFEST"


def specification(name: str, packages: tuple[str, ...]) -> str:
    return f"name: {name}\ndependencies:\n" + "".join(f"  - {package}\n" for package in packages)


async def wait_done(session: aiohttp.ClientSession, build_id: int) -> dict:
    while True:
        async with session.get(f"/api/v1/build/{build_id}/") as response:
            build = (await response.json())["data"]
        if build["status"] in ("COMPLETED", "FAILED", "CANCELED"):
            return build
        await asyncio.sleep(0.1)


def list_blobs(root: Path) -> tuple[int, int]:
    count = size = 0
    with os.scandir(root) as entries:
        for entry in entries:
            size += entry.stat().st_size
            count += 1
    return count, size


async def run(builds: int, directory: Path) -> None:
    channel = await make_channel(directory / "channel")
    settings = {
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel,
        "ENVSTORE_BUILD_ARTIFACTS": ARTIFACTS,
        "ENVSTORE_WORKER_CONCURRENCY": "4",
    }
    async with EmbeddedStack(directory / "stack", settings=settings) as stack:
        headers = {"Authorization": f"Bearer {stack.admin_token}"}
        async with aiohttp.ClientSession(stack.api_url, headers=headers) as session:
            started = time.perf_counter()
            build_ids = []
            for index in range(builds):
                name = f"env-{index % ENVIRONMENTS:02}"
                packages = PACKAGE_CHOICES[(index // ENVIRONMENTS + index) % len(PACKAGE_CHOICES)]
                async with session.post(
                    "/api/v1/specification/", json={"namespace": "bench", "specification": specification(name, packages)}
                ) as response:
                    build_ids.append((await response.json())["data"]["build_id"])
            done = await asyncio.gather(*(wait_done(session, build_id) for build_id in build_ids))
            completed = [build for build in done if build["status"] == "COMPLETED"]
            print(f"{len(completed)} of {builds} builds completed in {time.perf_counter() - started:.0f} s")

            async with session.put("/api/v1/setting/bench/", json={"retention_keep_builds": 2}) as response:
                assert response.status == 200, await response.text()
            async with session.post("/api/v1/retention/", json={"namespace": "bench"}) as response:
                archived = (await response.json())["data"]["builds"]
            async with session.get("/api/v1/environment/", params={"namespace": "bench", "size": "100"}) as response:
                current = {environment["current_build_id"] for environment in (await response.json())["data"]}
            archived_ids = {entry["build_id"] for entry in archived}
            deletable = [b["id"] for b in completed if b["id"] not in current and b["id"] not in archived_ids][:20]
            for build_id in deletable:
                async with session.delete(f"/api/v1/build/{build_id}/") as response:
                    assert response.status == 200, await response.text()
            while True:  # the builder frees what was archived and deleted
                async with session.get("/api/v1/storage/") as response:
                    totals = next(e for e in (await response.json())["data"] if e["namespace"] == "bench")
                states = []
                for build_id in list(archived_ids)[:5]:
                    async with session.get(f"/api/v1/build/{build_id}/rehydration/") as response:
                        states.append((await response.json())["data"]["state"])
                if all(state == "ARCHIVED" for state in states):
                    break
                await asyncio.sleep(0.2)
            print(f"archived {len(archived)} builds by retention (keep 2 per environment), deleted {len(deletable)}")
            blob_root = stack.data_directory / "storage" / "blobs" / "sha256"
            before_count, before_bytes = list_blobs(blob_root)
            await asyncio.sleep(1.0)  # everything written before now is past a grace of 0.5 s

            async def collect(dry_run: bool) -> tuple[float, dict]:
                begun = time.perf_counter()
                async with session.post("/api/v1/storage/gc/", json={"dry_run": dry_run, "grace_seconds": 0.5}) as response:
                    report = (await response.json())["data"]
                return time.perf_counter() - begun, report

            dry_seconds, preview = await collect(True)
            gc_seconds, report = await collect(False)
            floor_started = time.perf_counter()
            list_blobs(blob_root)
            floor_seconds = time.perf_counter() - floor_started
            after_count, after_bytes = list_blobs(blob_root)

    print(f"storage before: {before_count} blobs, {before_bytes / 1e6:.1f} MB; after: {after_count} blobs, {after_bytes / 1e6:.1f} MB")
    print(f"dry run:    {dry_seconds * 1000:8.0f} ms, would free {preview['blob_bytes'] / 1e6:.1f} MB in {len(preview['blobs'])} blobs "
          f"+ {preview['package_cache_bytes'] / 1e6:.1f} MB in {len(preview['package_cache_entries'])} package-cache entries")
    print(f"collection: {gc_seconds * 1000:8.0f} ms, freed {report['bytes_freed'] / 1e6:.1f} MB "
          f"({len(report['blobs'])} blobs, {len(report['package_cache_entries'])} package-cache entries); "
          f"{report['marked_blobs']} blobs referenced")
    print(f"floor (scandir + stat of {before_count} blobs): {floor_seconds * 1000:.1f} ms; "
          f"ratio collection / floor: {gc_seconds / max(floor_seconds, 1e-6):.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--builds", type=int, default=200)
    parser.add_argument("--keep", type=Path, help="keep the channel and the stack's data here")
    arguments = parser.parse_args()
    directory = arguments.keep or Path(tempfile.mkdtemp(prefix="envstore-bench-gc-"))
    try:
        asyncio.run(run(arguments.builds, directory))
    finally:
        if arguments.keep is None:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
