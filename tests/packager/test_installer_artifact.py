"""The CONSTRUCTOR_INSTALLER artifact works where a user runs it: ``sh installer.sh -b -p DIR`` puts a
relocated environment in DIR, with or without a python on the machine, and refuses a corrupted one."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conda_pack.prefixes import replace_prefix

from envstore.common.artifact_kinds import ArtifactKind
from envstore.common.demo_channel import FIVE_PACKAGE_SPEC, PREFIX_PLACEHOLDER
from envstore.common.settings import host_platform
from envstore.common.storage import LocalStorage
from envstore.launcher.stack import EmbeddedStack
from envstore.packager.artifacts import conda_pack, installer
from envstore.packager.artifacts.inputs import BuildInputs
from envstore.packager.artifacts.packed_environment import pack_prefix
from tests.api_client import ApiClient, environment_yaml
from tests.packager.conftest import refused, run

# What the installer needs from the machine when there is no python: a POSIX shell and these.
SHELL_INSTALLER_TOOLS = (
    "sh", "tail", "head", "gzip", "tar", "dd", "cat", "rm", "mkdir", "ls", "uname", "basename", "sha256sum",
)


async def produced_installer(inputs: BuildInputs) -> Path:
    produced = await installer.produce(inputs)
    assert produced.key == f"installer/{inputs.build.build_key}.sh"
    assert produced.content_type == "application/x-sh"
    path = inputs.storage.local_path(produced.blob)
    assert path is not None
    return path


def machine_without_python(directory: Path) -> dict[str, str]:
    """An environment whose PATH holds only the installer's tools: no python anywhere."""
    directory.mkdir()
    for tool in SHELL_INSTALLER_TOOLS:
        (directory / tool).symlink_to(shutil.which(tool))
    return {"PATH": str(directory), "HOME": str(directory)}


def assert_environment_runs_from(prefix: Path) -> None:
    assert run([prefix / "bin" / "hello"]) == f"hello 2.1 prefix={prefix} greeting-data=2.0\n"
    assert run([prefix / "bin" / "hello-binary-prefix"]) == f"{prefix}\n"


async def test_batch_install_into_a_chosen_prefix_runs_there_and_activates(
    five_package_build: BuildInputs, tmp_path: Path
) -> None:
    script = await produced_installer(five_package_build)
    prefix = tmp_path / "chosen place" / "five"

    output = run(["sh", script, "-b", "-p", prefix])

    assert_environment_runs_from(prefix)
    assert f'source "{prefix}/bin/activate"' in output
    activated = run(["bash", "-c", f'source "{prefix}/bin/activate" && hello && echo "$CONDA_PREFIX"'])
    assert activated == f"hello 2.1 prefix={prefix} greeting-data=2.0\n{prefix}\n"


async def test_without_python_the_installer_relocates_text_and_binary_files_itself(
    five_package_build: BuildInputs, tmp_path: Path
) -> None:
    script = await produced_installer(five_package_build)
    prefix = tmp_path / "no-python" / "five"

    output = run([shutil.which("sh"), script, "-b", "-p", prefix], env=machine_without_python(tmp_path / "tools"))

    assert "no python 3 found" in output
    assert_environment_runs_from(prefix)
    assert not (prefix / "lib" / "libhello.so").read_bytes().count(PREFIX_PLACEHOLDER.encode())


async def test_interactive_install_asks_for_the_location(five_package_build: BuildInputs, tmp_path: Path) -> None:
    script = await produced_installer(five_package_build)
    prefix = tmp_path / "answered"

    output = run(["sh", script], input=f"{prefix}\n", env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})

    assert f"Install location [{tmp_path}/five]: " in output
    assert_environment_runs_from(prefix)


@pytest.fixture
def unprivileged_home() -> Iterator[Path]:
    """A home directory with spaces in its path, owned by ``nobody``: pytest's own temporary
    directories are root's alone, so an unprivileged user could not even reach them."""
    home = Path(tempfile.mkdtemp(prefix="envstore installer test ")) / "home of nobody"
    home.mkdir()
    nobody = pwd.getpwnam("nobody")
    for path in (home.parent, home):
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    try:
        yield home
    finally:
        shutil.rmtree(home.parent)


def as_nobody(command: list[str | Path], home: Path) -> list[str | Path]:
    """``command`` run by the unprivileged user ``nobody``, with a plain user's environment."""
    nobody = pwd.getpwnam("nobody")
    return [
        "setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups", "--",
        "env", "-i", f"HOME={home}", "PATH=/usr/bin:/bin", *command,
    ]


