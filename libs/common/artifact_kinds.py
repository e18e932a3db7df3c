"""The kinds of build artifact, named as conda-store names them (BuildArtifactType)."""

from enum import StrEnum


class ArtifactKind(StrEnum):
    LOGS = "LOGS"
    LOCKFILE = "LOCKFILE"
    YAML = "YAML"
    CONDA_PACK = "CONDA_PACK"
    DOCKER_MANIFEST = "DOCKER_MANIFEST"
    CONSTRUCTOR_INSTALLER = "CONSTRUCTOR_INSTALLER"
    DIRECTORY = "DIRECTORY"
