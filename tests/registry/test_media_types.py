"""Content negotiation of manifests (``Accept`` with qualities and wildcards) and byte ranges."""

from __future__ import annotations

import json

from envstore.registry.media_types import DOCKER_MANIFEST, OCI_MANIFEST, choose_manifest_type, to_docker_v2
from envstore.registry.routes import parse_byte_range


def test_manifest_type_chosen_from_accept() -> None:
    assert choose_manifest_type([], convertible=True) == OCI_MANIFEST  # nothing asked: as stored
    assert choose_manifest_type(["*/*"], convertible=True) == OCI_MANIFEST
    assert choose_manifest_type([DOCKER_MANIFEST], convertible=True) == DOCKER_MANIFEST
    assert choose_manifest_type([f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"], convertible=True) == OCI_MANIFEST
    assert choose_manifest_type([f"{OCI_MANIFEST};q=0.4", DOCKER_MANIFEST], convertible=True) == DOCKER_MANIFEST
    assert choose_manifest_type([DOCKER_MANIFEST], convertible=False) is None  # zstd layers: OCI only
    assert choose_manifest_type(["application/vnd.oci.image.index.v1+json"], convertible=True) is None


def test_docker_form_keeps_the_blobs_and_refuses_zstd_layers() -> None:
    oci = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:c", "size": 3},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:l", "size": 9}],
    }
    docker = json.loads(to_docker_v2(oci) or b"")
    assert docker["mediaType"] == DOCKER_MANIFEST
    assert docker["config"] == {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 3, "digest": "sha256:c"}
    assert docker["layers"] == [
        {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 9, "digest": "sha256:l"}
    ]
    oci["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd"
    assert to_docker_v2(oci) is None


def test_byte_ranges() -> None:
    assert parse_byte_range("bytes=0-99", 1000) == (0, 100)
    assert parse_byte_range("bytes=900-", 1000) == (900, 1000)
    assert parse_byte_range("bytes=-100", 1000) == (900, 1000)
    assert parse_byte_range("bytes=990-2000", 1000) == (990, 1000)
    assert parse_byte_range("bytes=1000-", 1000) is None
    assert parse_byte_range("bytes=0-1,5-6", 1000) is None
    assert parse_byte_range("items=0-1", 1000) is None
