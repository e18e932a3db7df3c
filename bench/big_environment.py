"""A real-size environment, submit → every artifact, against the floor of the same libraries alone,
measured in the same run (issue 19, goal 1).

The channel is made here (``envstore.common.demo_channel.big_channel``): ~120 packages, ~290 MB of
packages, ~700 MB installed, many small files, big libraries with binary prefix placeholders,
scripts with text ones. Then:

1. envstore: an embedded stack (NATS, PostgreSQL, every service its own process, local storage),
   the environment submitted over HTTP, the build polled every 50 ms: the time from submit to
   each artifact, and the peak resident memory (VmHWM) of every service process.
2. The floor, with the libraries alone and an empty package cache: rattler solve and install,
   conda-pack to .tar.gz (its defaults), and gzip (level 6) of one tar of the prefix, one after
   the other.

Prints the figures and the ratio; asserts nothing. Other work on the machine shares the CPU.

    .venv/bin/python bench/big_environment.py [--channel DIR] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import conda_pack
import rattler

from envstore.common.demo_channel.big_channel import (
    BigChannel,
    BigChannelShape,
    make_big_channel,
    plan_packages,
    top_level_specs,
)
from envstore.common.settings import EnvstoreSettings, host_platform
from envstore.launcher.stack import EmbeddedStack
from envstore.solver.virtual_packages import virtual_packages_for

POLL_SECONDS = 0.05
ALL_ARTIFACTS = (*EnvstoreSettings().build_artifacts, "LOGS")
MB = 1000 * 1000


@dataclass
class EnvstoreRun:
    artifact_seconds: dict[str, float] = field(default_factory=dict)
    completed_seconds: float = 0.0
    peak_rss_bytes: dict[str, int] = field(default_factory=dict)
    cpu_seconds: float = 0.0  # of every service process, from submit to the last artifact
    artifact_bytes: dict[str, int] = field(default_factory=dict)
    log: str = ""


@dataclass
class FloorRun:
    solve_install_seconds: float
    pack_seconds: float
    layer_gzip_seconds: float
    pack_bytes: int
    layer_bytes: int
    cpu_seconds: float  # of this process (rattler's, conda-pack's and gzip's threads)

    @property
    def total_seconds(self) -> float:
        return self.solve_install_seconds + self.pack_seconds + self.layer_gzip_seconds


def specification(channel: BigChannel) -> str:
    return "name: big\ndependencies:\n" + "".join(f"  - {spec}\n" for spec in channel.specs)


def cpu_seconds(pid: int) -> float:
    """User + system time of a process, all its threads, so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_bytes(pid: int) -> int:
    """The process's resident high-water mark (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


async def run_envstore(channel: BigChannel, directory: Path) -> EnvstoreRun:
    settings = {"ENVSTORE_CONDA_DEFAULT_CHANNELS": channel.url, "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel.url}
    result = EnvstoreRun()
    async with EmbeddedStack(directory, settings=settings) as stack:
        headers = {"Authorization": f"Bearer {stack.admin_token}"}
        async with aiohttp.ClientSession(stack.api_url, headers=headers) as http:
            cpu_before = sum(cpu_seconds(child.pid) for child in stack.services.values())
            started = time.perf_counter()
            body = {"namespace": "bench", "specification": specification(channel)}
            async with http.post("/api/v1/specification/", json=body) as response:
                build_id = (await response.json())["data"]["build_id"]
            while set(ALL_ARTIFACTS) - set(result.artifact_seconds) or not result.completed_seconds:
                async with http.get(f"/api/v1/build/{build_id}/") as response:
                    build = (await response.json())["data"]
                now = time.perf_counter() - started
                if build["status"] in ("FAILED", "CANCELED"):
                    raise RuntimeError(f"build {build_id} {build['status']}: {build['status_info']}")
                if build["status"] == "COMPLETED" and not result.completed_seconds:
                    result.completed_seconds = now
                for artifact in build["build_artifacts"]:
                    result.artifact_seconds.setdefault(artifact["artifact_type"], now)
                await asyncio.sleep(POLL_SECONDS)
            result.cpu_seconds = sum(cpu_seconds(child.pid) for child in stack.services.values()) - cpu_before
            result.peak_rss_bytes = {name: peak_rss_bytes(child.pid) for name, child in stack.services.items()}
            async with http.get(f"/api/v1/build/{build_id}/logs/") as response:
                result.log = await response.text()
        storage = directory / "storage"
        for route, kind in (("archive", "CONDA_PACK"), ("installer", "CONSTRUCTOR_INSTALLER")):
            names = list((storage / "names" / route).glob("*"))
            if names:
                digest = names[0].read_text().split()[0].removeprefix("sha256:")
                result.artifact_bytes[kind] = (storage / "blobs" / "sha256" / digest).stat().st_size
        layers = storage / "names" / "docker" / "layers"
        if layers.exists():
            result.artifact_bytes["DOCKER_MANIFEST layers"] = sum(
                (storage / "blobs" / "sha256" / name.read_text().split()[0].removeprefix("sha256:")).stat().st_size
                for name in layers.iterdir()
            )
    return result


async def run_floor(channel: BigChannel, directory: Path) -> FloorRun:
    """The libraries alone, one step after the other, from an empty package cache."""
    platform = host_platform()
    prefix = directory / "prefix"
    cpu_started = time.process_time()
    started = time.perf_counter()
    gateway = rattler.Gateway(cache_dir=directory / "repodata")
    records = await rattler.solve(
        sources=[rattler.Channel(channel.url)],
        specs=list(channel.specs),
        gateway=gateway,
        platforms=[platform, "noarch"],
        virtual_packages=virtual_packages_for(platform, platform),
    )
    await rattler.install(records, target_prefix=prefix, cache_dir=directory / "pkgs", show_progress=False)
    installed = time.perf_counter()
    del records, gateway
    gc.collect()
    archive = directory / "environment.tar.gz"
    await asyncio.to_thread(conda_pack.pack, prefix=str(prefix), output=str(archive), force=True)
    packed = time.perf_counter()
    layer = directory / "layer.tar.gz"

    def tar_and_gzip() -> None:
        with tarfile.open(layer, "w:gz", compresslevel=6) as tar:
            tar.add(prefix, arcname="opt/conda")

    await asyncio.to_thread(tar_and_gzip)
    gzipped = time.perf_counter()
    return FloorRun(
        installed - started,
        packed - installed,
        gzipped - packed,
        archive.stat().st_size,
        layer.stat().st_size,
        time.process_time() - cpu_started,
    )


def phase_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if " ended in " in line or " failed after " in line]


def report(channel: BigChannel, envstore: EnvstoreRun, floor: FloorRun) -> None:
    last = max(envstore.artifact_seconds.values())
    print(f"big environment: {channel.package_count} packages, {channel.package_bytes / MB:.0f} MB of packages, "
          f"{channel.installed_bytes / MB:.0f} MB installed ({os.cpu_count()} cores, shared with other work)")
    print("envstore, submit ->")
    for kind, seconds in sorted(envstore.artifact_seconds.items(), key=lambda item: item[1]):
        size = envstore.artifact_bytes.get(kind)
        print(f"  {kind:<24} {seconds:7.2f} s" + (f"   {size / MB:7.1f} MB" if size else ""))
    print(f"  {'COMPLETED':<24} {envstore.completed_seconds:7.2f} s")
    if "DOCKER_MANIFEST layers" in envstore.artifact_bytes:
        print(f"  image layers in storage:  {envstore.artifact_bytes['DOCKER_MANIFEST layers'] / MB:.1f} MB")
    print(f"  every artifact           {last:7.2f} s")
    print("floor (libraries alone, one after the other):")
    print(f"  rattler solve + install (empty cache)   {floor.solve_install_seconds:7.2f} s")
    print(f"  conda-pack to .tar.gz                   {floor.pack_seconds:7.2f} s   {floor.pack_bytes / MB:7.1f} MB")
    print(f"  gzip -6 of one tar of the prefix        {floor.layer_gzip_seconds:7.2f} s   {floor.layer_bytes / MB:7.1f} MB")
    print(f"  floor                                   {floor.total_seconds:7.2f} s")
    print(f"ratio: every artifact / floor = {last / floor.total_seconds:.2f}x   "
          f"(first artifact after the lock: {min(s for k, s in envstore.artifact_seconds.items() if k not in ('LOCKFILE', 'YAML')) / floor.total_seconds:.2f}x)")
    print(f"CPU time: envstore's services {envstore.cpu_seconds:.1f} s, the floor {floor.cpu_seconds:.1f} s "
          f"({envstore.cpu_seconds / floor.cpu_seconds:.2f}x; less sensitive than wall times to other work on the machine)")
    print("peak RSS (VmHWM) per service:")
    for name, peak in envstore.peak_rss_bytes.items():
        print(f"  {name:<14} {peak / MB:7.1f} MB")
    print("phases (from the build's log):")
    for line in phase_lines(envstore.log):
        print("  " + line.split(" ", 2)[2])


def existing_channel(directory: Path, shape: BigChannelShape) -> BigChannel:
    """The channel a previous run wrote into ``directory`` (saves its writing time between runs)."""
    plans = plan_packages(shape)
    archives = [path for path in directory.glob("*/*") if path.name.endswith((".conda", ".tar.bz2"))]
    if len(archives) != len(plans):
        raise RuntimeError(f"{directory} holds {len(archives)} packages, not the {len(plans)} of the big channel")
    return BigChannel(
        url=directory.resolve().as_uri(),
        specs=top_level_specs(plans),
        package_count=len(plans),
        installed_bytes=sum(plan.size for plan in plans),
        package_bytes=sum(path.stat().st_size for path in archives),
    )


async def main(channel_directory: Path | None, keep: Path | None, floor_first: bool) -> None:
    root = Path(tempfile.mkdtemp(prefix="envstore-big-", dir=keep))
    shape = BigChannelShape()
    try:
        started = time.perf_counter()
        if channel_directory is not None and (channel_directory / "noarch" / "repodata.json").exists():
            channel = existing_channel(channel_directory, shape)
            print(f"channel reused from {channel_directory}")
        else:
            channel = await make_big_channel(channel_directory or root / "channel", shape)
            print(f"channel written and indexed in {time.perf_counter() - started:.1f} s")
        if floor_first:
            floor = await run_floor(channel, root / "floor")
            envstore = await run_envstore(channel, root / "stack")
        else:
            envstore = await run_envstore(channel, root / "stack")
            floor = await run_floor(channel, root / "floor")
        report(channel, envstore, floor)
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--channel", type=Path, help="write the channel here, or reuse the one written there (default: a temporary directory)"
    )
    parser.add_argument("--keep", type=Path, help="keep the stack's and the floor's data under this directory")
    parser.add_argument("--floor-first", action="store_true", help="measure the floor before envstore")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.channel, arguments.keep, arguments.floor_first))
    sys.stdout.flush()
    os._exit(0)  # py-rattler teardown crash (TOOLING.md)