async def test_a_user_without_privileges_installs_from_and_into_paths_with_spaces(
    five_package_build: BuildInputs, unprivileged_home: Path
) -> None:
    downloads = unprivileged_home / "my downloads"
    script = downloads / "five installer.sh"
    run(as_nobody(["mkdir", downloads], unprivileged_home))
    # Handed over as a download would be: a file of the user's own, in a folder only they may write.
    shutil.copyfile(await produced_installer(five_package_build), script)
    nobody = pwd.getpwnam("nobody")
    os.chown(script, nobody.pw_uid, nobody.pw_gid)

    # Batch mode with no -p: the default location, $HOME/<environment>, has spaces too.
    output = run(as_nobody(["sh", script, "-b"], unprivileged_home))

    prefix = unprivileged_home / "five"
    assert f"Installed packaging/five, build 1 into {prefix}" in output
    assert {path.stat().st_uid for path in [prefix, *prefix.rglob("*")]} == {nobody.pw_uid}
    assert run(as_nobody([prefix / "bin" / "hello"], unprivileged_home)) == (
        f"hello 2.1 prefix={prefix} greeting-data=2.0\n"
    )
    assert run(as_nobody([prefix / "bin" / "hello-binary-prefix"], unprivileged_home)) == f"{prefix}\n"
    activated = run(as_nobody(["bash", "-c", f'source "{prefix}/bin/activate" && echo "$CONDA_PREFIX"'], unprivileged_home))
    assert activated == f"{prefix}\n"


async def test_installer_refuses_a_corrupted_payload(five_package_build: BuildInputs, tmp_path: Path) -> None:
    script = await produced_installer(five_package_build)
    corrupted = tmp_path / "corrupted.sh"
    content = bytearray(script.read_bytes())
    content[-100] ^= 0xFF
    corrupted.write_bytes(bytes(content))
    truncated = tmp_path / "truncated.sh"
    truncated.write_bytes(script.read_bytes()[:-1000])

    for broken in (corrupted, truncated):
        prefix = tmp_path / f"from-{broken.stem}"
        assert "the payload is corrupted" in refused(["sh", broken, "-b", "-p", prefix])
        assert not prefix.exists()


async def test_help_prints_usage(five_package_build: BuildInputs) -> None:
    script = await produced_installer(five_package_build)

    usage = run(["sh", script, "-h"])

    assert usage.startswith(f"Usage: sh {script.name} [-b] [-f] [-p PREFIX] [-h]\n")
    assert "packaging/five, build 1 (5 packages" in usage
    assert "-b " in usage and "-p PREFIX" in usage and "-f " in usage


async def test_installer_refuses_an_occupied_or_too_long_prefix(five_package_build: BuildInputs, tmp_path: Path) -> None:
    script = await produced_installer(five_package_build)
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine\n")
    too_long = tmp_path / ("x" * (len(PREFIX_PLACEHOLDER) - len(str(tmp_path))))

    assert "already exists" in refused(["sh", script, "-b", "-p", occupied])
    assert "too long" in refused(["sh", script, "-b", "-p", too_long])
    assert not too_long.exists()

    run(["sh", script, "-b", "-f", "-p", occupied])
    assert_environment_runs_from(occupied)
    assert (occupied / "keep.txt").read_text() == "mine\n"


async def test_installer_payload_is_the_conda_pack_tarball_packed_once(five_package_build: BuildInputs) -> None:
    tarball_produced, installer_produced = await asyncio.gather(
        conda_pack.produce(five_package_build), installer.produce(five_package_build)
    )

    storage = five_package_build.storage
    tarball = storage.local_path(tarball_produced.blob).read_bytes()  # type: ignore[union-attr]
    script = storage.local_path(installer_produced.blob).read_bytes()  # type: ignore[union-attr]
    assert script.endswith(tarball)
    packed = five_package_build.work_directory / f"{five_package_build.build.build_key}.tar.gz"
    assert list(five_package_build.work_directory.glob("*.tar.gz")) == [packed]
    before = packed.stat()
    assert await installer.produce(five_package_build) == installer_produced
    after = packed.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


# --- the shell relocation is conda's, byte for byte ------------------------------------------------

CLASSIC_PLACEHOLDER = "/opt/anaconda1anaconda2anaconda3"
PLACEHOLDER = PREFIX_PLACEHOLDER.encode()
# Files that embed placeholders in awkward ways: several per line and per C string, bytes that a shell
# or printf would interpret, a segment that starts with "-", no final newline, a placeholder with no
# terminating NUL (conda leaves that one alone).
TRICKY_FILES = {
    "share/tricky/text.txt": (
        b"first " + PLACEHOLDER + b"/bin\n% \\ ' \" $HOME `x` \xc3\xa9\n" + PLACEHOLDER + PLACEHOLDER
        + b"\nno newline at the end " + PLACEHOLDER,
        PREFIX_PLACEHOLDER, "text",
    ),
    "share/tricky/classic.txt": (f"prefix={CLASSIC_PLACEHOLDER}\n".encode(), CLASSIC_PLACEHOLDER, "text"),
    "lib/libtricky.so": (
        b"\x7fELF\x00\xff" + PLACEHOLDER + b"/lib\x00\x01" + PLACEHOLDER + b":" + PLACEHOLDER
        + b"/x'%\\-\n\t\x7f\x80\x00rest\x00" + PLACEHOLDER + b"-opt\x00" + bytes(range(1, 256)) + PLACEHOLDER,
        PREFIX_PLACEHOLDER, "binary",
    ),
}


