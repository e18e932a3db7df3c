"""The virtual packages (``__unix``, ``__glibc`` …) a solve for a platform may assume.

For the host platform they are detected; for other platforms we assume a typical recent system,
so a lock for e.g. ``osx-arm64`` can be made on a Linux server.
"""

from __future__ import annotations

from typing import Any

import rattler

TYPICAL_SYSTEMS: dict[str, list[tuple[str, str, str]]] = {
    "linux": [("__unix", "0", "0"), ("__linux", "5.10", "0"), ("__glibc", "2.28", "0")],
    "osx": [("__unix", "0", "0"), ("__osx", "13.0", "0")],
    "win": [("__win", "0", "0")],
}
ARCHSPEC = {
    "64": "x86_64",
    "aarch64": "aarch64",
    "arm64": "arm64",
    "ppc64le": "ppc64le",
    "32": "x86",
}


def virtual_packages_for(platform: str, host_platform: str) -> list[Any]:
    if platform == host_platform:
        return [package.into_generic() for package in rattler.VirtualPackage.detect()]
    system, _, architecture = platform.partition("-")
    packages = [
        rattler.GenericVirtualPackage(
            rattler.PackageName(name), rattler.Version(version), rattler.BuildString(build)
        )
        for name, version, build in TYPICAL_SYSTEMS.get(system, [])
    ]
    if architecture in ARCHSPEC:
        packages.append(
            rattler.GenericVirtualPackage(
                rattler.PackageName("__archspec"),
                rattler.Version("1"),
                rattler.BuildString(ARCHSPEC[architecture]),
            )
        )
    return packages


def describe(packages: list[Any]) -> list[str]:
    return sorted(f"{package.name.normalized}={package.version}={package.build_string}" for package in packages)


def glibc_of(packages: list[Any]) -> str | None:
    """The ``__glibc`` version among ``packages`` (None: not a glibc system)."""
    for package in packages:
        if package.name.normalized == "__glibc":
            return str(package.version)
    return None


def with_overrides(packages: list[Any], overrides: list[str]) -> list[Any]:
    """``packages`` with the specification's virtual packages (``__cuda=12.4``) added, each
    replacing one of the same name."""
    from envstore.common.specification import parse_virtual_package

    if not overrides:
        return packages
    replaced = {}
    for text in overrides:
        name, version, build = parse_virtual_package(text)
        replaced[name] = rattler.GenericVirtualPackage(
            rattler.PackageName(name), rattler.Version(version), rattler.BuildString(build)
        )
    return [package for package in packages if package.name.normalized not in replaced] + list(replaced.values())
