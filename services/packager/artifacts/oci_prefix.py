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

from envstore.common.lock import LockedPackage, record_from_locked_package
from envstore.packager.artifacts.oci_layers import LayerEntry, entry_from_disk

CONDA_META = "conda-meta"
# Written by rattler into the staging directory itself, not part of any environment.
STAGING_ONLY_FILES = frozenset({"CACHEDIR.TAG"})


@dataclass(frozen=True)
class PackageFiles:
    """One package's files in the staged prefix."""

    package: LockedPackage
    paths: tuple[str, ...]  # relative to the prefix, as its conda-meta record lists them
    size: int  # bytes on disk

    @property
    def name(self) -> str:
        return self.package.name

    @property
    def label(self) -> str:
        return self.package.pin


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
            entry_from_disk(self.path_in_image(relative), self.root / relative)
            for package in packages
            for relative in package.paths
            if os.path.lexists(self.root / relative)
        ]


async def stage_environment(
    packages: list[LockedPackage], platform: str, image_prefix: str, staging: Path, package_cache: Path
) -> StagedEnvironment:
    await rattler.install(
        [record_from_locked_package(package) for package in packages],
        target_prefix=staging,
        cache_dir=package_cache,
        platform=rattler.Subdir(platform),
        alternative_target_prefix=image_prefix,
        execute_link_scripts=False,
        show_progress=False,
    )
    return await asyncio.to_thread(split_by_package, staging, image_prefix, packages)


def split_by_package(staging: Path, image_prefix: str, packages: list[LockedPackage]) -> StagedEnvironment:
    """Blocking (reads every conda-meta record and stats every file): call it in a thread."""
    by_pin = {(package.name, package.version, package.build): package for package in packages}
    owned: set[str] = set()
    split: list[PackageFiles] = []
    for record_path in sorted((staging / CONDA_META).glob("*.json")):
        record = json.loads(record_path.read_text())
        package = by_pin.get((record["name"], record["version"], record["build"]))
        if package is None:
            raise RuntimeError(f"the staged prefix holds {record_path.name}, which is not in the lock")
        paths = tuple(sorted(record.get("files", [])))
        owned.update(paths)
        split.append(PackageFiles(package, paths, sum(_size(staging / path) for path in paths)))
    missing = sorted(set(by_pin) - {(p.package.name, p.package.version, p.package.build) for p in split})
    if missing:
        raise RuntimeError(f"rattler did not link {missing} into the staging prefix")
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
