"""The environment as an image holds it: every package of the lock linked for the in-image prefix
(``/opt/conda``) into a staging directory, then split back into each package's files.

One rattler install links the whole environment (in parallel, hard-linking from the package cache,
relocating text and binary prefix placeholders to the image prefix with
``alternative_target_prefix``); each package's ``conda-meta`` record says which of the staged
files are its own. That is one install instead of one per package, and noarch python packages land
where the environment's python expects them, as in a real install.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from pathlib import Path

import rattler

from envstore.common.lock import Lock, LockedPackage, record_from_locked_package
from envstore.common.wheel_install import InstalledWheel, install_pip_packages
from envstore.packager.artifacts.oci_layers import FIXED_MTIME, LayerEntry, entry_from_disk

CONDA_META = "conda-meta"
# Written by rattler into the staging directory itself, not part of any environment.
STAGING_ONLY_FILES = frozenset({"CACHEDIR.TAG"})


@dataclass(frozen=True)
class PackageFiles:
    """One package's files in the staged prefix (a conda package, or a pip package's wheel)."""

    name: str  # orders and groups layers: the conda name, ``pypi:<name>`` for a pip package
    label: str  # what the image's history says: ``hello=2.1=h…_0``, ``pypi:alpha==1.0``
    paths: tuple[str, ...]  # relative to the prefix, as its conda-meta record (or RECORD) lists them
    size: int  # bytes on disk
    # The files' mtime in the layer: None keeps each file's own (rattler gives a conda package's
    # files the mtimes of its archive); a wheel's files were just written, so they get a fixed one.
    mtime: int | None = None


@dataclass(frozen=True)
class StagedEnvironment:
    root: Path  # the staging directory: its content lives at ``image_prefix`` in the image
    image_prefix: str  # "/opt/conda"
    packages: tuple[PackageFiles, ...]
    unowned: tuple[str, ...]  # files no package lists: conda-meta records, history …

    def path_in_image(self, relative: str) -> str:
        return f"{self.image_prefix.strip('/')}/{relative}"

    def entries_of(self, packages: tuple[PackageFiles, ...]) -> list[LayerEntry]:
        """The layer entries of these packages' files, with the mtimes their archives gave them."""
        return [
            entry_from_disk(self.path_in_image(relative), self.root / relative, package.mtime)
            for package in packages
            for relative in package.paths
            if os.path.lexists(self.root / relative)
        ]


async def stage_environment(
    lock: Lock, platform: str, image_prefix: str, staging: Path, package_cache: Path
) -> StagedEnvironment:
    packages = lock.packages_for(platform)
    await rattler.install(
        [record_from_locked_package(package) for package in packages],
        target_prefix=staging,
        cache_dir=package_cache,
        platform=rattler.Subdir(platform),
        alternative_target_prefix=image_prefix,
        execute_link_scripts=False,
        show_progress=False,
    )
    wheels: list[InstalledWheel] = []
    python_version = lock.python_version_for(platform)
    if lock.pip_packages_for(platform) and python_version is not None:
        # Written into the staging directory, their scripts' #! lines naming the image's python.
        wheels = await install_pip_packages(
            lock.pip_packages_for(platform), staging, python_version, image_prefix, platform, package_cache
        )
    return await asyncio.to_thread(split_by_package, staging, image_prefix, packages, wheels)


def split_by_package(
    staging: Path, image_prefix: str, packages: list[LockedPackage], wheels: tuple[InstalledWheel, ...] | list[InstalledWheel] = ()
) -> StagedEnvironment:
    """Blocking (reads every conda-meta record and stats every file): call it in a thread."""
    by_pin = {(package.name, package.version, package.build): package for package in packages}
    owned: set[str] = set()
    linked: set[tuple[str, str, str]] = set()
    split: list[PackageFiles] = []
    for record_path in sorted((staging / CONDA_META).glob("*.json")):
        record = json.loads(record_path.read_text())
        package = by_pin.get((record["name"], record["version"], record["build"]))
        if package is None:
            raise RuntimeError(f"the staged prefix holds {record_path.name}, which is not in the lock")
        paths = tuple(sorted(record.get("files", [])))
        owned.update(paths)
        split.append(PackageFiles(package.name, package.pin, paths, sum(_size(staging / path) for path in paths)))
        linked.add((package.name, package.version, package.build))
    missing = sorted(set(by_pin) - linked)
    if missing:
        raise RuntimeError(f"rattler did not link {missing} into the staging prefix")
    for wheel in wheels:
        owned.update(wheel.paths)
        split.append(
            PackageFiles(
                f"pypi:{wheel.package.name}",
                f"pypi:{wheel.package.pin}",
                wheel.paths,
                sum(_size(staging / path) for path in wheel.paths),
                mtime=FIXED_MTIME,
            )
        )
    unowned = []
    for directory, _, files in os.walk(staging):
        for name in files:
            relative = os.path.relpath(os.path.join(directory, name), staging)
            if relative not in owned and relative not in STAGING_ONLY_FILES:
                unowned.append(relative)
    return StagedEnvironment(staging, image_prefix, tuple(split), tuple(sorted(unowned)))


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except FileNotFoundError:
        return 0