def tricky_prefix(root: Path) -> Path:
    """A prefix as rattler leaves it, with one package whose cached original holds TRICKY_FILES."""
    package = root / "pkgs" / "tricky-1.0-0"
    prefix = root / "env"
    paths = []
    for path, (content, placeholder, mode) in TRICKY_FILES.items():
        for directory in (package, prefix):
            (directory / path).parent.mkdir(parents=True, exist_ok=True)
            (directory / path).write_bytes(content)
        paths.append({"_path": path, "path_type": "hardlink", "file_mode": mode, "prefix_placeholder": placeholder})
    (package / "info").mkdir()
    (package / "info" / "paths.json").write_text(json.dumps({"paths": paths, "paths_version": 1}))
    (package / "info" / "index.json").write_text(json.dumps({"name": "tricky", "version": "1.0", "build": "0"}))
    (prefix / "conda-meta").mkdir()
    record = {
        "name": "tricky", "version": "1.0", "build": "0", "url": "file:///nowhere/tricky-1.0-0.conda",
        "files": sorted(TRICKY_FILES), "link": {"source": str(package), "type": 1},
    }
    (prefix / "conda-meta" / "tricky-1.0-0.json").write_text(json.dumps(record))
    # rattler writes it too; conda-pack 0.9.2 takes the archive's timestamps from it and fails without it.
    (prefix / "conda-meta" / "history").write_text("")
    return prefix


@pytest.mark.parametrize("python", [True, False], ids=["conda-unpack", "shell"])
async def test_relocation_matches_conda_byte_for_byte(tmp_path: Path, python: bool) -> None:
    packed = await asyncio.to_thread(pack_prefix, tricky_prefix(tmp_path / "build"), tmp_path / "tricky.tar.gz")
    script = tmp_path / "tricky.sh"
    await asyncio.to_thread(
        installer.write_shell_installer, packed, script,
        description="tests/tricky, build 1", environment_name="tricky", platform=host_platform(), packages=[],
    )
    prefix = tmp_path / "installed here" / "tricky"
    environment = None if python else machine_without_python(tmp_path / "tools")

    output = run([shutil.which("sh"), script, "-b", "-p", prefix], env=environment)

    assert ("Relocating with conda-unpack" in output) is python
    for path, (content, placeholder, mode) in TRICKY_FILES.items():
        assert (prefix / path).read_bytes() == replace_prefix(content, mode, placeholder, str(prefix)), path


# --- through the running stack -----------------------------------------------------------------------


@pytest.fixture(scope="module")
async def artifact_stack(tmp_path_factory: pytest.TempPathFactory, channel_url: str):  # type: ignore[no-untyped-def]
    settings = {
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel_url,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel_url,
        "ENVSTORE_BUILD_ARTIFACTS": "LOCKFILE,YAML,CONDA_PACK,CONSTRUCTOR_INSTALLER",
    }
    async with EmbeddedStack(tmp_path_factory.mktemp("artifact-stack"), settings=settings) as running:
        yield running


async def test_a_submitted_environment_gets_a_working_tarball_and_installer(
    artifact_stack: EmbeddedStack, tmp_path: Path
) -> None:
    async with ApiClient(artifact_stack.api_url, token=artifact_stack.admin_token) as api:
        build_id = await api.submit(environment_yaml("shipped", list(FIVE_PACKAGE_SPEC)), namespace="packaging")
        await api.wait_for_artifacts(build_id, {ArtifactKind.CONDA_PACK, ArtifactKind.CONSTRUCTOR_INSTALLER})
        build = await api.wait_for_build(build_id)
    assert build["status"] == "COMPLETED", build["status_info"]
    keys = {artifact["artifact_type"]: artifact["key"] for artifact in build["build_artifacts"]}
    storage = LocalStorage(artifact_stack.data_directory / "storage")

    async def stored(kind: ArtifactKind) -> Path:
        blob = await storage.resolve(keys[kind])
        assert blob is not None, keys[kind]
        path = storage.local_path(blob)
        assert path is not None
        return path

    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    run(["tar", "-xzf", await stored(ArtifactKind.CONDA_PACK), "-C", unpacked])
    run(["python3", unpacked / "bin" / "conda-unpack"])
    assert_environment_runs_from(unpacked)

    installed = tmp_path / "installed"
    run(["sh", await stored(ArtifactKind.CONSTRUCTOR_INSTALLER), "-b", "-p", installed])
    assert_environment_runs_from(installed)
