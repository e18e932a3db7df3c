"""How long a user waits: submit → COMPLETED and submit → all artifacts, for a fresh
5-package environment from the offline demo channel, and for an identical resubmission.

Runs a real embedded stack (NATS, PostgreSQL, every service as its own process) and talks to it
over HTTP as a user would, polling the build every 10 ms. Prints the figures; asserts nothing.

    .venv/bin/python bench/build_latency.py [--runs 7]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from envstore.common.demo_channel import make_channel
from envstore.common.settings import EnvstoreSettings
from envstore.launcher.stack import EmbeddedStack

# Equivalent ways to ask for the same five packages: each is a new specification (no cached
# solve), all resolve to hello 2.1, libhello, greeting-data, tinyjson, textutils.
TINYJSON_VARIANTS = ["tinyjson", "tinyjson >=1", "tinyjson >=1.0", "tinyjson >=1.1", "tinyjson 1.*",
                     "tinyjson <2", "tinyjson <3", "tinyjson >=0.5", "tinyjson !=0.1", "tinyjson <=1.1"]
# The default artifact set (conda-store's four, the image, and the log).
ALL_ARTIFACTS = {*EnvstoreSettings().build_artifacts, "LOGS"}
POLL_SECONDS = 0.01


def specification(name: str, tinyjson: str) -> str:
    return f"name: {name}\ndependencies:\n  - hello 2.1.*\n  - {tinyjson}\n  - textutils\n"


async def timed_failure(http: aiohttp.ClientSession, text: str) -> float:
    started = time.perf_counter()
    async with http.post("/api/v1/specification/", json={"namespace": "bench", "specification": text}) as response:
        build_id = (await response.json())["data"]["build_id"]
    while True:
        async with http.get(f"/api/v1/build/{build_id}/") as response:
            build = (await response.json())["data"]
        if build["status"] == "FAILED":
            return time.perf_counter() - started
        if build["status"] in ("COMPLETED", "CANCELED"):
            raise RuntimeError(f"build {build_id} should have failed, it is {build['status']}")
        await asyncio.sleep(POLL_SECONDS)


async def timed_build(http: aiohttp.ClientSession, text: str) -> tuple[float, float]:
    started = time.perf_counter()
    async with http.post("/api/v1/specification/", json={"namespace": "bench", "specification": text}) as response:
        build_id = (await response.json())["data"]["build_id"]
    completed_at = None
    while True:
        async with http.get(f"/api/v1/build/{build_id}/") as response:
            build = (await response.json())["data"]
        now = time.perf_counter()
        if build["status"] == "COMPLETED" and completed_at is None:
            completed_at = now
        if build["status"] in ("FAILED", "CANCELED"):
            raise RuntimeError(f"build {build_id} {build['status']}: {build['status_info']}")
        if completed_at is not None and ALL_ARTIFACTS <= {a["artifact_type"] for a in build["build_artifacts"]}:
            return completed_at - started, now - started
        await asyncio.sleep(POLL_SECONDS)


def summary(label: str, samples: list[float]) -> str:
    return (f"{label:<44} median {statistics.median(samples):6.3f} s   "
            f"min {min(samples):6.3f} s   max {max(samples):6.3f} s   (n={len(samples)})")


async def main(runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="envstore-bench-") as directory:
        channel = await make_channel(Path(directory) / "channel")
        async with EmbeddedStack(Path(directory) / "stack", settings={"ENVSTORE_CONDA_DEFAULT_CHANNELS": channel}) as stack:
            headers = {"Authorization": f"Bearer {stack.admin_token}"}
            async with aiohttp.ClientSession(stack.api_url, headers=headers) as http:
                cold = await timed_build(http, specification("cold", TINYJSON_VARIANTS[0]))
                fresh = [await timed_build(http, specification(f"fresh-{i}", TINYJSON_VARIANTS[i + 1]))
                         for i in range(min(runs, len(TINYJSON_VARIANTS) - 1))]
                repeat = [await timed_build(http, specification("repeat", TINYJSON_VARIANTS[0])) for _ in range(runs)]
                unsatisfiable = [
                    await timed_failure(http, f"name: conflict-{i}\ndependencies: [conflict-low, conflict-high]\n")
                    for i in range(runs)
                ]
    print("envstore build latency, 5-package environment, embedded stack on loopback")
    print(f"artifacts: {', '.join(sorted(ALL_ARTIFACTS))}")
    print(f"{'first build (empty package cache)':<44} COMPLETED {cold[0]:6.3f} s   all artifacts {cold[1]:6.3f} s")
    print(summary("fresh spec: submit -> COMPLETED", [c for c, _ in fresh]))
    print(summary("fresh spec: submit -> all artifacts", [a for _, a in fresh]))
    print(summary("identical resubmission: -> COMPLETED", [c for c, _ in repeat]))
    print(summary("identical resubmission: -> all artifacts", [a for _, a in repeat]))
    print(summary("unsatisfiable spec: submit -> FAILED", unsatisfiable))
    print("conda-store 2025.2.2 on this kind of machine (issue #2): ~6.5 s to COMPLETED, ~7.5 s to its artifacts")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    asyncio.run(main(parser.parse_args().runs))
    import os
    import sys
    sys.stdout.flush()
    os._exit(0)  # py-rattler teardown crash (TOOLING.md)
