"""The build's prefix packed once with conda-pack, shared by every artifact that carries it (the
CONDA_PACK tarball and the shell installer's payload).

conda-pack reads a rattler-installed prefix like a conda one (``conda-meta/*.json`` with ``files``
and ``link.source``), but it takes every managed file from the *package cache*, not from the
prefix: only the cached originals still hold the build-time placeholder that ``conda-unpack``
rewrites. Without them it falls back to the installed files and cannot relocate binary prefixes,
so a missing cache entry is restored from the lock (rattler fetches and checks it) before packing.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import conda_pack
import rattler

from envstore.common.lock import record_from_locked_package
from envstore.packager.artifacts.inputs import BuildInputs

# rattler tags the prefixes it creates as cache directories; backup tools and `tar --exclude-caches`
# would then skip the user's unpacked environment, so it stays out of the archive.
NOT_PACKED = ("CACHEDIR.TAG",)


async def packed_environment(inputs: BuildInputs) -> Path:
    """The path of the build's conda-pack archive in the build's work directory, packed on first use.

    Producers run concurrently on the same build: the first one packs, the others wait for it.
    """
    archive = inputs.work_directory / f"{inputs.build.build_key}.tar.gz"
    async with _held_exclusively(inputs.work_directory / "packed-environment.lock"):
        if not archive.exists():
            await restore_package_cache(inputs)
            await asyncio.to_thread(pack_prefix, inputs.prefix, archive)
    return archive


def pack_prefix(prefix: Path, archive: Path) -> None:
    partial = archive.with_name(f"partial-{archive.name}")
    # "raise": packing files whose cached original is gone would silently break binary relocation.
    environment = conda_pack.CondaEnv.from_prefix(str(prefix), on_missing_cache="raise")
    for pattern in NOT_PACKED:
        environment = environment.exclude(pattern)
    environment.pack(output=str(partial), format="tar.gz", force=True)
    # The existence of `archive` means "packed": it appears whole or not at all.
    os.replace(partial, archive)


async def restore_package_cache(inputs: BuildInputs) -> None:
    """Puts back, from the lock, the extracted packages that conda-pack needs and the cache lost."""
    missing_urls = await asyncio.to_thread(packages_missing_from_cache, inputs.prefix)
    if not missing_urls:
        return
    packages = [package for package in inputs.lock.packages_for(inputs.platform) if package.url in missing_urls]
    # Installing into a throwaway prefix is rattler's way to fetch, verify and extract into its cache,
    # under its own cache locks (a builder may be using the same cache right now).
    await rattler.install(
        [record_from_locked_package(package) for package in packages],
        target_prefix=inputs.work_directory / "package-cache-restore",
        cache_dir=inputs.settings.package_cache,
        platform=rattler.Subdir(inputs.platform),
        show_progress=False,
        execute_link_scripts=False,
    )
    still_missing = await asyncio.to_thread(packages_missing_from_cache, inputs.prefix)
    if still_missing:
        raise RuntimeError(
            f"cannot pack {inputs.prefix}: the package cache has no extracted copy of {sorted(still_missing)} "
            f"and restoring them into {inputs.settings.package_cache} did not help; the prefix was installed "
            "from another package cache (rebuild the environment to pack it)"
        )


def packages_missing_from_cache(prefix: Path) -> set[str]:
    """URLs of the prefix's packages whose extracted directory (``link.source``) is gone."""
    missing = set()
    for record_path in (prefix / "conda-meta").glob("*.json"):
        record = json.loads(record_path.read_text())
        source = (record.get("link") or {}).get("source") or record.get("extracted_package_dir")
        if not source or not (Path(source) / "info" / "index.json").exists():
            missing.add(record["url"])
    return missing


@contextlib.asynccontextmanager
async def _held_exclusively(lock_path: Path) -> AsyncIterator[None]:
    # flock: two opens of the same file conflict even inside one process, so this serializes the
    # producers of a build with no shared object between them; closing the file releases it.
    lock_file = await asyncio.to_thread(open, lock_path, "w")
    try:
        await asyncio.to_thread(fcntl.flock, lock_file.fileno(), fcntl.LOCK_EX)
        yield
    finally:
        lock_file.close()
