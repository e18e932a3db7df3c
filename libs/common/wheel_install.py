"""A lock's pip packages → files in an environment: each locked wheel fetched once per host into a
content-addressed cache (its sha256 checked), then unpacked into the prefix with PyPA's
``installer``, without dependencies (``--no-deps``: they are locked too).

Why ``installer`` and not ``uv pip install``: uv installs for an interpreter it runs, so it can
neither install for another platform (the lock's ``linux-aarch64`` environment, on an x86_64
server) nor write scripts for a prefix other than the one being written (an image's ``/opt/conda``,
staged elsewhere). ``installer`` writes a wheel into any directory layout for any interpreter
path, runs nothing, and gives the same files on every platform; uv still decides what is installed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

import aiohttp
from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.sources import WheelFile
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from envstore.common.build_policy import BuildFailure
from envstore.common.lock import LockedPipPackage

DOWNLOAD_CHUNK = 1024 * 1024
CONCURRENT_DOWNLOADS = 8
INSTALLER_NAME = b"envstore\n"


@dataclass(frozen=True)
class InstalledWheel:
    package: LockedPipPackage
    paths: tuple[str, ...]  # relative to the prefix, as the wheel's RECORD lists them


def cached_wheel_path(cache: Path, package: LockedPipPackage) -> Path:
    return cache / "wheels" / package.sha256[:2] / package.sha256 / package.file_name


async def fetch_wheels(packages: Iterable[LockedPipPackage], cache: Path) -> list[Path]:
    """Each package's wheel in the cache, downloaded when missing (sha256 checked before it lands)."""
    packages = list(packages)
    limit = asyncio.Semaphore(CONCURRENT_DOWNLOADS)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)
    async with aiohttp.ClientSession(timeout=timeout) as http:

        async def one(package: LockedPipPackage) -> Path:
            path = cached_wheel_path(cache, package)
            if path.exists():
                return path
            async with limit:
                await _download(http, package, path)
            return path

        return list(await asyncio.gather(*(one(package) for package in packages)))


class _DownloadError(Exception):
    pass


async def _download(http: aiohttp.ClientSession, package: LockedPipPackage, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, partial_name = tempfile.mkstemp(prefix=".partial-", dir=path.parent)
    os.close(descriptor)
    partial = Path(partial_name)
    try:
        parts = urlsplit(package.url)
        if parts.scheme == "file":
            await asyncio.to_thread(shutil.copyfile, unquote(parts.path), partial)
        else:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type((aiohttp.ClientError, asyncio.TimeoutError, _DownloadError)),
                stop=stop_after_attempt(4),
                wait=wait_exponential(multiplier=0.5, max=8),
                reraise=True,
            ):
                with attempt:
                    await _download_once(http, package.url, partial)
        digest = await asyncio.to_thread(_sha256_of, partial)
        if digest != package.sha256:
            raise BuildFailure(
                "install",
                f"the wheel of {package.pin} at {package.url} has sha256 {digest}, not the locked {package.sha256}: "
                "the index changed the file; rebuild the environment to lock it again",
            )
        os.replace(partial, path)
    except (aiohttp.ClientError, asyncio.TimeoutError, _DownloadError, OSError) as error:
        raise BuildFailure("install", f"cannot download the wheel of {package.pin} from {package.url}: {error}") from None
    finally:
        partial.unlink(missing_ok=True)


async def _download_once(http: aiohttp.ClientSession, url: str, partial: Path) -> None:
    async with http.get(url) as response:
        if response.status >= 500 or response.status == 429:
            raise _DownloadError(f"HTTP {response.status}")
        if response.status != 200:
            raise BuildFailure("install", f"cannot download {url}: HTTP {response.status}")
        with open(partial, "wb") as target:
            async for chunk in response.content.iter_chunked(DOWNLOAD_CHUNK):
                target.write(chunk)


def _sha256_of(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(DOWNLOAD_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def site_packages(python_version: str) -> str:
    """Where a conda environment's python (on Linux and macOS) looks for packages, prefix-relative."""
    major, minor = python_version.split(".")[:2]
    return f"lib/python{major}.{minor}/site-packages"


def install_wheels(
    wheels: list[tuple[LockedPipPackage, Path]], prefix: Path, python_version: str, runtime_prefix: str, platform: str
) -> list[InstalledWheel]:
    """Unpacks each wheel into ``prefix`` for an environment that will live at ``runtime_prefix``
    (its scripts' ``#!`` line names ``<runtime_prefix>/bin/python``). Blocking: run it in a thread."""
    if platform.startswith("win-"):
        raise BuildFailure("install", f"pip packages are installed for Linux and macOS environments, not {platform}")
    major, minor = python_version.split(".")[:2]
    library = prefix / site_packages(python_version)
    installed = []
    for package, wheel in wheels:
        scheme = {
            "purelib": str(library),
            "platlib": str(library),
            "headers": str(prefix / "include" / f"python{major}.{minor}" / package.name),
            "scripts": str(prefix / "bin"),
            "data": str(prefix),
        }
        destination = _ReplacingDestination(
            scheme, interpreter=f"{runtime_prefix}/bin/python{major}.{minor}", script_kind="posix"
        )
        with WheelFile.open(wheel) as source:
            install(source, destination, additional_metadata={"INSTALLER": INSTALLER_NAME})
        installed.append(InstalledWheel(package, tuple(sorted(destination.written))))
    return installed


class _ReplacingDestination(SchemeDictionaryDestination):  # type: ignore[misc]
    """Replaces a file instead of writing into it: a path the prefix already has may be a hard link
    into a package cache, which writing through would corrupt. Remembers what it wrote."""

    def __init__(self, scheme: dict[str, str], **options: Any) -> None:
        super().__init__(scheme, overwrite_existing=True, **options)
        self.root = Path(scheme["data"])
        self.written: list[str] = []

    def write_to_fs(self, scheme: Any, path: str, stream: BinaryIO, is_executable: bool) -> Any:
        target = Path(self.scheme_dict[scheme]) / path
        if target.is_symlink() or target.exists():
            target.unlink()
        self.written.append(os.path.relpath(target, self.root))
        return super().write_to_fs(scheme, path, stream, is_executable)


async def install_pip_packages(
    packages: list[LockedPipPackage],
    prefix: Path,
    python_version: str,
    runtime_prefix: str,
    platform: str,
    cache: Path,
) -> list[InstalledWheel]:
    if not packages:
        return []
    wheels = await fetch_wheels(packages, cache)
    return await asyncio.to_thread(
        install_wheels, list(zip(packages, wheels)), prefix, python_version, runtime_prefix, platform
    )
