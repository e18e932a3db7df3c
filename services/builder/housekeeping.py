"""Removing what deleted builds leave behind (prefixes, artifact names) and pointing an
environment's ``envs/<name>`` link at its current build."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from envstore.common.artifact_keys import PACKABLE_PLATFORMS, PER_PLATFORM_KINDS, artifact_key
from envstore.common.artifact_kinds import ArtifactKind
from envstore.common.storage import Storage


async def remove_build(
    environments_root: Path, storage: Storage, namespace: str, build_key: str, keep: list[str]
) -> None:
    prefix = environments_root / namespace / build_key
    await asyncio.to_thread(shutil.rmtree, prefix, True)
    for kind in ArtifactKind:
        if kind in keep:
            continue
        # Only the name goes: blobs are shared by content (image layers) and collected separately.
        await storage.delete_name(artifact_key(kind, build_key))
        if kind in PER_PLATFORM_KINDS:
            # The build's further platforms are not known here; a name that was never made is no error.
            for platform in PACKABLE_PLATFORMS:
                await storage.delete_name(artifact_key(kind, build_key, platform))


async def free_archived_build(
    environments_root: Path, storage: Storage, namespace: str, build_key: str, kinds: list[str]
) -> None:
    """An archived build's prefix and the names of its main artifacts of ``kinds`` (the ones
    rehydration makes again; a multi-platform build's further platforms' artifacts stay)."""
    await asyncio.to_thread(shutil.rmtree, environments_root / namespace / build_key, True)
    for kind in kinds:
        await storage.delete_name(artifact_key(kind, build_key))


async def remove_environment_link(environments_root: Path, namespace: str, environment: str | None) -> None:
    if environment is None:
        await asyncio.to_thread(shutil.rmtree, environments_root / namespace / "envs", True)
        return
    link = environments_root / namespace / "envs" / environment
    await asyncio.to_thread(link.unlink, True)
