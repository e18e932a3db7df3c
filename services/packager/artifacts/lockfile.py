"""The LOCKFILE artifact: conda-lock format version 1, every solved platform, written with
conda-lock's own models. Served as JSON, as conda-store serves it (JSON is also valid YAML, so
``conda-lock`` reads it back)."""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

import yaml
from conda_lock.lockfile import write_conda_lock_file
from conda_lock.lockfile.v1.models import HashModel
from conda_lock.lockfile.v2prelim.models import LockedDependency, Lockfile, LockMeta
from conda_lock.models.channel import Channel

from envstore.common.lock import Lock, LockedPackage, LockedPipPackage
from envstore.packager.artifacts.inputs import BuildInputs, Produced


def _dependencies(package: LockedPackage) -> dict[str, str]:
    dependencies = {}
    for depend in package.depends:
        name, _, constraint = depend.strip().partition(" ")
        dependencies[name] = constraint.strip()
    return dependencies


def _locked_dependency(package: LockedPackage, platform: str) -> LockedDependency:
    return LockedDependency(
        name=package.name,
        version=package.version,
        manager="conda",
        platform=platform,
        dependencies=_dependencies(package),
        url=package.url,
        hash=HashModel(md5=package.md5, sha256=package.sha256),
        build=package.build,
        categories={"main"},
    )


def _locked_pip_dependency(package: LockedPipPackage, platform: str) -> LockedDependency:
    """A pip package as conda-lock records one: manager ``pip``, the wheel's URL and sha256."""
    return LockedDependency(
        name=package.name,
        version=package.version,
        manager="pip",
        platform=platform,
        dependencies=dict(package.dependencies),
        url=package.url,
        hash=HashModel(sha256=package.sha256),
        categories={"main"},
    )


def conda_lock_document(lock: Lock, spec_sha256: str) -> bytes:
    platforms = sorted(lock.platforms)
    content = Lockfile(
        package=[
            _locked_dependency(package, platform)
            for platform in platforms
            for package in lock.platforms[platform]
        ]
        + [
            _locked_pip_dependency(package, platform)
            for platform in platforms
            for package in lock.pip_packages_for(platform)
        ],
        metadata=LockMeta(
            content_hash={platform: spec_sha256 for platform in platforms},
            channels=[Channel.from_string(url) for url in lock.channels],
            platforms=platforms,
            sources=["environment.yaml"],
            # conda-lock has no field for them: the virtual packages each platform was solved with.
            custom_metadata={
                f"virtual_packages.{platform}": " ".join(lock.virtual_packages[platform])
                for platform in platforms
                if lock.virtual_packages.get(platform)
            }
            or None,
        ),
    )
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "conda-lock.yml"
        write_conda_lock_file(content, path, metadata_choices=None, include_help_text=False)
        document = yaml.safe_load(path.read_text())
    return json.dumps(document, indent=2, sort_keys=True).encode()


async def produce(inputs: BuildInputs) -> Produced:
    document = await asyncio.to_thread(conda_lock_document, inputs.lock, inputs.submitted.spec_sha256)
    blob = await inputs.storage.put_bytes(document)
    return Produced(f"lockfile/{inputs.build.build_key}.yml", blob, "application/json")
