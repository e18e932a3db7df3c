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
from envstore.launcher.free_ports import pick_free_port
from envstore.launcher.stack import EmbeddedStack
from http_load import BareFileServer

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


async def timed_download(http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None) -> float:
    """A raw HTTP client: read the body in big chunks and drop it."""
    started = time.perf_counter()
    async with http.get(url, headers=headers) as response:
        assert response.status in (200, 206), (url, response.status)
        async for _ in response.content.iter_chunked(CHUNK):
            pass
    return time.perf_counter() - started


def timed_curl(url: str, token: str, output: str = "/dev/null", byte_range: str | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["curl", "-sf", "-o", output, "-H", f"Authorization: Bearer {token}",
         *(("-H", f"Range: bytes={byte_range}") if byte_range else ()), url],
        check=True,
    )
    return time.perf_counter() - started


def timed_skopeo(registry_url: str, token: str, destination: Path) -> float:
    """``skopeo copy`` of the image into a directory (it writes and checks every blob's digest)."""
    shutil.rmtree(destination, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--src-creds", f"any:{token}",
         f"docker://{registry_url.removeprefix('http://')}/bench/big:latest", f"dir:{destination}"],
        check=True, stdout=subprocess.DEVNULL,
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
            ) as registry, aiohttp.ClientSession(headers=headers) as raw:
                build_seconds = await build_and_wait(api, "bench", "big", ["bigdata"])
                async with registry.get("/v2/bench/big/manifests/latest", headers={"Accept": OCI_MANIFEST}) as response:
                    manifest = json.loads(await response.read())
                layer = max(manifest["layers"], key=lambda descriptor: descriptor["size"])
                size, digest = layer["size"], layer["digest"]
                blob_path = f"/v2/bench/big/blobs/{digest}"
                on_disk = stack.data_directory / "storage" / "blobs" / "sha256" / digest.removeprefix("sha256:")

                registry_blob = f"{stack.registry_url}{blob_path}"
                await timed_download(raw, registry_blob)  # warm the page cache
                half = f"{size // 2}-{size - 1}"
                async with BareFileServer(on_disk, pick_free_port("127.0.0.1")) as bare:
                    measured: dict[str, tuple[list[float], list[float]]] = {}
                    for label, ours, ceiling in (
                        ("curl -o /dev/null",
                         lambda: asyncio.to_thread(timed_curl, registry_blob, stack.admin_token),
                         lambda: asyncio.to_thread(timed_curl, bare.url + "/", stack.admin_token)),
                        ("aiohttp client, body dropped",
                         lambda: timed_download(raw, registry_blob),
                         lambda: timed_download(raw, bare.url + "/")),
                        ("curl, Range: the second half",
                         lambda: asyncio.to_thread(timed_curl, registry_blob, stack.admin_token, "/dev/null", half),
                         lambda: asyncio.to_thread(timed_curl, bare.url + "/", stack.admin_token, "/dev/null", half)),
                        ("curl -o a file on the same disk",
                         lambda: asyncio.to_thread(timed_curl, registry_blob, stack.admin_token, str(root / "pulled")),
                         lambda: asyncio.to_thread(timed_curl, bare.url + "/", stack.admin_token, str(root / "pulled"))),
                    ):
                        # Alternated, so both see the same moments of a shared machine.
                        pairs = [(await ours(), await ceiling()) for _ in range(runs)]
                        measured[label] = ([pair[0] for pair in pairs], [pair[1] for pair in pairs])
                skopeo = [await asyncio.to_thread(timed_skopeo, stack.registry_url, stack.admin_token, root / "skopeo")
                          for _ in range(runs)]
                copies = [await asyncio.to_thread(timed_copy, on_disk, root) for _ in range(runs)]

                print(f"\nlayer {digest[:19]}…  {size / MEBIBYTE:.1f} MiB (the image of a {size_mb} MiB package); "
                      f"load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
                print(f"  build with image, submit → COMPLETED   {build_seconds:8.2f} s")
                print("  the same bytes from the registry and from a bare sendfile(2) server (the loopback copy):")
                for label, (ours, ceiling) in measured.items():
                    transferred = size - size // 2 if "Range" in label else size
                    ratio = statistics.median(ceiling) / statistics.median(ours)
                    print(f"    {label:<32} registry {rate(transferred, ours)}")
                    print(f"    {'':<32} bare     {rate(transferred, ceiling)}   registry/bare {ratio:.0%}")
                print(f"  skopeo copy docker://… dir: (whole image) {rate(size, skopeo)} (layer bytes over the copy's time)")
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
