"""The lock: the exact packages of a build for every platform. "The lock is the build": the
builder installs from it and the packager derives every artifact from it.

Stored as a JSON blob; records use conda's repodata field names.
"""

from __future__ import annotations

from typing import Any

import msgspec

from envstore.common.events import InstalledPackage


class LockedPackage(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    version: str
    build: str
    build_number: int = 0
    subdir: str
    noarch: str | None = None
    depends: list[str] = []
    constrains: list[str] = []
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None
    license: str | None = None
    timestamp: int | None = None
    url: str
    channel: str
    file_name: str

    @property
    def pin(self) -> str:
        return f"{self.name}={self.version}={self.build}"


class LockedPipPackage(msgspec.Struct, frozen=True, kw_only=True):
    """One wheel of a platform's pip packages, installed without its dependencies (they are
    locked beside it). Recorded in the lockfile as conda-lock records pip packages."""

    name: str  # normalized (PEP 503)
    version: str
    url: str
    sha256: str
    file_name: str
    dependencies: dict[str, str] = {}  # name → the requirement's specifier, as conda-lock writes them

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"


class Lock(msgspec.Struct, frozen=True, kw_only=True):
    version: int = 1
    channels: list[str]
    platforms: dict[str, list[LockedPackage]]
    # The specification's pip section as written (requirements and index options) …
    pip: list[str] = []
    # … and what it resolved to, per platform (locks before pip resolution have none).
    pip_packages: dict[str, list[LockedPipPackage]] = {}
    # The virtual packages each platform was solved with (``__glibc=2.28=0``, a spec's ``__cuda``).
    virtual_packages: dict[str, list[str]] = {}

    def packages_for(self, platform: str) -> list[LockedPackage]:
        try:
            return self.platforms[platform]
        except KeyError:
            raise KeyError(
                f"the lock has no packages for {platform}; locked platforms: {sorted(self.platforms)}"
            ) from None

    def pip_packages_for(self, platform: str) -> list[LockedPipPackage]:
        return self.pip_packages.get(platform, [])

    def python_version_for(self, platform: str) -> str | None:
        """The version of the platform's conda ``python`` package, if it has one."""
        for package in self.platforms.get(platform, []):
            if package.name == "python":
                return package.version
        return None

    def encode(self) -> bytes:
        return msgspec.json.encode(self)

    @staticmethod
    def decode(data: bytes) -> Lock:
        return msgspec.json.decode(data, type=Lock)


def _noarch_text(noarch: Any) -> str | None:
    if noarch is None:
        return None
    if getattr(noarch, "python", False):
        return "python"
    if getattr(noarch, "generic", False):
        return "generic"
    return None


def channel_of_url(url: str, subdir: str) -> str:
    """``https://host/conda-forge/linux-64/x.conda`` → ``https://host/conda-forge`` (conda-lock
    files name only the package URL; rattler needs the channel)."""
    base, _, _ = url.rpartition("/")
    return base.removesuffix(f"/{subdir}") if base.endswith(f"/{subdir}") else base.rpartition("/")[0]


def locked_package_from_record(record: Any) -> LockedPackage:
    """A rattler ``RepoDataRecord`` → LockedPackage."""
    return LockedPackage(
        name=record.name.normalized,
        version=str(record.version),
        build=str(record.build),
        build_number=int(record.build_number),
        subdir=str(record.subdir),
        noarch=_noarch_text(record.noarch),
        depends=list(record.depends),
        constrains=list(record.constrains),
        md5=record.md5.hex() if record.md5 else None,
        sha256=record.sha256.hex() if record.sha256 else None,
        size=record.size,
        license=record.license,
        timestamp=int(record.timestamp.timestamp() * 1000) if record.timestamp else None,
        url=str(record.url),
        channel=str(record.channel or channel_of_url(str(record.url), str(record.subdir))),
        file_name=record.file_name,
    )


def record_from_locked_package(package: LockedPackage) -> Any:
    """LockedPackage → rattler ``RepoDataRecord`` (for install)."""
    import rattler

    record = rattler.PackageRecord(
        name=package.name,
        version=package.version,
        build=rattler.BuildString(package.build),
        build_number=package.build_number,
        subdir=package.subdir,
        noarch=package.noarch,
        depends=package.depends,
        constrains=package.constrains,
        sha256=bytes.fromhex(package.sha256) if package.sha256 else None,
        md5=bytes.fromhex(package.md5) if package.md5 else None,
        size=package.size,
        license=package.license,
    )
    return rattler.RepoDataRecord(record, package.file_name, package.url, package.channel)


def installed_package(package: LockedPackage) -> InstalledPackage:
    return InstalledPackage(
        name=package.name,
        version=package.version,
        build=package.build,
        build_number=package.build_number,
        channel=package.channel,
        subdir=package.subdir,
        size=package.size,
        sha256=package.sha256,
        md5=package.md5,
        license=package.license,
        depends=package.depends,
        constrains=package.constrains,
        timestamp=package.timestamp,
    )
