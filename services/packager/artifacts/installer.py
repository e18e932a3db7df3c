"""The CONSTRUCTOR_INSTALLER artifact: envstore's own self-extracting shell installer of the build's
locked packages (never a second solve).

It is not made by conda's ``constructor``, which cannot be installed where envstore is built and
tested; the artifact keeps conda-store's kind name so conda-store's clients find it. The installer is
``installer_header.sh`` filled in and followed by the build's conda-pack archive (the same one as the
CONDA_PACK artifact, packed and compressed once). It checks the archive's sha256, unpacks it into the
prefix the user chooses, and relocates it there: with ``conda-unpack`` when a python 3 is at hand,
else with shell commands precomputed while packing (``relocation_plan``), which rewrite text and
binary placeholders exactly as conda-unpack.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shlex
from importlib import resources
from pathlib import Path

from envstore.common.artifact_keys import artifact_key
from envstore.common.artifact_kinds import ArtifactKind
from envstore.common.events import BlobRef
from envstore.common.lock import LockedPackage
from envstore.packager.artifacts.inputs import BuildInputs, Produced
from envstore.packager.artifacts.packed_environment import PackedEnvironment, packed_environment

HEADER_TEMPLATE = "installer_header.sh"
CHUNK = 1024 * 1024


async def produce(inputs: BuildInputs) -> Produced:
    installer, written = await shell_installer(inputs)
    blob = await inputs.storage.adopt_file(installer, written)
    return Produced(artifact_key(ArtifactKind.CONSTRUCTOR_INSTALLER, inputs.build.build_key, inputs.further_platform), blob, "application/x-sh")


# --- the self-extracting shell installer -------------------------------------------------------------


async def shell_installer(inputs: BuildInputs) -> tuple[Path, BlobRef]:
    packed = await packed_environment(inputs)
    installer = inputs.work_directory / f"{inputs.build.build_key}.sh"
    build = inputs.build
    written = await asyncio.to_thread(
        write_shell_installer,
        packed,
        installer,
        description=f"{build.namespace}/{build.environment}, build {build.build_id}",
        environment_name=build.environment,
        platform=inputs.platform,
        packages=inputs.lock.packages_for(inputs.platform),
    )
    return installer, written


def write_shell_installer(
    packed: PackedEnvironment,
    installer: Path,
    *,
    description: str,
    environment_name: str,
    platform: str,
    packages: list[LockedPackage],
) -> BlobRef:
    """The header script, then the archive's bytes, hashed as written (blocking: run it in a thread).
    Nothing is compressed again: the payload is the CONDA_PACK archive as it is."""
    header = installer_header(
        description=description,
        environment_name=environment_name,
        platform=platform,
        packages=packages,
        payload_sha256=packed.blob.digest.removeprefix("sha256:"),
        payload_size=packed.blob.size,
        longest_prefix=packed.longest_prefix,
        relocation_commands=packed.relocation_commands,
    ).encode()
    hasher = hashlib.sha256(header)
    size = len(header)
    with open(installer, "wb") as target, open(packed.archive, "rb") as source:
        target.write(header)
        while chunk := source.read(CHUNK):
            hasher.update(chunk)
            target.write(chunk)
            size += len(chunk)
        target.flush()
        os.fsync(target.fileno())
    installer.chmod(0o755)
    return BlobRef(digest="sha256:" + hasher.hexdigest(), size=size)


def installer_header(
    *,
    description: str,
    environment_name: str,
    platform: str,
    packages: list[LockedPackage],
    payload_sha256: str,
    payload_size: int,
    longest_prefix: int | None,
    relocation_commands: str,
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
        "LONGEST_PREFIX": "" if longest_prefix is None else str(longest_prefix),
        "RELOCATION_PLAN": "".join(f"    {line}\n" for line in relocation_commands.splitlines()),
    }
    header = resources.files(__package__).joinpath(HEADER_TEMPLATE).read_text()
    for name, value in values.items():
        header = header.replace(f"@@{name}@@", value)
    if "@@" in header:
        raise ValueError(f"{HEADER_TEMPLATE} has a placeholder this module does not fill")
    return header
