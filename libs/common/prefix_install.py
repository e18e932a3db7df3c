"""Lock → installed prefix: its conda packages with py-rattler, from a package cache, then its pip
packages (``wheel_install``). The builder installs a build's
prefix this way; the packager installs its own copy the same way when the builder's prefix is not
on its host (no filesystem is shared between them: the lock and the package cache are the hand-off)."""

from __future__ import annotations

from pathlib import Path

import rattler

from envstore.common.build_policy import BuildFailure
from envstore.common.lock import Lock, LockedPackage, record_from_locked_package
from envstore.common.wheel_install import InstalledWheel, install_pip_packages

MAX_BUILD_PATH = 255


def check_build_path(prefix: Path) -> None:
    if len(str(prefix)) > MAX_BUILD_PATH:
        raise BuildFailure("install", f"build_path too long: must be <= {MAX_BUILD_PATH} characters")


async def install_prefix(
    packages: list[LockedPackage], prefix: Path, package_cache: Path, platform: str, runtime_prefix: Path | None = None
) -> None:
    """Install into ``prefix``; with ``runtime_prefix``, the files are written for that path (where
    the directory will be moved once complete) instead of their own."""
    records = [record_from_locked_package(package) for package in packages]
    prefix.parent.mkdir(parents=True, exist_ok=True)
    try:
        await rattler.install(
            records,
            target_prefix=prefix,
            cache_dir=package_cache,
            platform=rattler.Platform(platform),
            show_progress=False,
            execute_link_scripts=False,
            alternative_target_prefix=runtime_prefix,
        )
    except Exception as error:
        if type(error).__name__ in {"InstallerError", "LinkError", "TransactionError", "ExtractError"}:
            raise BuildFailure("install", f"installing the packages failed: {error}") from None
        raise


async def install_environment(
    lock: Lock, platform: str, prefix: Path, package_cache: Path, runtime_prefix: Path | None = None
) -> list[InstalledWheel]:
    """The lock's environment for ``platform`` at ``prefix`` (written for ``runtime_prefix`` when
    given): conda packages, then pip packages."""
    await install_prefix(lock.packages_for(platform), prefix, package_cache, platform, runtime_prefix)
    pip_packages = lock.pip_packages_for(platform)
    if not pip_packages:
        return []
    python_version = lock.python_version_for(platform)
    if python_version is None:
        raise BuildFailure("install", f"the lock has pip packages for {platform} but no python to install them for")
    return await install_pip_packages(
        pip_packages, prefix, python_version, str(runtime_prefix or prefix), platform, package_cache
    )
