"""How the packager uses the OCI media types (names in ``envstore.common.oci_media_types``), and
conda platforms as image platforms."""

from __future__ import annotations

from dataclasses import dataclass

from envstore.common.oci_media_types import (  # noqa: F401 - re-exported for the packager
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_IMAGE_CONFIG,
    OCI_IMAGE_INDEX,
    OCI_IMAGE_MANIFEST,
    OCI_LAYER_GZIP,
    OCI_LAYER_TAR,
    OCI_LAYER_ZSTD,
)

# A base image's layers keep their compression; Docker's names become the OCI names of the same bytes.
OCI_LAYER_TYPE = {
    DOCKER_LAYER_GZIP: OCI_LAYER_GZIP,
    OCI_LAYER_GZIP: OCI_LAYER_GZIP,
    OCI_LAYER_TAR: OCI_LAYER_TAR,
    OCI_LAYER_ZSTD: OCI_LAYER_ZSTD,
}
MANIFEST_TYPES = (OCI_IMAGE_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_IMAGE_INDEX, DOCKER_MANIFEST_LIST)


@dataclass(frozen=True)
class ImagePlatform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(part for part in (self.os, self.architecture, self.variant) if part)

    def descriptor(self) -> dict[str, str]:
        """As an image index's ``platform`` field."""
        described = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            described["variant"] = self.variant
        return described


_OPERATING_SYSTEMS = {"linux": "linux", "osx": "darwin", "win": "windows"}
_ARCHITECTURES = {
    "64": ImagePlatform("", "amd64"),
    "32": ImagePlatform("", "386"),
    "aarch64": ImagePlatform("", "arm64", "v8"),
    "arm64": ImagePlatform("", "arm64", "v8"),
    "armv7l": ImagePlatform("", "arm", "v7"),
    "armv6l": ImagePlatform("", "arm", "v6"),
    "ppc64le": ImagePlatform("", "ppc64le"),
    "s390x": ImagePlatform("", "s390x"),
}


def image_platform(subdir: str) -> ImagePlatform:
    """``linux-64`` → linux/amd64, ``linux-aarch64`` → linux/arm64/v8, ``osx-arm64`` → darwin/arm64/v8 …"""
    system, _, architecture = subdir.partition("-")
    if system not in _OPERATING_SYSTEMS or architecture not in _ARCHITECTURES:
        raise ValueError(f"conda platform {subdir!r} has no image platform; images are built for linux-*, osx-*, win-*")
    known = _ARCHITECTURES[architecture]
    return ImagePlatform(_OPERATING_SYSTEMS[system], known.architecture, known.variant)
