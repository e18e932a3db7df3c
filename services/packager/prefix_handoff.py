"""Which installed environment the packager packs. No filesystem is shared between the builder
and the packager: the hand-off is the lock (in storage) and the package cache. When the
builder's prefix is on this host (the embedded stack, one node), it is used as it is — the same
files, no second install; otherwise the packager installs the lock's packages for the artifacts'
platform into its own scratch directory, from its own package cache (hard links to the
extracted packages, downloaded once per host)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from envstore.common.build_reporter import BuildReporter
from envstore.common.events import BuildBuilt
from envstore.common.lock import Lock
from envstore.common.prefix_install import install_environment
from envstore.common.prefix_permissions import PrefixPermissions, apply_prefix_permissions
from envstore.common.settings import EnvstoreSettings, host_platform


def _builders_prefix_is_here(built: BuildBuilt, lock: Lock, platform: str) -> bool:
    """The builder's prefix is on this host, and holds exactly the lock's packages."""
    prefix = Path(built.prefix)
    meta = prefix / "conda-meta"
    if not meta.is_dir():
        return False
    installed = set()
    for record in meta.glob("*.json"):
        try:
            document = json.loads(record.read_text())
        except (OSError, ValueError):
            return False
        installed.add((document.get("name"), document.get("version"), document.get("build")))
    wanted = {(package.name, package.version, package.build) for package in lock.platforms.get(platform, [])}
    return installed == wanted


async def prepared_prefix(
    built: BuildBuilt,
    lock: Lock,
    settings: EnvstoreSettings,
    work_directory: Path,
    reporter: BuildReporter,
    permissions: PrefixPermissions | None = None,
) -> Path:
    """The prefix to pack. An own install gets the build's ``permissions`` as the builder's
    prefix has them, so the artifacts carry the same modes and owners wherever they are made."""
    platform = host_platform() if host_platform() in lock.platforms else sorted(lock.platforms)[0]
    if settings.packager_reuse_builder_prefix and await asyncio.to_thread(_builders_prefix_is_here, built, lock, platform):
        return Path(built.prefix)
    prefix = work_directory / "prefix"
    packages = lock.platforms[platform]
    async with reporter.phase("install", f"{len(packages)} packages for packing (the builder's prefix is not on this host)"):
        await install_environment(lock, platform, prefix, settings.package_cache)
    if permissions is not None and permissions.changes_anything:
        await asyncio.to_thread(apply_prefix_permissions, prefix, permissions)
    return prefix
