"""Turning a user's specification into a ``build.submitted`` event, with conda-store's
validation against settings. Nothing is published unless the specification is usable."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from rattler import MatchSpec

from envstore.common.admin_hooks import HookError, SpecificationCheck
from envstore.common.channels import ChannelGuard, allowed_channels, channel_refusal, channel_url
from envstore.common.events import BuildSettings, BuildSubmitted
from envstore.common.hashing import specification_sha256
from envstore.common.pip_requirements import parse_pip_section
from envstore.common.settings import EnvstoreSettings
from envstore.common.specification import (
    EnvironmentSpecification,
    PipDependencies,
    SpecificationError,
    check_name,
    load_environment_specification,
    parse_specification_text,
)


@dataclass(frozen=True)
class SubmissionRequest:
    specification: str
    namespace: str
    is_lockfile: bool = False
    environment_name: str = ""
    environment_description: str = ""


def _package_name(spec: str) -> str:
    return MatchSpec(spec).name.normalized if MatchSpec(spec).name else spec


def _pip_name(entry: str) -> str:
    """A pip requirement's normalized project name; an option line (``--index-url …``) is its own key."""
    if entry.startswith("-"):
        return entry
    return canonicalize_name(Requirement(entry).name)


def _pip_packages(
    pip: list[str], settings: EnvstoreSettings
) -> list[str]:
    """conda-store's ``validate_environment_pypi_packages``: default packages when there are none,
    included packages added unless named, required packages checked."""
    if not pip:
        pip = list(settings.pypi_default_packages)
    named = {_pip_name(entry) for entry in pip}
    pip = pip + [entry for entry in settings.pypi_included_packages if _pip_name(entry) not in named]
    named = {_pip_name(entry) for entry in pip}
    missing = [entry for entry in settings.pypi_required_packages if _pip_name(entry) not in named]
    if missing:
        raise SpecificationError(
            f"PyPI packages {', '.join(missing)} are required by the server's settings but not specified; "
            "add them to the specification's pip dependencies"
        )
    return pip


def apply_package_settings(
    specification: EnvironmentSpecification, settings: EnvstoreSettings
) -> EnvironmentSpecification:
    """conda-store's ``validate_specification`` rules, in its order: default and allowed channels;
    pip default/included/required packages; then conda default packages (only for an empty
    dependency list), included packages (added unless named) and required packages (checked)."""
    channels = specification.channels or list(settings.conda_default_channels)
    refusal = channel_refusal(channels, allowed_channels(settings), settings.conda_channel_alias)
    if refusal:
        raise SpecificationError(refusal)
    conda = specification.conda_dependencies
    pip = _pip_packages(specification.pip_dependencies, settings)
    if not conda and not pip:
        conda = list(settings.conda_default_packages)
    names = {_package_name(spec) for spec in conda}
    conda = conda + [spec for spec in settings.conda_included_packages if _package_name(spec) not in names]
    names = {_package_name(spec) for spec in conda}
    for required in settings.conda_required_packages:
        if _package_name(required) not in names:
            raise SpecificationError(
                f"Conda package {required} is required by the server's settings but not specified; "
                "add it to the specification's dependencies"
            )
    dependencies: list[Any] = list(conda)
    if pip:
        dependencies.append(PipDependencies(pip=pip))
    return specification.model_copy(update={"channels": channels, "dependencies": dependencies})


def build_settings_of(settings: EnvstoreSettings) -> BuildSettings:
    """What the workers apply to a build, from the settings in force for its environment."""
    return BuildSettings(
        channel_alias=settings.conda_channel_alias,
        max_solve_seconds=settings.conda_max_solve_time,
        storage_threshold=settings.storage_threshold,
        prefix_permissions=settings.default_permissions,
        prefix_uid=settings.default_uid,
        prefix_gid=settings.default_gid,
    )


