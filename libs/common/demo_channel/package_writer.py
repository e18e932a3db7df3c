"""Writes one PackageDefinition as a real conda package, in `.conda` or `.tar.bz2` format."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass

from conda_package_handling import api as cph_api

from .catalogue import (
    BUILD_TIMESTAMP_SECONDS,
    PREFIX_PLACEHOLDER,
    ArchiveFormat,
    PackageDefinition,
)

_ARCH_AND_PLATFORM = {
    "linux-64": ("x86_64", "linux"),
    "linux-aarch64": ("aarch64", "linux"),
    "osx-arm64": ("arm64", "osx"),
    "noarch": (None, None),
}
_EXECUTABLE_MODE = 0o755
_REGULAR_MODE = 0o644
# conda's compressors default to zstd level 19; these files are tiny, so speed matters more.
_ZSTD_LEVEL = 3


@dataclass(frozen=True)
class ArchiveMember:
    path: str
    content: bytes
    mode: int


def write_package(package: PackageDefinition, archive_format: ArchiveFormat, out_dir: pathlib.Path) -> pathlib.Path:
    """Writes the package into `out_dir` and returns the archive's path.

    Not thread-safe for `.conda`: conda-package-handling changes the process's working directory.
    """
    members = archive_members(package)
    out_path = out_dir / package.filename(archive_format)
    if archive_format is ArchiveFormat.CONDA:
        _write_conda(members, out_path)
    else:
        _write_tar_bz2(members, out_path)
    return out_path


def archive_members(package: PackageDefinition) -> list[ArchiveMember]:
    """The package's `info/` files first, then its payload, as conda-build orders them."""
    payload = [
        ArchiveMember(file.path, file.content, _EXECUTABLE_MODE if file.executable else _REGULAR_MODE)
        for file in sorted(package.files, key=lambda file: file.path)
    ]
    info = {
        "info/about.json": _json_bytes(_about_json(package)),
        "info/files": "".join(f"{file.path}\n" for file in payload).encode(),
        "info/index.json": _json_bytes(_index_json(package)),
        "info/paths.json": _json_bytes(_paths_json(package)),
    }
    return [ArchiveMember(path, content, _REGULAR_MODE) for path, content in info.items()] + payload


def _index_json(package: PackageDefinition) -> dict:
    arch, platform = _ARCH_AND_PLATFORM[package.subdir]
    index = {
        "name": package.name,
        "version": package.version,
        "build": package.build,
        "build_number": package.build_number,
        "depends": list(package.depends),
        "constrains": list(package.constrains),
        "subdir": package.subdir,
        "arch": arch,
        "platform": platform,
        "license": package.license,
        "timestamp": BUILD_TIMESTAMP_SECONDS * 1000,
    }
    if package.noarch:
        index["noarch"] = package.noarch
    return index


def _about_json(package: PackageDefinition) -> dict:
    return {
        "license": package.license,
        "summary": package.summary,
        "home": "https://example.invalid/envstore-demo-channel",
    }


def _paths_json(package: PackageDefinition) -> dict:
    paths = []
    for file in sorted(package.files, key=lambda file: file.path):
        entry = {
            "_path": file.path,
            "path_type": "hardlink",
            "sha256": hashlib.sha256(file.content).hexdigest(),
            "size_in_bytes": len(file.content),
        }
        if file.placeholder_mode is not None:
            entry["file_mode"] = str(file.placeholder_mode)
            entry["prefix_placeholder"] = PREFIX_PLACEHOLDER
        paths.append(entry)
    return {"paths": paths, "paths_version": 1}


def _json_bytes(document: dict) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def _write_tar_bz2(members: list[ArchiveMember], out_path: pathlib.Path) -> None:
    with tarfile.open(out_path, "w:bz2") as archive:
        for member in members:
            archive.addfile(_tar_info(member), io.BytesIO(member.content))


def _tar_info(member: ArchiveMember) -> tarfile.TarInfo:
    info = tarfile.TarInfo(member.path)
    info.size = len(member.content)
    info.mode = member.mode
    info.mtime = BUILD_TIMESTAMP_SECONDS
    return info


def _write_conda(members: list[ArchiveMember], out_path: pathlib.Path) -> None:
    with tempfile.TemporaryDirectory(prefix="envstore-demo-package-") as staging:
        staging_dir = pathlib.Path(staging)
        for member in members:
            file_path = staging_dir / member.path
            file_path.parent.mkdir(parents=True, exist_ok=True)
            file_path.write_bytes(member.content)
            # conda-package-handling copies mode and mtime from disk into its tar members.
            file_path.chmod(member.mode)
            os.utime(file_path, (BUILD_TIMESTAMP_SECONDS, BUILD_TIMESTAMP_SECONDS))
        cph_api.create(
            str(staging_dir),
            [member.path for member in members],
            out_path.name,
            out_folder=str(out_path.parent),
            compression_level=_ZSTD_LEVEL,
        )
    _fix_zip_timestamps(out_path)


def _fix_zip_timestamps(archive_path: pathlib.Path) -> None:
    """Rewrites the outer zip with a fixed date: conda-package-handling stamps entries with the clock."""
    fixed_date = time.gmtime(BUILD_TIMESTAMP_SECONDS)[:6]
    with zipfile.ZipFile(archive_path) as original:
        entries = [(info, original.read(info)) for info in original.infolist()]
    with zipfile.ZipFile(archive_path, "w", compression=zipfile.ZIP_STORED) as rewritten:
        for original_info, content in entries:
            info = zipfile.ZipInfo(original_info.filename, date_time=fixed_date)
            info.external_attr = original_info.external_attr
            rewritten.writestr(info, content)
