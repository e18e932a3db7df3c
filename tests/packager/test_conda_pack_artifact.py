"""The CONDA_PACK tarball works where a user takes it: unpacked into a new directory and relocated
by ``conda-unpack``, the environment's programs see the new prefix, in text and in binary files."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

from envstore.common.demo_channel import PREFIX_PLACEHOLDER
from envstore.packager.artifacts import conda_pack
from envstore.packager.artifacts.inputs import BuildInputs
from tests.packager.conftest import run


async def produced_tarball(inputs: BuildInputs) -> Path:
    produced = await conda_pack.produce(inputs)
    assert produced.key == f"archive/{inputs.build.build_key}.tar.gz"
    assert produced.content_type == "application/gzip"
    path = inputs.storage.local_path(produced.blob)
    assert path is not None and path.stat().st_size == produced.blob.size
    return path


def unpack_and_relocate(tarball: Path, destination: Path) -> None:
    """What a user does: untar anywhere, then run conda-unpack (the environment has no python)."""
    destination.mkdir(parents=True)
    run(["tar", "-xzf", tarball, "-C", destination])
    run(["python3", destination / "bin" / "conda-unpack"])


def installed_files_mentioning(directory: Path, text: str) -> list[str]:
    """Files from the packages (not the records of conda-meta, nor conda-unpack's own list) holding text."""
    return sorted(
        str(path.relative_to(directory))
        for path in directory.rglob("*")
        if path.is_file()
        and not path.is_symlink()
        and path.parent.name != "conda-meta"
        and path.name != "conda-unpack"
        and text.encode() in path.read_bytes()
    )


async def test_tarball_unpacked_elsewhere_is_relocated_by_conda_unpack(
    five_package_build: BuildInputs, tmp_path: Path
) -> None:
    tarball = await produced_tarball(five_package_build)
    elsewhere = tmp_path / "somewhere else" / "five"
    unpack_and_relocate(tarball, elsewhere)

    assert run([elsewhere / "bin" / "hello"]) == f"hello 2.1 prefix={elsewhere} greeting-data=2.0\n"
    assert run([elsewhere / "bin" / "hello-binary-prefix"]) == f"{elsewhere}\n"
    # No trace of the build machine or of the placeholder is left in any file.
    assert installed_files_mentioning(elsewhere, five_package_build.built.prefix) == []
    assert installed_files_mentioning(elsewhere, PREFIX_PLACEHOLDER) == []
    # The binary file kept its size: the prefix is NUL-padded in place of the placeholder.
    relocated = (elsewhere / "share" / "hello" / "prefix.bin").read_bytes()
    original = (Path(five_package_build.built.prefix) / "share" / "hello" / "prefix.bin").read_bytes()
    assert len(relocated) == len(original)
    assert relocated.startswith(str(elsewhere).encode() + b"\0")


async def test_tarball_holds_the_environment_and_conda_packs_tools_but_not_rattlers_cache_tag(
    five_package_build: BuildInputs,
) -> None:
    tarball = await produced_tarball(five_package_build)
    with tarfile.open(tarball) as archive:
        names = set(archive.getnames())
        records = [
            json.load(archive.extractfile(name))  # type: ignore[arg-type]
            for name in sorted(names)
            if name.startswith("conda-meta/") and name.endswith(".json")
        ]

    assert {"bin/hello", "lib/libhello.so", "bin/conda-unpack", "bin/activate", "bin/deactivate"} <= names
    assert "CACHEDIR.TAG" not in names
    locked = {(package.name, package.version) for package in five_package_build.lock.packages_for(five_package_build.platform)}
    assert {(record["name"], record["version"]) for record in records} == locked
    # conda-pack drops the build machine's package cache paths from the records.
    assert all(record["link"]["source"] == "" and record["extracted_package_dir"] == "" for record in records)


async def test_a_package_missing_from_the_cache_is_restored_so_binaries_still_relocate(
    five_package_build: BuildInputs, tmp_path: Path
) -> None:
    hello = next(p for p in five_package_build.lock.packages_for(five_package_build.platform) if p.name == "hello")
    cached = five_package_build.settings.package_cache / f"{hello.name}-{hello.version}-{hello.build}"
    assert (cached / "info" / "paths.json").exists()
    shutil.rmtree(cached)

    tarball = await produced_tarball(five_package_build)
    elsewhere = tmp_path / "restored" / "five"
    unpack_and_relocate(tarball, elsewhere)

    assert (cached / "info" / "paths.json").exists()
    assert run([elsewhere / "bin" / "hello-binary-prefix"]) == f"{elsewhere}\n"
    assert run([elsewhere / "bin" / "hello"]) == f"hello 2.1 prefix={elsewhere} greeting-data=2.0\n"
