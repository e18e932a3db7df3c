"""A build's software bill of materials: CycloneDX 1.6 JSON made from its lock (cyclonedx-python-lib).

One document per build and platform: the environment as the described application, every locked
conda package of that platform as a library (version, build, licence, sha256/md5, a ``pkg:conda``
purl naming its channel and subdir, its dependencies by name), and the pip requirements as
``pkg:pypi`` libraries. It holds no time of making and a serial number derived from its content,
so the same build always gives the same bytes: the API's ``/sbom/`` route and the registry's OCI
referrer serve one document (and one digest) without storing it.
"""

from __future__ import annotations

import uuid

from cyclonedx.contrib.license.factories import LicenseFactory
from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from envstore.common.lock import Lock, LockedPackage, LockedPipPackage
from envstore.common.settings import host_platform

SBOM_MEDIA_TYPE = "application/vnd.cyclonedx+json"
SBOM_SPEC_VERSION = "1.6"
PROPERTY_PREFIX = "envstore:"


def sbom_platform(lock: Lock, asked: str | None = None) -> str:
    """The platform an SBOM describes: the one asked for, else the one the single-platform
    artifacts (the image) are made for — the host's if locked, else the first locked."""
    if asked is not None:
        if asked not in lock.platforms:
            raise KeyError(f"the lock has no packages for {asked}; locked platforms: {sorted(lock.platforms)}")
        return asked
    host = host_platform()
    return host if host in lock.platforms else sorted(lock.platforms)[0]


def _archive_type(file_name: str) -> str:
    return "tar.bz2" if file_name.endswith(".tar.bz2") else "conda"


def _conda_component(package: LockedPackage, licenses: LicenseFactory) -> Component:
    purl = PackageURL(
        "conda",
        None,
        package.name,
        package.version,
        {"build": package.build, "channel": package.channel, "subdir": package.subdir, "type": _archive_type(package.file_name)},
    )
    hashes = [HashType(alg=HashAlgorithm.SHA_256, content=package.sha256)] if package.sha256 else []
    if package.md5:
        hashes.append(HashType(alg=HashAlgorithm.MD5, content=package.md5))
    return Component(
        type=ComponentType.LIBRARY,
        name=package.name,
        version=package.version,
        bom_ref=f"conda:{package.subdir}/{package.file_name}",
        purl=purl,
        hashes=hashes,
        licenses=[licenses.make_from_string(package.license)] if package.license else [],
        properties=[
            Property(name=f"{PROPERTY_PREFIX}conda:build", value=package.build),
            Property(name=f"{PROPERTY_PREFIX}conda:url", value=package.url),
        ],
    )


def _pip_component(text: str) -> Component:
    try:
        requirement = Requirement(text)
    except InvalidRequirement:
        return Component(type=ComponentType.LIBRARY, name=text, bom_ref=f"pip:{text}")
    pins = [spec.version for spec in requirement.specifier if spec.operator in ("==", "===")]
    name = canonicalize_name(requirement.name)
    version = pins[0] if len(pins) == 1 else None
    return Component(
        type=ComponentType.LIBRARY,
        name=name,
        version=version,
        bom_ref=f"pip:{name}",
        purl=PackageURL("pypi", None, name, version),
        properties=[] if version else [Property(name=f"{PROPERTY_PREFIX}pip:requirement", value=text)],
    )


def _wheel_component(package: LockedPipPackage) -> Component:
    return Component(
        type=ComponentType.LIBRARY,
        name=package.name,
        version=package.version,
        bom_ref=f"pip:{package.file_name}",
        purl=PackageURL("pypi", None, package.name, package.version),
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=package.sha256)] if package.sha256 else [],
        properties=[Property(name=f"{PROPERTY_PREFIX}pip:url", value=package.url)],
    )


def _depended_names(package: LockedPackage) -> list[str]:
    return [spec.split()[0].split("[")[0] for spec in package.depends if spec.strip()]


def build_sbom(
    lock: Lock, *, build_id: int, namespace: str, environment: str, build_key: str, platform: str | None = None
) -> bytes:
    """The build's SBOM for ``platform`` (see ``sbom_platform``), as CycloneDX 1.6 JSON bytes."""
    chosen = sbom_platform(lock, platform)
    packages = sorted(lock.packages_for(chosen), key=lambda package: package.name)
    identity = f"envstore:{namespace}/{environment}:{build_id}:{build_key}:{chosen}:" + ",".join(
        f"{package.subdir}/{package.file_name}" for package in packages
    ) + ";" + ",".join(sorted(lock.pip)) + ";" + ",".join(
        package.file_name for package in lock.pip_packages_for(chosen)
    )
    bom = Bom(serial_number=uuid.uuid5(uuid.NAMESPACE_URL, identity))
    bom.metadata.timestamp = None  # reproducible: the same build gives the same bytes
    described = Component(
        type=ComponentType.APPLICATION,
        name=f"{namespace}/{environment}",
        version=build_key,
        bom_ref=f"envstore:build/{build_id}",
        properties=[
            Property(name=f"{PROPERTY_PREFIX}build_id", value=str(build_id)),
            Property(name=f"{PROPERTY_PREFIX}platform", value=chosen),
            *(Property(name=f"{PROPERTY_PREFIX}channel", value=channel) for channel in lock.channels),
        ],
    )
    bom.metadata.component = described
    licenses = LicenseFactory()
    by_name = {package.name: _conda_component(package, licenses) for package in packages}
    wheels = sorted(lock.pip_packages_for(chosen), key=lambda package: package.name)
    wheel_by_name = {package.name: _wheel_component(package) for package in wheels}
    # Locks made before pip resolution hold only the requirements as written.
    pip_components = list(wheel_by_name.values()) or [_pip_component(text) for text in sorted(lock.pip)]
    for component in [*by_name.values(), *pip_components]:
        bom.components.add(component)
    for package in packages:
        needed = [by_name[name] for name in _depended_names(package) if name in by_name]
        bom.register_dependency(by_name[package.name], needed)
    for wheel in wheels:
        needed = [wheel_by_name[canonicalize_name(name)] for name in wheel.dependencies if canonicalize_name(name) in wheel_by_name]
        bom.register_dependency(wheel_by_name[wheel.name], needed)
    bom.register_dependency(described, [*by_name.values(), *pip_components])
    return JsonV1Dot6(bom).output_as_string(indent=None).encode()
