"""The demo channel is a real conda channel: rattler indexes, solves and installs it."""

from __future__ import annotations

import gc
import json
import pathlib
import subprocess
import tarfile

import pytest
import rattler
from rattler.exceptions import SolverError

from envstore.common.demo_channel import (
    CATALOGUE,
    CONSTRAINT_CONFLICT_SPEC,
    FIVE_PACKAGE_SOLUTION,
    FIVE_PACKAGE_SPEC,
    PREFIX_PLACEHOLDER,
    UNSATISFIABLE_SPEC,
    ArchiveFormat,
    FileMode,
    make_channel,
)
from envstore.common.demo_channel.big_channel import BigChannelShape, make_big_channel


def virtual_packages(*name_version_build: tuple[str, str, str]) -> list[rattler.GenericVirtualPackage]:
    return [
        rattler.GenericVirtualPackage(rattler.PackageName(name), rattler.Version(version), rattler.BuildString(build))
        for name, version, build in name_version_build
    ]


LINUX_VIRTUAL_PACKAGES = (("__unix", "0", "0"), ("__linux", "6.1", "0"), ("__glibc", "2.36", "0"))
OSX_ARM64_VIRTUAL_PACKAGES = (("__unix", "0", "0"), ("__osx", "14.5", "0"), ("__archspec", "1", "m1"))


@pytest.fixture(scope="module")
async def channel(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, str]:
    directory = tmp_path_factory.mktemp("demo-channel")
    return directory, await make_channel(directory)


@pytest.fixture
def gateway(tmp_path: pathlib.Path):
    gateway = rattler.Gateway(cache_dir=tmp_path / "repodata-cache")
    yield gateway
    # rattler 0.28 may crash at interpreter exit while its objects are still alive.
    del gateway
    gc.collect()


async def solve(channel_url: str, gateway: rattler.Gateway, specs, subdir: str, virtual) -> list:
    return await rattler.solve(
        sources=[rattler.Channel(channel_url)],
        specs=list(specs),
        gateway=gateway,
        platforms=[subdir, "noarch"],
        virtual_packages=virtual_packages(*virtual),
    )


def package_file(name: str, version: str, subdir: str, path: str):
    package = next(p for p in CATALOGUE if (p.name, p.version, p.subdir) == (name, version, subdir))
    return next(file for file in package.files if file.path == path)


def run(program: pathlib.Path) -> str:
    return subprocess.run([program], capture_output=True, text=True, check=True, timeout=10).stdout


async def test_five_package_spec_installs_and_relocates_prefixes(channel, gateway, tmp_path):
    _, channel_url = channel
    records = await solve(channel_url, gateway, FIVE_PACKAGE_SPEC, "linux-64", LINUX_VIRTUAL_PACKAGES)

    assert sorted((record.name.normalized, str(record.version)) for record in records) == list(FIVE_PACKAGE_SOLUTION)
    assert {record.subdir for record in records} == {"linux-64", "noarch"}
    assert {pathlib.PurePosixPath(record.url).suffix for record in records} == {".conda", ".bz2"}

    prefix = tmp_path / "env"
    await rattler.install(records, target_prefix=prefix, cache_dir=tmp_path / "pkgs", show_progress=False)
    del records
    gc.collect()

    assert run(prefix / "bin" / "hello") == f"hello 2.1 prefix={prefix} greeting-data=2.0\n"
    assert run(prefix / "bin" / "hello-binary-prefix") == f"{prefix}\n"
    packaged = package_file("hello", "2.1", "linux-64", "share/hello/prefix.bin").content
    relocated = (prefix / "share" / "hello" / "prefix.bin").read_bytes()
    padded_prefix = str(prefix).encode().ljust(len(PREFIX_PLACEHOLDER), b"\0")
    assert relocated == packaged.replace(PREFIX_PLACEHOLDER.encode(), padded_prefix)


async def test_osx_arm64_solve_uses_osx_arm64_and_noarch_records(channel, gateway):
    _, channel_url = channel
    specs = [*FIVE_PACKAGE_SPEC, "plotkit", "cachekit", "reportkit"]
    records = await solve(channel_url, gateway, specs, "osx-arm64", OSX_ARM64_VIRTUAL_PACKAGES)

    assert {record.subdir for record in records} == {"osx-arm64", "noarch"}
    names = {record.name.normalized for record in records}
    assert {"hello", "libhello", "libmath", "numlite", "datakit", "units", "netlite"} <= names


async def test_osx_arm64_libraries_need_the_osx_virtual_package(channel, gateway):
    _, channel_url = channel
    with pytest.raises(SolverError, match="__osx"):
        await solve(channel_url, gateway, FIVE_PACKAGE_SPEC, "osx-arm64", [("__unix", "0", "0")])


