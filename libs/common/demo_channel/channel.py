"""Writes the whole demo channel to a directory and indexes it with rattler."""

from __future__ import annotations

import asyncio
import json
import pathlib
from collections.abc import Iterable

import rattler.index

from envstore.common.settings import host_platform

from .catalogue import (
    BUILD_TIMESTAMP_SECONDS,
    CATALOGUE,
    NOARCH_SUBDIR,
    PLATFORM_SUBDIRS,
    PackageDefinition,
)
from .host_python import host_python_package
from .package_writer import write_package


async def make_channel(directory: pathlib.Path, host_python: bool = False) -> str:
    """Builds every catalogue package into `directory/<subdir>/`, indexes it, returns its file:// URL.

    The result is byte-for-byte the same on every run. Existing packages of the same name are
    overwritten and the index is rebuilt. With ``host_python``, the channel also holds a ``python``
    package for the host's platform made from the running interpreter (``host_python``), for
    environments with pip dependencies.
    """
    directory = pathlib.Path(directory).resolve()
    packages = list(CATALOGUE)
    if host_python:
        packages.append(await asyncio.to_thread(host_python_package, host_platform()))
    # One worker thread on purpose: writing .conda files changes the process's working directory.
    await asyncio.to_thread(write_packages, packages, directory)
    await rattler.index.index_fs(directory, write_zst=False, write_shards=False, force=True)
    await asyncio.to_thread(pin_indexed_timestamps, directory)
    return directory.as_uri()


def write_packages(packages: Iterable[PackageDefinition], directory: pathlib.Path) -> list[pathlib.Path]:
    # rattler's indexer requires noarch/ even when no package lives there.
    for subdir in (NOARCH_SUBDIR, *PLATFORM_SUBDIRS):
        (directory / subdir).mkdir(parents=True, exist_ok=True)
    return [
        write_package(package, archive_format, directory / package.subdir)
        for package in packages
        for archive_format in package.formats
    ]


def pin_indexed_timestamps(directory: pathlib.Path) -> None:
    """Replaces the indexer's wall-clock `indexed_timestamp` by the fixed build time.

    Keeps repodata.json reproducible, and `exclude_newer` solves independent of when the channel was made.
    """
    for repodata_path in sorted(directory.glob("*/repodata.json")):
        repodata = json.loads(repodata_path.read_text())
        for packages_key in ("packages", "packages.conda"):
            for record in repodata.get(packages_key, {}).values():
                if "indexed_timestamp" in record:
                    record["indexed_timestamp"] = BUILD_TIMESTAMP_SECONDS * 1000
        repodata_path.write_text(json.dumps(repodata, separators=(",", ":")))
