"""The CONSTRUCTOR_INSTALLER artifact: envstore's own self-extracting shell installer of the build's
locked packages (never a second solve).

It is not made by conda's ``constructor``, which cannot be installed where envstore is built and
tested; the artifact keeps conda-store's kind name so conda-store's clients find it. The installer is
``installer_header.sh`` filled in and followed by the build's conda-pack archive (the same one as the
CONDA_PACK artifact, packed once). It checks the archive's sha256, unpacks it into the prefix the user
chooses, and relocates it there: with ``conda-unpack`` when a python 3 is at hand, else with shell
commands precomputed here from the archive (``relocation_plan``), which rewrite text and binary
placeholders exactly as conda-unpack.
"""

from __future__ import annotations

import asyncio
import hashlib
import shlex
import shutil
from importlib import resources
from pathlib import Path

from envstore.common.artifact_keys import artifact_key
from envstore.common.artifact_kinds import ArtifactKind
from envstore.common.lock import LockedPackage
from envstore.packager.artifacts.inputs import BuildInputs, Produced
from envstore.packager.artifacts.packed_environment import packed_environment
from envstore.packager.artifacts.relocation_plan import RelocationPlan, relocation_plan

HEADER_TEMPLATE = "installer_header.sh"
CHUNK = 1024 * 1024


async def produce(inputs: BuildInputs) -> Produced:
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
