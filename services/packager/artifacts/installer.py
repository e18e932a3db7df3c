"""The CONSTRUCTOR_INSTALLER artifact: an installer of the build's locked packages, never a second solve.

- With conda's ``constructor`` on PATH (production images install it from conda-forge) and python in
  the lock (constructor refuses a base environment without it), constructor makes the installer from
  an ``@EXPLICIT`` file of the locked package URLs, which conda installs as listed, without solving.
- Otherwise: a self-extracting POSIX shell installer, ``installer_header.sh`` filled in and followed
  by the build's conda-pack archive (the same one as the CONDA_PACK artifact, packed once). It checks
  the archive's sha256, unpacks it into the prefix the user chooses, and relocates it there: with
  ``conda-unpack`` when a python 3 is at hand, else with shell commands precomputed here from the
  archive (``relocation_plan``), which rewrite text and binary placeholders exactly as conda-unpack.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import shlex
import shutil
from importlib import resources
from pathlib import Path

import yaml

from envstore.common.artifact_keys import artifact_key
from envstore.common.artifact_kinds import ArtifactKind
from envstore.common.lock import LockedPackage
from envstore.packager.artifacts.inputs import BuildInputs, Produced
from envstore.packager.artifacts.packed_environment import packed_environment
from envstore.packager.artifacts.relocation_plan import RelocationPlan, relocation_plan

log = logging.getLogger(__name__)

HEADER_TEMPLATE = "installer_header.sh"
CHUNK = 1024 * 1024


async def produce(inputs: BuildInputs) -> Produced:
    packages = inputs.lock.packages_for(inputs.platform)
    constructor = await conda_constructor()
    if constructor and any(package.name == "python" for package in packages):
        installer = await constructor_installer(inputs, constructor)
    else:
        if constructor:
            log.info("build %s has no python, which constructor requires: shell installer", inputs.build.build_id)
        installer = await shell_installer(inputs)
    blob = await inputs.storage.put_file(installer)
    return Produced(artifact_key(ArtifactKind.CONSTRUCTOR_INSTALLER, inputs.build.build_key), blob, "application/x-sh")


# --- the self-extracting shell installer -------------------------------------------------------------


async def shell_installer(inputs: BuildInputs) -> Path:
    archive = await packed_environment(inputs)
    installer = inputs.work_directory / f"{inputs.build.build_key}.sh"
    build = inputs.build
    await asyncio.to_thread(
        write_shell_installer,
        archive,
        installer,
        description=f"{build.namespace}/{build.environment}, build {build.build_id}",
        environment_name=build.environment,
        platform=inputs.platform,
        packages=inputs.lock.packages_for(inputs.platform),
    )
    return installer


def write_shell_installer(
    archive: Path,
    installer: Path,
    *,
    description: str,
    environment_name: str,
    platform: str,
    packages: list[LockedPackage],
) -> None:
    """The header script, then the archive's bytes (blocking: run it in a thread)."""
    payload_sha256, payload_size = sha256_and_size(archive)
    header = installer_header(
        description=description,
        environment_name=environment_name,
        platform=platform,
        packages=packages,
        payload_sha256=payload_sha256,
        payload_size=payload_size,
        plan=relocation_plan(archive),
    )
    with open(installer, "wb") as target, open(archive, "rb") as source:
        target.write(header.encode())
        shutil.copyfileobj(source, target, CHUNK)
    installer.chmod(0o755)


def installer_header(
    *,
    description: str,
    environment_name: str,
    platform: str,
    packages: list[LockedPackage],
    payload_sha256: str,
    payload_size: int,
    plan: RelocationPlan,
) -> str:
    one_line_description = " ".join(description.split())
    values = {
        "TITLE": f"Installer of the conda environment {one_line_description}",
        "PACKAGE_COMMENTS": "".join(f"#   {package.pin}\n" for package in sorted(packages, key=lambda p: p.name)),
        "DESCRIPTION": shlex.quote(one_line_description),
        "ENVIRONMENT_NAME": shlex.quote(environment_name),
        "PLATFORM": shlex.quote(platform),
        "PACKAGE_COUNT": str(len(packages)),
        "PAYLOAD_SIZE": str(payload_size),
        "PAYLOAD_SHA256": payload_sha256,
        "LONGEST_PREFIX": "" if plan.longest_prefix is None else str(plan.longest_prefix),
        "RELOCATION_PLAN": "".join(f"    {line}\n" for line in plan.shell_commands().splitlines()),
    }
    header = resources.files(__package__).joinpath(HEADER_TEMPLATE).read_text()
    for name, value in values.items():
        header = header.replace(f"@@{name}@@", value)
    if "@@" in header:
        raise ValueError(f"{HEADER_TEMPLATE} has a placeholder this module does not fill")
    return header


def sha256_and_size(path: Path) -> tuple[str, int]:
    hasher = hashlib.sha256()
    size = 0
    with open(path, "rb") as source:
        while chunk := source.read(CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return hasher.hexdigest(), size


# --- conda's constructor, when installed ---------------------------------------------------------------


async def conda_constructor() -> str | None:
    """conda's ``constructor`` if it is on PATH. PyPI's ``constructor`` is an unrelated program of the
    same name, so the command must know conda constructor's own ``--help-construct``."""
    command = shutil.which("constructor")
    if command is None:
        return None
    process = await asyncio.create_subprocess_exec(
        command, "--help-construct", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    return command if await process.wait() == 0 else None


async def constructor_installer(inputs: BuildInputs, constructor: str) -> Path:
    directory = inputs.work_directory / "constructor"
    output = directory / "output"
    output.mkdir(parents=True, exist_ok=True)
    explicit = directory / "explicit.txt"
    explicit.write_text(explicit_environment(inputs.lock.packages_for(inputs.platform)))
    installer_name = f"{inputs.build.build_key}.sh"
    construct = {
        "name": constructor_name(inputs.build.environment),
        "version": str(inputs.build.build_id),
        "channels": list(inputs.lock.channels),
        "environment_file": str(explicit),
        "installer_type": "sh",
        "installer_filename": installer_name,
    }
    (directory / "construct.yaml").write_text(yaml.safe_dump(construct, sort_keys=False))
    process = await asyncio.create_subprocess_exec(
        constructor, str(directory), "--output-dir", str(output), "--platform", inputs.platform,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output_text, _ = await process.communicate()
    if process.returncode != 0:
        tail = output_text.decode(errors="replace")[-2000:]
        raise RuntimeError(f"constructor failed with exit code {process.returncode}: {tail}")
    return output / installer_name


def explicit_environment(packages: list[LockedPackage]) -> str:
    lines = [f"{package.url}#{package.md5}" if package.md5 else package.url for package in packages]
    return "@EXPLICIT\n" + "".join(f"{line}\n" for line in lines)


def constructor_name(environment: str) -> str:
    """constructor takes letters, digits, ``_-.``, and no leading or trailing ``-``/``.``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", environment).strip("-.") or "environment"
