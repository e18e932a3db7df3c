"""The docker registry's figures: how fast a big layer comes down over loopback, against a plain
copy of the same bytes on the same disk, and how long the first pull of a new dynamic image waits
for its manifest (submission, solve, install, image) against a pull of an image that exists.

Runs a real embedded stack (NATS, PostgreSQL, every service as its own process) on a channel made
for the purpose: the offline demo channel plus one noarch package holding ``--size-mb`` of random
bytes (incompressible, so its image layer is as big). Prints the figures; asserts nothing.

    .venv/bin/python bench/registry_throughput.py [--size-mb 200] [--runs 5] [--dynamic 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp
import rattler.index

from envstore.common.demo_channel import make_channel
from envstore.common.demo_channel.catalogue import (
    ArchiveFormat,
    PackageDefinition,
    PackageFile,
)
from envstore.common.demo_channel.package_writer import write_package
from envstore.launcher.stack import EmbeddedStack

MEBIBYTE = 1024 * 1024
CHUNK = 4 * MEBIBYTE
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
# New dynamic images from the demo channel: each name is a new environment (a new solve and build).
DYNAMIC_NAMES = [
    "hello/tinyjson",
    "hello/textutils",
    "hello.lt.2.1/tinyjson",
    "colorterm/hello",
    "hello/libmath",
    "netlite/hello",
    "datakit/hello",
    "hello/units",
]


async def channel_with_big_package(directory: Path, size_mb: int) -> str:
    url = await make_channel(directory)
    payload = PackageFile("share/bigdata/payload.bin", os.urandom(size_mb * MEBIBYTE))
    big = PackageDefinition(name="bigdata", version="1.0", subdir="noarch", files=(payload,))
    await asyncio.to_thread(write_package, big, ArchiveFormat.CONDA, directory / "noarch")
    await rattler.index.index_fs(directory, write_zst=False, write_shards=False, force=True)
    return url


async def build_and_wait(http: aiohttp.ClientSession, namespace: str, name: str, dependencies: list[str]) -> float:
    text = f"name: {name}\ndependencies:\n" + "".join(f"  - {dependency}\n" for dependency in dependencies)
    started = time.perf_counter()
    async with http.post("/api/v1/specification/", json={"namespace": namespace, "specification": text}) as response:
        build_id = (await response.json())["data"]["build_id"]
    while True:
        async with http.get(f"/api/v1/build/{build_id}/") as response:
            build = (await response.json())["data"]
        if build["status"] in ("COMPLETED", "FAILED", "CANCELED"):
            assert build["status"] == "COMPLETED", build["status_info"]
            return time.perf_counter() - started
        await asyncio.sleep(0.01)


async def timed_download(registry: aiohttp.ClientSession, path: str) -> float:
    started = time.perf_counter()
    async with registry.get(path) as response:
        assert response.status == 200, response.status
        async for _ in response.content.iter_chunked(CHUNK):
            pass
    return time.perf_counter() - started


def timed_curl(url: str, token: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["curl", "-sf", "-o", "/dev/null", "-H", f"Authorization: Bearer {token}", url], check=True
    )
    return time.perf_counter() - started


def timed_copy(source: Path, directory: Path) -> float:
    target = directory / "copy"
    started = time.perf_counter()
    shutil.copyfile(source, target)
    elapsed = time.perf_counter() - started
    target.unlink()
    return elapsed


def rate(size: int, seconds: list[float]) -> str:
    best, median = min(seconds), statistics.median(seconds)
    return f"median {size / median / MEBIBYTE:8.0f} MiB/s ({median * 1000:7.1f} ms), best {size / best / MEBIBYTE:8.0f} MiB/s"


async def main(size_mb: int, runs: int, dynamic: int) -> None:
    with tempfile.TemporaryDirectory(prefix="envstore-registry-bench-") as scratch:
        root = Path(scratch)
        print(f"making a channel with a {size_mb} MiB package …", flush=True)
        channel = await channel_with_big_package(root / "channel", size_mb)
        settings = {
            "ENVSTORE_BUILD_ARTIFACTS": "LOCKFILE,YAML,DOCKER_MANIFEST",
            "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel,
            "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel,
            "ENVSTORE_REGISTRY_IMAGE_WAIT_SECONDS": "600",
        }
        async with EmbeddedStack(root / "stack", settings=settings) as stack:
            headers = {"Authorization": f"Bearer {stack.admin_token}"}
            async with aiohttp.ClientSession(stack.api_url, headers=headers) as api, aiohttp.ClientSession(
                stack.registry_url, headers=headers
            ) as registry:
                build_seconds = await build_and_wait(api, "bench", "big", ["bigdata"])
                async with registry.get("/v2/bench/big/manifests/latest", headers={"Accept": OCI_MANIFEST}) as response:
                    manifest = json.loads(await response.read())
                layer = max(manifest["layers"], key=lambda descriptor: descriptor["size"])
                size, digest = layer["size"], layer["digest"]
                blob_path = f"/v2/bench/big/blobs/{digest}"
                on_disk = stack.data_directory / "storage" / "blobs" / "sha256" / digest.removeprefix("sha256:")

                await timed_download(registry, blob_path)  # warm the page cache
                python_client = [await timed_download(registry, blob_path) for _ in range(runs)]
                curl = [await asyncio.to_thread(timed_curl, f"{stack.registry_url}{blob_path}", stack.admin_token) for _ in range(runs)]
                copies = [await asyncio.to_thread(timed_copy, on_disk, root) for _ in range(runs)]

                print(f"\nlayer {digest[:19]}…  {size / MEBIBYTE:.1f} MiB (the image of a {size_mb} MiB package)")
                print(f"  build with image, submit → COMPLETED   {build_seconds:8.2f} s")
                print(f"  registry → curl -o /dev/null            {rate(size, curl)}")
                print(f"  registry → aiohttp client (discard)     {rate(size, python_client)}")
                print(f"  plain file copy (shutil.copyfile)       {rate(size, copies)}")

                first, again = [], []
                for name in DYNAMIC_NAMES[:dynamic]:
                    path = f"/v2/conda-store-dynamic/{name}/manifests/latest"
                    for timings in (first, again):
                        started = time.perf_counter()
                        async with registry.get(path, headers={"Accept": OCI_MANIFEST}) as response:
                            await response.read()
                            assert response.status == 200, (name, response.status, await response.text())
                        timings.append(time.perf_counter() - started)
                print(f"\ndynamic images ({len(first)} new names from the demo channel)")
                print(
                    f"  first request → manifest    median {statistics.median(first) * 1000:7.1f} ms, "
                    f"min {min(first) * 1000:7.1f} ms, max {max(first) * 1000:7.1f} ms"
                )
                print(
                    f"  next request (image exists) median {statistics.median(again) * 1000:7.1f} ms, "
                    f"max {max(again) * 1000:7.1f} ms"
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dynamic", type=int, default=5, choices=range(1, len(DYNAMIC_NAMES) + 1))
    arguments = parser.parse_args()
    asyncio.run(main(arguments.size_mb, arguments.runs, arguments.dynamic))
    os._exit(0)  # py-rattler 0.28 may crash at interpreter exit (TOOLING.md)
