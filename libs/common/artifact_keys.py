"""conda-store's storage names for a build's artifacts (``lockfile/<build key>.yml`` …), and the
names of the artifacts made for each further platform of a multi-platform lock
(``archive/<platform>/<build key>.tar.gz``)."""

from envstore.common.artifact_kinds import ArtifactKind

# The kinds made once per platform of the lock: the build's main platform's (the host's, when
# locked) under conda-store's name and route, every other platform's under a name with its platform.
PER_PLATFORM_KINDS = (ArtifactKind.CONDA_PACK, ArtifactKind.CONSTRUCTOR_INSTALLER)
# conda's platforms whose environments can be packed (conda-pack and the shell installer are POSIX):
# the platforms a deletion removes the per-platform names of.
PACKABLE_PLATFORMS = (
    "linux-64", "linux-aarch64", "linux-ppc64le", "linux-s390x", "linux-armv7l", "linux-32", "osx-64", "osx-arm64",
)


def is_packable_platform(platform: str) -> bool:
    return platform in PACKABLE_PLATFORMS


def artifact_key(kind: ArtifactKind | str, build_key: str, platform: str | None = None) -> str:
    """The storage name of a build's artifact; ``platform`` for one of a further platform."""
    kind = ArtifactKind(kind)
    if platform is not None:
        if kind not in PER_PLATFORM_KINDS:
            raise ValueError(f"{kind} is made once per build, not per platform")
        return {
            ArtifactKind.CONDA_PACK: f"archive/{platform}/{build_key}.tar.gz",
            ArtifactKind.CONSTRUCTOR_INSTALLER: f"installer/{platform}/{build_key}.sh",
        }[kind]
    return {
        ArtifactKind.LOGS: f"logs/{build_key}.log",
        ArtifactKind.LOCKFILE: f"lockfile/{build_key}.yml",
        ArtifactKind.YAML: f"yaml/{build_key}.yml",
        ArtifactKind.CONDA_PACK: f"archive/{build_key}.tar.gz",
        ArtifactKind.CONSTRUCTOR_INSTALLER: f"installer/{build_key}.sh",
        ArtifactKind.DOCKER_MANIFEST: f"docker/manifest/{build_key}",
        ArtifactKind.DIRECTORY: f"directory/{build_key}",
    }[kind]