def build_submission(
    request: SubmissionRequest,
    settings: EnvstoreSettings,
    now: float | None = None,
    check: SpecificationCheck | None = None,
) -> BuildSubmitted:
    """The build a submission asks for, validated against ``settings`` (those in force for its
    namespace and environment) and then by the deployment's ``check`` (blocking when there is
    one: it is the deployment's own code). Lockfiles are built as they are (conda-store neither
    applies settings nor calls its check on them)."""
    check_name_or_error(request.namespace, "namespace")
    document = parse_specification_text(request.specification)
    scheduled_on = now if now is not None else time.time()
    if request.is_lockfile:
        return _lockfile_submission(request, document, settings, scheduled_on)
    specification = apply_package_settings(load_environment_specification(document), settings)
    if check is not None:
        specification = check(request.namespace, specification)
        if specification.name != document.get("name"):
            raise HookError(
                f"{check.SETTING}={check.dotted_path} renamed the environment "
                f"{document.get('name')!r} to {specification.name!r}; a check may not move a submission"
            )
    normalized = specification.normalized()
    return BuildSubmitted(
        namespace=request.namespace,
        environment=specification.name,
        description=specification.description or request.environment_description or None,
        specification=normalized,
        spec_sha256=specification_sha256(normalized),
        platforms=list(settings.conda_solve_platforms),
        artifacts=list(settings.build_artifacts),
        scheduled_on=scheduled_on,
        build_key_version=settings.build_key_version,
        settings=build_settings_of(settings),
    )


def _lockfile_submission(
    request: SubmissionRequest, lockfile: dict[str, Any], settings: EnvstoreSettings, scheduled_on: float
) -> BuildSubmitted:
    if lockfile.get("version", 1) != 1:
        raise SpecificationError("lockfile version must be 1 (conda-lock's format version 1)")
    if not isinstance(lockfile.get("package"), list) or not isinstance(lockfile.get("metadata"), dict):
        raise SpecificationError("a conda-lock lockfile needs 'metadata' and a 'package' list")
    name = check_name_or_error(request.environment_name, "environment_name")
    specification = {
        "name": name,
        "description": request.environment_description,
        "lockfile": lockfile,
    }
    platforms = lockfile["metadata"].get("platforms") or sorted(
        {package.get("platform") for package in lockfile["package"] if package.get("platform")}
    )
    return BuildSubmitted(
        namespace=request.namespace,
        environment=name,
        description=request.environment_description or None,
        specification=specification,
        spec_sha256=specification_sha256(specification),
        is_lockfile=True,
        platforms=list(platforms),
        artifacts=list(settings.build_artifacts),
        scheduled_on=scheduled_on,
        build_key_version=settings.build_key_version,
        settings=build_settings_of(settings),
    )


def pip_index_urls(event: BuildSubmitted) -> list[str]:
    """The pip indexes and link locations a specification's ``pip:`` section names."""
    if event.is_lockfile:
        return []
    for dependency in event.specification.get("dependencies") or []:
        if isinstance(dependency, dict) and isinstance(dependency.get("pip"), list):
            return parse_pip_section([str(line) for line in dependency["pip"]]).source_urls
    return []


async def submission_refusal(guard: ChannelGuard, event: BuildSubmitted, channel_alias: str) -> str | None:
    """Why building ``event`` would make the server fetch from somewhere it may not, or None."""
    refusal = await guard.refusal(fetched_urls(event, channel_alias), "package URL" if event.is_lockfile else "channel")
    return refusal or await guard.refusal(pip_index_urls(event), "pip index URL")


def fetched_urls(event: BuildSubmitted, channel_alias: str) -> list[str]:
    """What building ``event`` makes the server fetch: its channels, or a lockfile's package URLs."""
    if event.is_lockfile:
        packages = event.specification.get("lockfile", {}).get("package") or []
        return sorted({str(package["url"]) for package in packages if isinstance(package, dict) and package.get("url")})
    channels = event.specification.get("channels") or []
    return [channel_url(str(channel), channel_alias) for channel in channels]


def check_name_or_error(name: str, what: str) -> str:
    try:
        return check_name(name, what)
    except ValueError as error:
        raise SpecificationError(str(error)) from None
