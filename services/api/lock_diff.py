"""What changed between two builds' locks: conda packages per platform and pip requirements,
added, removed or changed (version or build), as a document and as the text a reviewer reads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from envstore.common.lock import Lock, LockedPackage


@dataclass(frozen=True)
class PackageVersion:
    name: str
    version: str
    build: str = ""  # conda build string; empty for pip


@dataclass(frozen=True)
class PackageChange:
    name: str
    before: PackageVersion
    after: PackageVersion


@dataclass
class PackageSetDiff:
    added: list[PackageVersion] = field(default_factory=list)
    removed: list[PackageVersion] = field(default_factory=list)
    changed: list[PackageChange] = field(default_factory=list)
    unchanged: int = 0

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


@dataclass
class LockDiff:
    from_build: int
    to_build: int
    conda: dict[str, PackageSetDiff]  # platform → diff
    pip: dict[str, PackageSetDiff]  # platform → diff (resolved wheels), or "requirements" for older locks

    def document(self) -> dict[str, Any]:
        return {
            "from_build": self.from_build,
            "to_build": self.to_build,
            "identical": all(diff.empty for diff in (*self.conda.values(), *self.pip.values())),
            "conda": {platform: asdict(diff) for platform, diff in self.conda.items()},
            "pip": {platform: asdict(diff) for platform, diff in self.pip.items()},
        }

    def text(self) -> str:
        lines = [f"--- build {self.from_build}", f"+++ build {self.to_build}"]
        for platform, diff in self.conda.items():
            lines.append(f"conda {platform}: {_summary(diff)}")
            lines.extend(_diff_lines(diff))
        for platform, diff in self.pip.items():
            lines.append(f"pip {platform}: {_summary(diff)}")
            lines.extend(_diff_lines(diff))
        return "\n".join(lines) + "\n"


def _summary(diff: PackageSetDiff) -> str:
    return (
        f"{len(diff.added)} added, {len(diff.removed)} removed, {len(diff.changed)} changed, "
        f"{diff.unchanged} unchanged"
    )


def _label(package: PackageVersion) -> str:
    return f"{package.version} ({package.build})" if package.build else package.version


def _diff_lines(diff: PackageSetDiff) -> list[str]:
    rows = [(package.name, f"+ {package.name} {_label(package)}") for package in diff.added]
    rows += [(package.name, f"- {package.name} {_label(package)}") for package in diff.removed]
    rows += [
        (change.name, f"~ {change.name} {_label(change.before)} -> {_label(change.after)}") for change in diff.changed
    ]
    return ["  " + line for _, line in sorted(rows)]


def _compare(before: dict[str, PackageVersion], after: dict[str, PackageVersion]) -> PackageSetDiff:
    diff = PackageSetDiff()
    for name in sorted(before.keys() | after.keys()):
        old, new = before.get(name), after.get(name)
        if old is None and new is not None:
            diff.added.append(new)
        elif new is None and old is not None:
            diff.removed.append(old)
        elif old != new and old is not None and new is not None:
            diff.changed.append(PackageChange(name, old, new))
        else:
            diff.unchanged += 1
    return diff


def _conda_versions(packages: list[LockedPackage]) -> dict[str, PackageVersion]:
    return {package.name: PackageVersion(package.name, package.version, package.build) for package in packages}


def pip_versions(requirements: list[str]) -> dict[str, PackageVersion]:
    """Pinned pip requirements (``name==version``) by normalized name; an unpinned one keeps its
    specifier as its version, so a changed specifier still shows."""
    versions = {}
    for text in requirements:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            versions[text] = PackageVersion(text, "")
            continue
        pins = [spec.version for spec in requirement.specifier if spec.operator in ("==", "===")]
        version = pins[0] if len(pins) == 1 else str(requirement.specifier)
        name = canonicalize_name(requirement.name)
        versions[name] = PackageVersion(name, version)
    return versions


def diff_locks(from_build: int, before: Lock, to_build: int, after: Lock) -> LockDiff:
    platforms = sorted(before.platforms.keys() | after.platforms.keys())
    return LockDiff(
        from_build,
        to_build,
        {
            platform: _compare(
                _conda_versions(before.platforms.get(platform, [])), _conda_versions(after.platforms.get(platform, []))
            )
            for platform in platforms
        },
        _pip_diffs(before, after, platforms),
    )


def _resolved_pip(lock: Lock, platform: str) -> dict[str, PackageVersion]:
    return {package.name: PackageVersion(package.name, package.version) for package in lock.pip_packages_for(platform)}


def _pip_diffs(before: Lock, after: Lock, platforms: list[str]) -> dict[str, PackageSetDiff]:
    """Resolved wheels per platform; locks made before pip resolution hold only requirements."""
    if before.pip_packages or after.pip_packages:
        return {platform: _compare(_resolved_pip(before, platform), _resolved_pip(after, platform)) for platform in platforms}
    if before.pip or after.pip:
        return {"requirements": _compare(pip_versions(before.pip), pip_versions(after.pip))}
    return {}
