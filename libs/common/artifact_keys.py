"""conda-store's storage names for a build's artifacts (``lockfile/<build key>.yml`` …)."""

from envstore.common.artifact_kinds import ArtifactKind


def artifact_key(kind: ArtifactKind | str, build_key: str) -> str:
    return {
        ArtifactKind.LOGS: f"logs/{build_key}.log",
        ArtifactKind.LOCKFILE: f"lockfile/{build_key}.yml",
        ArtifactKind.YAML: f"yaml/{build_key}.yml",
        ArtifactKind.CONDA_PACK: f"archive/{build_key}.tar.gz",
        ArtifactKind.CONSTRUCTOR_INSTALLER: f"installer/{build_key}.sh",
        ArtifactKind.DOCKER_MANIFEST: f"docker/manifest/{build_key}",
        ArtifactKind.DIRECTORY: f"directory/{build_key}",
    }[ArtifactKind(kind)]
