"""Garbage collection of storage blobs and package-cache entries no live build references.

Mark, from the read model: every artifact's blob (an image manifest's configuration and layers
too), every build's lock and stored specification — archived and deleted builds keep their lock,
logs, lockfile and YAML. Sweep: what is not marked and was neither written nor reused within the
grace period (``gc_grace_seconds``). Builds running meanwhile are safe: what they write is young,
and what they reuse of older blobs they touch first (``Storage.touch_blob``; the put methods do
it), so it is young again; a blob is deleted only if it is still old at the moment of deletion.

The package cache (``settings.package_cache``, ``pkgs/<name>-<version>-<build>``) is swept the same
way against every live build's lock; an entry the installer holds locked is left alone.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from envstore.api import database
from envstore.common.lock import Lock
from envstore.common.settings import EnvstoreSettings
from envstore.common.oci_media_types import DOCKER_MANIFEST, OCI_IMAGE_INDEX, OCI_IMAGE_MANIFEST
from envstore.common.storage import Storage, open_storage

MANIFEST_TYPES = (OCI_IMAGE_MANIFEST, OCI_IMAGE_INDEX, DOCKER_MANIFEST)
ARCHIVE_SUFFIXES = (".conda", ".tar.bz2")
# Blobs deleted per storage call (one thread hop locally, concurrent deletes on S3).
DELETE_BATCH = 256


@dataclass
class Collected:
    name: str  # a blob's digest, or a package-cache entry's name
    size: int


@dataclass
class CollectionReport:
    dry_run: bool
    grace_seconds: float
    marked_blobs: int = 0
    blobs: list[Collected] = field(default_factory=list)
    package_cache_entries: list[Collected] = field(default_factory=list)
    kept_young: int = 0  # unreferenced, but written or reused within the grace period
    seconds: float = 0.0

    @property
    def blob_bytes(self) -> int:
        return sum(item.size for item in self.blobs)

    @property
    def package_cache_bytes(self) -> int:
        return sum(item.size for item in self.package_cache_entries)

    def summary(self) -> str:
        verb = "would free" if self.dry_run else "freed"
        lines = [f"{'would collect' if self.dry_run else 'collected'}: {item.name} ({item.size} bytes)" for item in self.blobs]
        lines += [f"{'would collect' if self.dry_run else 'collected'}: package cache {item.name} ({item.size} bytes)" for item in self.package_cache_entries]
        lines.append(
            f"{len(self.blobs)} blobs ({self.blob_bytes} bytes) and {len(self.package_cache_entries)} package-cache entries "
            f"({self.package_cache_bytes} bytes): {verb} {self.blob_bytes + self.package_cache_bytes} bytes in {self.seconds:.2f} s; "
            f"{self.marked_blobs} blobs referenced, {self.kept_young} unreferenced but within the {self.grace_seconds:g} s grace"
        )
        return "\n".join(lines)

    def document(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "grace_seconds": self.grace_seconds,
            "marked_blobs": self.marked_blobs,
            "kept_young": self.kept_young,
            "blobs": [{"digest": item.name, "size": item.size} for item in self.blobs],
            "blob_bytes": self.blob_bytes,
            "package_cache_entries": [{"name": item.name, "size": item.size} for item in self.package_cache_entries],
            "package_cache_bytes": self.package_cache_bytes,
            "bytes_freed": 0 if self.dry_run else self.blob_bytes + self.package_cache_bytes,
            "seconds": round(self.seconds, 3),
        }


async def marked_blobs(pool: asyncpg.Pool, storage: Storage) -> set[str]:
    marked: set[str] = set()
    artifacts = await pool.fetch(
        # A multi-platform build's further platforms' tarballs and installers are artifacts too.
        "SELECT digest, content_type FROM build_artifact UNION SELECT digest, content_type FROM build_platform_artifact"
    )
    for row in artifacts:
        marked.add(row["digest"])
        if row["content_type"] in MANIFEST_TYPES:
            marked.update(await _manifest_references(storage, row["digest"]))
    for row in await pool.fetch("SELECT lock_digest, specification_blob_digest FROM build"):
        marked.update(digest for digest in (row["lock_digest"], row["specification_blob_digest"]) if digest)
    return marked


async def _manifest_references(storage: Storage, digest: str) -> set[str]:
    """What an image manifest references (configuration, layers), or an image index (its images
    and theirs)."""
    try:
        manifest = json.loads(await storage.get_bytes(digest))
    except FileNotFoundError:
        return set()
    found = {
        descriptor["digest"]
        for descriptor in [manifest.get("config", {}), *manifest.get("layers", [])]
        if "digest" in descriptor
    }
    for child in manifest.get("manifests", []):
        if "digest" in child:
            found.add(child["digest"])
            found |= await _manifest_references(storage, child["digest"])
    return found


async def live_package_entries(pool: asyncpg.Pool, storage: Storage) -> set[str]:
    """The package-cache entry names every build that is not deleted may install (its lock's files)."""
    names: set[str] = set()
    for row in await pool.fetch("SELECT DISTINCT lock_digest FROM build WHERE lock_digest IS NOT NULL AND deleted_on IS NULL"):
        try:
            lock = Lock.decode(await storage.get_bytes(row["lock_digest"]))
        except FileNotFoundError:
            continue
        for packages in lock.platforms.values():
            for package in packages:
                names.add(_entry_name(package.file_name))
    return names


def _entry_name(file_name: str) -> str:
    for suffix in ARCHIVE_SUFFIXES:
        if file_name.endswith(suffix):
            return file_name.removesuffix(suffix)
    return file_name


async def collect_garbage(
    pool: asyncpg.Pool, storage: Storage, package_cache: Path, grace_seconds: float, dry_run: bool
) -> CollectionReport:
    started = time.time()
    # Anything written or reused after this instant (minus the grace) is left alone: marking
    # first, then listing, means a blob referenced after the mark is young or was touched.
    touched_before = started - grace_seconds
    report = CollectionReport(dry_run, grace_seconds)
    marked = await marked_blobs(pool, storage)
    report.marked_blobs = len(marked)
    old = []
    async for blob in storage.blob_inventory():
        if blob.digest in marked:
            continue
        if blob.modified_at >= touched_before:
            report.kept_young += 1
            continue
        old.append(blob)
    if dry_run:
        report.blobs = [Collected(blob.digest, blob.size) for blob in old]
    else:
        for start in range(0, len(old), DELETE_BATCH):
            batch = [blob.digest for blob in old[start : start + DELETE_BATCH]]
            freed = await storage.delete_blobs_unless_touched(batch, touched_before)
            report.blobs += [Collected(digest, size) for digest, size in freed.items()]
            report.kept_young += len(batch) - len(freed)  # touched since the listing
    live = await live_package_entries(pool, storage)
    report.package_cache_entries = await asyncio.to_thread(
        _sweep_package_cache, package_cache, live, touched_before, dry_run
    )
    report.seconds = time.time() - started
    return report


def _tree_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total


def _sweep_package_cache(package_cache: Path, live: set[str], touched_before: float, dry_run: bool) -> list[Collected]:
    if not package_cache.is_dir():
        return []
    collected = []
    for entry in sorted(package_cache.iterdir()):
        if entry.name.startswith(".") or entry.suffix == ".lock" or entry.name in live or not entry.is_dir():
            continue
        if entry.stat().st_mtime >= touched_before:
            continue
        size = _tree_size(entry)
        if dry_run:
            collected.append(Collected(entry.name, size))
            continue
        lock_path = entry.with_name(entry.name + ".lock")
        try:
            with open(lock_path, "a+b") as lock_file:
                # The installer holds this lock while it fetches or validates the entry.
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(entry, ignore_errors=True)
            lock_path.unlink(missing_ok=True)
        except BlockingIOError:
            continue
        collected.append(Collected(entry.name, size))
    return collected


async def run_garbage_collection(settings: EnvstoreSettings, grace_seconds: float | None, dry_run: bool) -> CollectionReport:
    """``envstore gc``: one collection with the deployment's settings (database, storage, cache)."""
    pool = await database.create_pool(settings.database_url)
    try:
        async with open_storage(settings) as storage:
            return await collect_garbage(
                pool, storage, settings.package_cache,
                settings.gc_grace_seconds if grace_seconds is None else grace_seconds, dry_run,
            )
    finally:
        await pool.close()
