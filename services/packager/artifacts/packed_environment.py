"""The build's prefix packed once with conda-pack, shared by every artifact that carries it (the
CONDA_PACK tarball and the shell installer's payload), in one pass: conda-pack's tar stream,
gzipped on every core, hashed as it is written, and the installer's relocation plan read from the
files as they are packed.

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
import grp
import json
import os
import pwd
import stat
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import conda_pack
import rattler
from conda_pack.core import Packer
from conda_pack.formats import TarArchive

from envstore.common.events import BlobRef
from envstore.common.lock import record_from_locked_package
from envstore.packager.artifacts.gzip_output import GzipOutput
from envstore.packager.artifacts.inputs import BuildInputs
from envstore.packager.artifacts.relocation_plan import CONDA_UNPACK, conda_unpack_records, relocation_plan

# rattler tags the prefixes it creates as cache directories; backup tools and `tar --exclude-caches`
# would then skip the user's unpacked environment, so it stays out of the archive.
NOT_PACKED = ("CACHEDIR.TAG",)
COPY_BUFFER = 1024 * 1024


@dataclass(frozen=True)
class PackedEnvironment:
    """The archive, its blob (hashed while written) and how a shell relocates it (``relocation_plan``)."""

    archive: Path
    blob: BlobRef
    longest_prefix: int | None  # the longest install prefix its binary placeholders leave room for
    relocation_commands: str

    @staticmethod
    def description_path(archive: Path) -> Path:
        return archive.with_name(f"{archive.name}.json")

    def write_description(self) -> None:
        document = {
            "digest": self.blob.digest,
            "size": self.blob.size,
            "longest_prefix": self.longest_prefix,
            "relocation_commands": self.relocation_commands,
        }
        self.description_path(self.archive).write_text(json.dumps(document))

    @classmethod
    def read(cls, archive: Path) -> PackedEnvironment:
        document: dict[str, Any] = json.loads(cls.description_path(archive).read_text())
        return cls(
            archive,
            BlobRef(digest=document["digest"], size=document["size"]),
            document["longest_prefix"],
            document["relocation_commands"],
        )


async def packed_environment(inputs: BuildInputs) -> PackedEnvironment:
    """The build's conda-pack archive in the build's work directory, packed on first use.

    Producers run concurrently on the same build: the first one packs, the others wait for it.
    """
    archive = inputs.work_directory / f"{inputs.build.build_key}.tar.gz"
    async with _held_exclusively(inputs.work_directory / "packed-environment.lock"):
        if not archive.exists():
            await restore_package_cache(inputs)
            return await asyncio.to_thread(pack_prefix, inputs.prefix, archive)
        return await asyncio.to_thread(PackedEnvironment.read, archive)


class _WholeSecondsTarFile(tarfile.TarFile):
    """tarfile as conda-pack uses it, with whole-second mtimes: a float mtime costs every member a
    PAX extended header (twice the header work, 1 KiB more each) for sub-second times no unpacked
    environment needs. Members keep the prefix's mode and owner (default_permissions,
    default_uid/gid) also where conda-pack reads the bytes from elsewhere: a file with a prefix
    placeholder is packed from its original in the package cache."""

    prefix: str | None = None

    def gettarinfo(self, name=None, arcname=None, fileobj=None):  # type: ignore[no-untyped-def]
        info = super().gettarinfo(name, arcname, fileobj)
        if info is not None:
            info.mtime = int(info.mtime)
            if self.prefix is not None and arcname and name != os.path.join(self.prefix, arcname):
                _take_mode_and_owner(info, os.path.join(self.prefix, arcname))
        return info


def _take_mode_and_owner(info: tarfile.TarInfo, path: str) -> None:
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return
    info.mode = stat.S_IMODE(status.st_mode)
    if (info.uid, info.gid) != (status.st_uid, status.st_gid):
        info.uid, info.gid = status.st_uid, status.st_gid
        info.uname = _user_name(status.st_uid)
        info.gname = _group_name(status.st_gid)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


class _RecordingTarArchive(TarArchive):  # type: ignore[misc]
    """conda-pack's tar writer, noting where each member's bytes come from: the relocation plan then
    reads the few files with placeholders from there instead of decompressing the archive."""

    def __init__(self, fileobj: GzipOutput, mtime: float | None, prefix: Path) -> None:
        super().__init__(fileobj, "", close_file=False, mode="w", mtime=mtime)
        self.prefix = prefix
        self.sources: dict[str, str] = {}
        self.conda_unpack = b""

    def __enter__(self) -> _RecordingTarArchive:
        # conda-pack's own __enter__, with the tarfile above and reads of 1 MiB instead of 16 KiB.
        self.archive = _WholeSecondsTarFile.open(fileobj=self.fileobj, mode="w")
        self.archive.prefix = str(self.prefix)
        self.archive.copybufsize = COPY_BUFFER
        return self

    def _add(self, source: str, target: str) -> None:
        if target == CONDA_UNPACK:
            # A temporary file, gone once added; its record list is what conda-unpack rewrites.
            self.conda_unpack = Path(source).read_bytes()
        self.sources[target] = source
        super()._add(source, target)

    def _add_bytes(self, source: str, sourcebytes: bytes, target: str) -> None:
        # conda-pack passes bytes for conda-meta records and for text files it reads; a file it
        # lists for relocation is packed as its source holds it.
        self.sources[target] = source
        super()._add_bytes(source, sourcebytes, target)

    def content_of(self, target: str) -> bytes:
        return Path(self.sources[target]).read_bytes()


def pack_prefix(prefix: Path, archive: Path) -> PackedEnvironment:
    """conda-pack's packing of ``prefix`` (its file list, its rewrites, its ``conda-unpack``), gzipped
    on every core by ``gzip_output`` and hashed as written (blocking: run it in a thread)."""
    partial = archive.with_name(f"partial-{archive.name}")
    # "raise": packing files whose cached original is gone would silently break binary relocation.
    environment = conda_pack.CondaEnv.from_prefix(str(prefix), on_missing_cache="raise")
    for pattern in NOT_PACKED:
        environment = environment.exclude(pattern)
    # As conda-pack's own pack(): conda-unpack gets the history's time.
    history = prefix / "conda-meta" / "history"
    mtime = history.lstat().st_mtime if history.exists() else None
    with GzipOutput(partial) as output:
        with _RecordingTarArchive(output, mtime, prefix) as tar:
            packer = Packer(str(prefix), tar)
            for file in environment.files:
                packer.add(file)
            packer.finish()
    assert output.blob is not None
    plan = relocation_plan(conda_unpack_records(tar.conda_unpack), tar.content_of)
    packed = PackedEnvironment(archive, output.blob, plan.longest_prefix, plan.shell_commands())
    packed.write_description()
    # The existence of `archive` means "packed": it appears whole, after its description, or not at all.
    os.replace(partial, archive)
    return packed


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