@pytest.mark.parametrize(
    ("specs", "conflicting_name"),
    [(UNSATISFIABLE_SPEC, "greeting-data"), (CONSTRAINT_CONFLICT_SPEC, "oldtool")],
    ids=["conflicting-depends", "constrains"],
)
async def test_unsatisfiable_specs_raise_solver_error_naming_the_conflict(channel, gateway, specs, conflicting_name):
    _, channel_url = channel
    with pytest.raises(SolverError) as raised:
        await solve(channel_url, gateway, specs, "linux-64", LINUX_VIRTUAL_PACKAGES)
    assert conflicting_name in str(raised.value)


async def test_index_lists_every_package_in_its_format(channel):
    directory, _ = channel
    indexed = {}
    for repodata_path in directory.glob("*/repodata.json"):
        repodata = json.loads(repodata_path.read_text())
        for key in ("packages", "packages.conda"):
            indexed.setdefault(key, set()).update(repodata[key])

    expected = {
        key: {package.filename(archive_format) for package in CATALOGUE for archive_format in package.formats
              if archive_format is wanted_format}
        for key, wanted_format in (("packages", ArchiveFormat.TAR_BZ2), ("packages.conda", ArchiveFormat.CONDA))
    }
    assert indexed == expected
    assert indexed["packages"] and indexed["packages.conda"]
    both_formats = {name.removesuffix(".tar.bz2") for name in indexed["packages"]} & {
        name.removesuffix(".conda") for name in indexed["packages.conda"]
    }
    assert both_formats


async def test_package_metadata_marks_prefix_files(channel):
    directory, _ = channel
    hello = next(p for p in CATALOGUE if p.name == "hello" and p.version == "2.1" and p.subdir == "linux-64")
    paths = rattler.PathsJson.from_package_archive(directory / "linux-64" / hello.filename(ArchiveFormat.CONDA))
    placeholders = {
        str(entry.relative_path): (entry.prefix_placeholder.file_mode.mode, entry.prefix_placeholder.placeholder)
        for entry in paths.paths
        if entry.prefix_placeholder is not None
    }
    assert placeholders == {
        "bin/hello": (FileMode.TEXT, PREFIX_PLACEHOLDER),
        "share/hello/prefix.bin": (FileMode.BINARY, PREFIX_PLACEHOLDER),
    }

    tar_package = next(p for p in CATALOGUE if ArchiveFormat.TAR_BZ2 in p.formats)
    with tarfile.open(directory / tar_package.subdir / tar_package.filename(ArchiveFormat.TAR_BZ2)) as archive:
        names = archive.getnames()
    info_count = sum(name.startswith("info/") for name in names)
    assert names[:info_count] == sorted(["info/about.json", "info/files", "info/index.json", "info/paths.json"])


async def test_make_channel_is_reproducible(channel, tmp_path):
    first_directory, _ = channel
    second_url = await make_channel(tmp_path / "again")

    assert second_url == (tmp_path / "again").as_uri()

    def contents(directory: pathlib.Path) -> dict[str, bytes]:
        return {str(path.relative_to(directory)): path.read_bytes() for path in directory.rglob("*") if path.is_file()}

    assert contents(tmp_path / "again") == contents(first_directory)


async def test_big_channel_solves_to_every_package_and_installs_relocated(tmp_path, gateway):
    shape = BigChannelShape.small()
    channel = await make_big_channel(tmp_path / "big", shape)
    assert channel.package_count == shape.package_count
    assert channel.installed_bytes == pytest.approx(shape.installed_bytes, rel=0.01)
    assert 0 < channel.package_bytes < channel.installed_bytes

    records = await solve(channel.url, gateway, channel.specs, "linux-64", LINUX_VIRTUAL_PACKAGES)
    assert len(records) == shape.package_count  # the top-level specs pull in every package
    assert any(record.depends for record in records)
    prefix = tmp_path / "env"
    await rattler.install(records, target_prefix=prefix, cache_dir=tmp_path / "pkgs", show_progress=False)
    del records
    gc.collect()

    placeholders = {}
    for archive in (tmp_path / "big").glob("*/*.conda"):
        for entry in rattler.PathsJson.from_package_archive(archive).paths:
            if entry.prefix_placeholder is not None:
                placeholders[str(entry.relative_path)] = entry.prefix_placeholder.file_mode.mode
    assert {FileMode.TEXT, FileMode.BINARY} <= set(placeholders.values())
    for path, mode in placeholders.items():
        relocated = (prefix / path).read_bytes()
        assert PREFIX_PLACEHOLDER.encode() not in relocated, path
        # Binary: the prefix string keeps its length, NUL-padded; text: the prefix takes its place.
        assert str(prefix).encode() + (b"/lib\0" if mode is FileMode.BINARY else b"") in relocated, path
    files = [path for path in prefix.rglob("*") if path.is_file() and "conda-meta" not in path.parts]
    assert len(files) > 10 * shape.package_count  # many small files
