"""A pip-heavy environment (python from conda, 20 wheels from a pip index), submit → every artifact,
against the floor measured in the same run: ``uv pip install`` of the same lock alone.

The wheels are made here (``envstore.common.demo_channel.wheel_index``: 20 pure-Python projects,
one application needing the 19 others, 0.2 to 2 MB of code each) and served as a simple index over
HTTP on loopback; the conda channel holds a python package made from this interpreter. Then:

1. envstore: an embedded stack (every service its own process, local storage), the specification
   submitted over HTTP, the build polled every 50 ms: the time from submit to each artifact
   (LOCKFILE, YAML, CONDA_PACK, CONSTRUCTOR_INSTALLER, DOCKER_MANIFEST, LOGS).
2. The floor: the build's own lockfile turned into a hashed requirements file (the locked wheel
   URLs), installed by ``uv pip install --no-deps --require-hashes`` into a copy of the environment's
   conda part, with an empty uv cache (envstore's first build downloads every wheel too); and again
   with uv's cache warm.

Prints the figures and the ratio; asserts nothing. Other work on the machine shares the CPU.

    .venv/bin/python bench/pip_environment.py
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import rattler

from envstore.common.demo_channel import make_channel
from envstore.common.demo_channel.wheel_index import WheelProject, build_wheels, serve_wheel_index
from envstore.common.settings import EnvstoreSettings, host_platform
from envstore.launcher.stack import EmbeddedStack
from envstore.solver.pip_resolution import uv_executable
from envstore.solver.virtual_packages import virtual_packages_for

POLL_SECONDS = 0.05
ALL_ARTIFACTS = (*EnvstoreSettings().build_artifacts, "LOGS")
MB = 1000 * 1000
LIBRARIES = tuple(
    WheelProject(f"envstore-bench-lib-{number:02}", "1.0", payload_bytes=200_000 + 100_000 * number) for number in range(19)
)
APPLICATION = WheelProject(
    "envstore-bench-app", "1.0", tuple(f"{library.name}>=1" for library in LIBRARIES), script="bench-app"
)


# The channel's python is this interpreter.
PYTHON = f"python {sys.version_info.major}.{sys.version_info.minor}.*"


def specification(index_url: str) -> str:
    return f"name: pip-heavy\ndependencies:\n  - {PYTHON}\n  - pip:\n    - --index-url {index_url}\n    - {APPLICATION.name}\n"


async def run_envstore(
    channel_url: str, index_url: str, directory: Path
) -> tuple[dict[str, float], float, dict, list[str]]:
    settings = {
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel_url,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel_url,
        "ENVSTORE_CHANNEL_ALLOWED_HOSTS": "127.0.0.1",
    }
    artifact_seconds: dict[str, float] = {}
    completed = 0.0
    async with EmbeddedStack(directory, settings=settings) as stack:
        headers = {"Authorization": f"Bearer {stack.admin_token}"}
        async with aiohttp.ClientSession(stack.api_url, headers=headers) as http:
            started = time.perf_counter()
            body = {"namespace": "bench", "specification": specification(index_url)}
            async with http.post("/api/v1/specification/", json=body) as response:
                build_id = (await response.json())["data"]["build_id"]
            while set(ALL_ARTIFACTS) - set(artifact_seconds) or not completed:
                async with http.get(f"/api/v1/build/{build_id}/") as response:
                    build = (await response.json())["data"]
                now = time.perf_counter() - started
                if build["status"] in ("FAILED", "CANCELED"):
                    raise RuntimeError(f"build {build_id} {build['status']}: {build['status_info']}")
                if build["status"] == "COMPLETED" and not completed:
                    completed = now
                for artifact in build["build_artifacts"]:
                    artifact_seconds.setdefault(artifact["artifact_type"], now)
                await asyncio.sleep(POLL_SECONDS)
            async with http.get(f"/api/v1/build/{build_id}/lockfile/") as response:
                lockfile = json.loads(await response.text())
            async with http.get(f"/api/v1/build/{build_id}/logs/") as response:
                phases = [line for line in (await response.text()).splitlines() if " ended in " in line]
    return artifact_seconds, completed, lockfile, phases


async def conda_part(channel_url: str, prefix: Path, cache: Path) -> None:
    platform = host_platform()
    gateway = rattler.Gateway(cache_dir=cache / "repodata")
    records = await rattler.solve(
        sources=[rattler.Channel(channel_url)],
        specs=[rattler.MatchSpec(PYTHON)],
        gateway=gateway,
        platforms=[platform, "noarch"],
        virtual_packages=virtual_packages_for(platform, platform),
    )
    await rattler.install(records, target_prefix=prefix, cache_dir=cache / "pkgs", show_progress=False)
    del records, gateway
    gc.collect()


def uv_install(requirements: Path, prefix: Path, cache: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            uv_executable(), "pip", "install", "--quiet", "--no-deps", "--require-hashes", "--no-config",
            "--python", str(prefix / "bin" / "python"), "-r", str(requirements),
        ],
        check=True,
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "UV_CACHE_DIR": str(cache)},
    )
    return time.perf_counter() - started


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="envstore-bench-pip-") as temporary:
        directory = Path(temporary)
        wheels = await build_wheels((*LIBRARIES, APPLICATION), directory / "wheels")
        wheel_bytes = sum(wheel.stat().st_size for wheel in wheels)
        channel_url = await make_channel(directory / "channel", host_python=True)
        async with serve_wheel_index(directory / "wheels") as index_url:
            artifact_seconds, completed, lockfile, phases = await run_envstore(channel_url, index_url, directory / "stack")
            pip_entries = [entry for entry in lockfile["package"] if entry["manager"] == "pip"]
            requirements = directory / "requirements.txt"
            requirements.write_text(
                "".join(f"{entry['name']} @ {entry['url']} --hash=sha256:{entry['hash']['sha256']}\n" for entry in pip_entries)
            )
            floors = []
            # Two installs with an empty uv cache each, then one from the second one's cache.
            for run, (cache, uv_cache) in enumerate((("cold", "uv-cache-0"), ("cold", "uv-cache-1"), ("warm", "uv-cache-1"))):
                prefix = directory / f"floor-{run}"
                await conda_part(channel_url, prefix, directory / "floor-conda-cache")
                floors.append((cache, await asyncio.to_thread(uv_install, requirements, prefix, directory / uv_cache)))
    last = max(artifact_seconds.values())
    cold = min(seconds for cache, seconds in floors if cache == "cold")
    warm = next(seconds for cache, seconds in floors if cache == "warm")
    print(f"pip-heavy environment: python (conda) + {len(pip_entries)} wheels, {wheel_bytes / MB:.1f} MB of wheels "
          f"({os.cpu_count()} cores, shared with other work)")
    print("envstore, submit ->")
    for kind, seconds in sorted(artifact_seconds.items(), key=lambda item: item[1]):
        print(f"  {kind:<24} {seconds:7.3f} s")
    print(f"  {'COMPLETED':<24} {completed:7.3f} s")
    print("  phases (the build's log):")
    for line in phases:
        print("   ", line.split("] ", 1)[-1])
    print("floor: uv pip install --no-deps --require-hashes of the same lock")
    print(f"  empty uv cache (best of 2)  {cold:7.3f} s")
    print(f"  warm uv cache               {warm:7.3f} s")
    print(f"ratio: every artifact / floor = {last / cold:.2f}x (empty cache), {last / warm:.2f}x (warm cache)")


if __name__ == "__main__":
    asyncio.run(main())
    os._exit(0)  # rattler 0.28 may crash at interpreter exit (see TOOLING.md)
