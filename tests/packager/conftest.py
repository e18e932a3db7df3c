"""A real build for the packager's producers: the five-package environment solved by rattler from the
offline demo channel and installed by the builder's own code, as the pipeline does before packaging."""

from __future__ import annotations

import gc
import hashlib
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import rattler

from envstore.common.prefix_install import install_prefix
from envstore.common.build_keys import build_key
from envstore.common.demo_channel import FIVE_PACKAGE_SPEC
from envstore.common.events import BuildBuilt, BuildRef, BuildSubmitted
from envstore.common.lock import Lock, locked_package_from_record
from envstore.common.settings import EnvstoreSettings, host_platform
from envstore.common.storage import LocalStorage
from envstore.packager.artifacts.inputs import BuildInputs
from envstore.solver.virtual_packages import virtual_packages_for

NAMESPACE = "packaging"
ENVIRONMENT = "five"

BuildFactory = Callable[[Path], Awaitable[BuildInputs]]


async def solve_five_packages(channel_url: str, repodata_cache: Path) -> Lock:
    platform = host_platform()
    gateway = rattler.Gateway(cache_dir=repodata_cache)
    records = await rattler.solve(
        sources=[rattler.Channel(channel_url)],
        specs=list(FIVE_PACKAGE_SPEC),
        gateway=gateway,
        platforms=[platform, "noarch"],
        virtual_packages=virtual_packages_for(platform, platform),
    )
    lock = Lock(channels=[channel_url], platforms={platform: [locked_package_from_record(r) for r in records]})
    # rattler 0.28 may crash at interpreter exit while its objects are still alive.
    del records, gateway
    gc.collect()
    return lock


async def installed_build(channel_url: str, root: Path, build_id: int = 1) -> BuildInputs:
    """The five-package build installed under ``root`` (its own data directory, package cache and
    storage), and the inputs the packager gives each producer for it."""
    settings = EnvstoreSettings(data_dir=root)
    storage = LocalStorage(settings.storage_root)
    lock = await solve_five_packages(channel_url, settings.cache_root / "repodata")
    specification = {"name": ENVIRONMENT, "channels": [channel_url], "dependencies": list(FIVE_PACKAGE_SPEC)}
    spec_sha256 = hashlib.sha256(repr(specification).encode()).hexdigest()
    scheduled_on = time.time()
    key = build_key(2, spec_sha256, scheduled_on, build_id, ENVIRONMENT, NAMESPACE)
    platform = host_platform()
    prefix = settings.environments_root / NAMESPACE / key
    await install_prefix(lock.platforms[platform], prefix, settings.package_cache, platform)
    gc.collect()
    build = BuildRef(
        build_id=build_id, namespace=NAMESPACE, environment=ENVIRONMENT, build_key=key, spec_sha256=spec_sha256,
        platforms=[platform],
    )
    submitted = BuildSubmitted(
        namespace=NAMESPACE, environment=ENVIRONMENT, specification=specification, spec_sha256=spec_sha256,
        platforms=[platform], artifacts=[], scheduled_on=scheduled_on,
    )
    built = BuildBuilt(
        build=build, lock=await storage.put_bytes(lock.encode()), prefix=str(prefix), size_bytes=0,
        package_count=len(lock.platforms[platform]), install_seconds=0.0,
    )
    work_directory = root / "work"
    work_directory.mkdir()
    return BuildInputs(built, submitted, lock, storage, settings, work_directory)


@pytest.fixture
async def five_package_build(channel_url: str, tmp_path: Path) -> BuildInputs:
    return await installed_build(channel_url, tmp_path / "data")


def run(command: list[str | Path], **options) -> str:  # type: ignore[no-untyped-def]
    """A command's standard output; fails the test with its standard error."""
    completed = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=60, check=False, **options
    )
    assert completed.returncode == 0, f"{command} exited {completed.returncode}: {completed.stderr}"
    return completed.stdout


def refused(command: list[str | Path]) -> str:
    """The standard error of a command that must fail."""
    completed = subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode != 0, f"{command} succeeded: {completed.stdout}"
    return completed.stderr
