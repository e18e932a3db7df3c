"""What users send: an environment specification (environment.yaml), validated with messages
that say what to fix, and its normalized form."""

from __future__ import annotations

import re
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from envstore.common.pip_requirements import PipRequirements, parse_pip_section

NAME_PATTERN = re.compile(r"^[A-Za-z0-9\-+_@$&?^~.=]+\Z")  # \Z: no trailing newline
NAME_RULE = "letters, digits and the characters - + _ @ $ & ? ^ ~ . ="
# The namespace of the registry's dynamic images (conda-store's name), shared by every puller.
DYNAMIC_NAMESPACE = "conda-store-dynamic"
# libyaml's safe loader when PyYAML has it: five times faster on a big lockfile, which is
# parsed while the API answers other requests.
SAFE_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_virtual_package(text: str) -> tuple[str, str, str]:
    """``__cuda=12.4`` or ``__glibc=2.28=0`` → (name, version, build)."""
    name, _, rest = text.strip().partition("=")
    version, _, build = rest.partition("=")
    if not name.startswith("__") or not version:
        raise ValueError(
            f"virtual package {text!r} must be written as __name=version[=build], e.g. __cuda=12.4"
        )
    return name, version, build or "0"


class SpecificationError(ValueError):
    """The specification cannot be used; the message says why, for the user."""


# They match the pattern, but as directory names they would put a namespace's or an
# environment's files in its parent directory.
RESERVED_NAMES = frozenset({".", ".."})


def is_valid_name(value: str) -> bool:
    # fullmatch, not match: match's "$" also matches before a trailing newline.
    return NAME_PATTERN.fullmatch(value) is not None and value not in RESERVED_NAMES


def check_name(value: str, what: str = "name") -> str:
    if value in RESERVED_NAMES:
        raise ValueError(f"{what} {value!r} is not allowed: '.' and '..' are not names")
    if not is_valid_name(value):
        raise ValueError(f"{what} {value!r} may only contain {NAME_RULE}")
    return value


class PipDependencies(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pip: list[str]

    @field_validator("pip")
    @classmethod
    def _pip_requirements(cls, requirements: list[str]) -> list[str]:
        from packaging.requirements import InvalidRequirement, Requirement

        parsed = parse_pip_section(requirements)  # raises PipOptionError (a ValueError) with what to fix
        for requirement in parsed.requirements:
            try:
                Requirement(requirement)
            except InvalidRequirement as error:
                raise ValueError(f"pip requirement {requirement!r} is not valid: {error}") from None
        return requirements


class EnvironmentSpecification(BaseModel):
    """An environment.yaml, with conda-store's fields and defaults."""

    model_config = ConfigDict(extra="forbid")

    name: str
    channels: list[str] = Field(default_factory=list)
    dependencies: list[str | PipDependencies] = Field(default_factory=list)
    variables: dict[str, str | int] | None = None
    prefix: str | None = None
    description: str | None = ""
    # envstore's own field: virtual packages the solve assumes, replacing what the server detects or
    # assumes for each platform (a GPU build on a server without one: ``__cuda=12.4``).
    virtual_packages: list[str] | None = None

    @field_validator("virtual_packages")
    @classmethod
    def _valid_virtual_packages(cls, packages: list[str] | None) -> list[str] | None:
        for package in packages or []:
            parse_virtual_package(package)
        return packages

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        return check_name(name, "environment name")

    @field_validator("dependencies")
    @classmethod
    def _valid_match_specs(cls, dependencies: list[Any]) -> list[Any]:
        from rattler import MatchSpec

        pip_entries = 0
        for dependency in dependencies:
            if isinstance(dependency, PipDependencies):
                pip_entries += 1
                continue
            try:
                MatchSpec(dependency)
            except Exception as error:
                raise ValueError(f"dependency {dependency!r} is not a valid conda match spec: {error}") from None
        if pip_entries > 1:
            raise ValueError("only one 'pip:' entry is allowed in dependencies")
        return dependencies

    @property
    def conda_dependencies(self) -> list[str]:
        return [item for item in self.dependencies if isinstance(item, str)]

    @property
    def pip_dependencies(self) -> list[str]:
        for item in self.dependencies:
            if isinstance(item, PipDependencies):
                return item.pip
        return []

    @property
    def pip_requirements(self) -> PipRequirements:
        return parse_pip_section(self.pip_dependencies)

    def normalized(self) -> dict[str, Any]:
        """The spec as stored and hashed (the shape conda-store's model_dump gives; envstore's own
        fields only when set, so a conda-store specification hashes as conda-store hashes it)."""
        document = self.model_dump(mode="json")
        if document.get("virtual_packages") is None:
            document.pop("virtual_packages", None)
        return document


def parse_specification_text(text: str) -> dict[str, Any]:
    """YAML (or JSON, a subset) text → a mapping. Raises SpecificationError with conda-store's
    message for unparsable text."""
    try:
        document = yaml.load(text, Loader=SAFE_YAML_LOADER) if text.strip() else {}
    except yaml.YAMLError:
        raise SpecificationError("Unable to parse. Invalid YAML") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise SpecificationError(
            "Unable to parse. The specification must be a mapping with name, channels and dependencies"
        )
    if _written_out_values(document, most=len(text) + 100) is None:
        raise SpecificationError(
            "Unable to parse. The specification's YAML aliases (*name) expand it far beyond its size; write it out in full"
        )
    return document


def _written_out_values(document: Any, most: int) -> int | None:
    """How many values (keys, items, scalars) the document holds once every YAML alias is written
    out, as JSON will; None past ``most``. Without aliases each value takes at least one character
    of the text, so a document past its text's length is an alias bomb (a "billion laughs")."""
    count = 0
    pending = [document]
    while pending:
        value = pending.pop()
        count += 1
        if count > most:
            return None
        if isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return count


def validation_message(error: ValidationError) -> str:
    """pydantic errors → one readable line per problem: "dependencies.0: dependency 'x' …"."""
    lines = []
    for problem in error.errors():
        location = ".".join(str(part) for part in problem["loc"]) or "specification"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "missing":
            message = "is required"
        elif problem["type"] == "extra_forbidden":
            message = "is not a known field (known: name, channels, dependencies, variables, prefix, description, virtual_packages)"
        lines.append(f"{location}: {message}")
    return "; ".join(lines)


def load_environment_specification(document: dict[str, Any]) -> EnvironmentSpecification:
    try:
        return EnvironmentSpecification.model_validate(document)
    except ValidationError as error:
        raise SpecificationError(validation_message(error)) from None
