"""Manifest media types and content negotiation.

Images are stored as OCI manifests. A client that asks only for Docker's image manifest v2
(schema 2) in ``Accept`` gets the same image as one: the same configuration and layer blobs,
Docker's media type names, and so its own digest. The conversion is a pure function of the stored
manifest, so both digests are stable.
"""

from __future__ import annotations

import json
from typing import Any

from envstore.common.oci_media_types import (
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_LAYER_TAR,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_IMAGE_INDEX,
    OCI_LAYER_GZIP,
    OCI_LAYER_TAR,
)
from envstore.common.oci_media_types import OCI_IMAGE_MANIFEST as OCI_MANIFEST

# OCI layer type → Docker's name for the same bytes; zstd layers have none, such images stay OCI.
DOCKER_LAYER_TYPES = {OCI_LAYER_GZIP: DOCKER_LAYER_GZIP, OCI_LAYER_TAR: DOCKER_LAYER_TAR}


def to_docker_v2(oci_manifest: dict[str, Any]) -> bytes | None:
    """The Docker v2 schema 2 form of an OCI image manifest, or None if it has none."""
    layers = []
    for layer in oci_manifest.get("layers", []):
        docker_type = DOCKER_LAYER_TYPES.get(layer.get("mediaType", ""))
        if docker_type is None:
            return None
        layers.append({"mediaType": docker_type, "size": layer["size"], "digest": layer["digest"]})
    config = oci_manifest["config"]
    document = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "size": config["size"], "digest": config["digest"]},
        "layers": layers,
    }
    return json.dumps(document, indent=3).encode()


def to_docker_list(oci_index: dict[str, Any], docker_digests: dict[str, tuple[str, int]]) -> bytes | None:
    """The Docker manifest list form of an OCI image index, naming each image's Docker form
    (``docker_digests``: OCI manifest digest → Docker form's digest and size); None if an image has none."""
    manifests = []
    for descriptor in oci_index.get("manifests", []):
        docker = docker_digests.get(descriptor["digest"])
        if docker is None:
            return None
        manifests.append(
            {"mediaType": DOCKER_MANIFEST, "size": docker[1], "digest": docker[0], "platform": descriptor.get("platform", {})}
        )
    return json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST_LIST, "manifests": manifests}, indent=3).encode()


def choose_index_type(accept_headers: list[str], convertible: bool) -> str | None:
    """For an image index: OCI's index unless the client prefers Docker's manifest list; None when
    it accepts neither (it then gets one platform's image)."""
    accepted = accepted_types(accept_headers)
    if not accepted:
        return OCI_IMAGE_INDEX
    wildcard = max(accepted.get("*/*", 0.0), accepted.get("application/*", 0.0))
    oci = accepted.get(OCI_IMAGE_INDEX, wildcard)
    docker = accepted.get(DOCKER_MANIFEST_LIST, wildcard) if convertible else 0.0
    if oci <= 0 and docker <= 0:
        return None
    return DOCKER_MANIFEST_LIST if docker > oci else OCI_IMAGE_INDEX


def accepted_types(accept_headers: list[str]) -> dict[str, float]:
    """``Accept`` values (the header may repeat) → media type: quality. Empty if none was sent."""
    accepted: dict[str, float] = {}
    for header in accept_headers:
        for item in header.split(","):
            media_type, *parameters = (part.strip() for part in item.split(";"))
            if not media_type:
                continue
            quality = 1.0
            for parameter in parameters:
                key, _, value = parameter.partition("=")
                if key.strip() == "q":
                    try:
                        quality = float(value)
                    except ValueError:
                        quality = 0.0
            accepted[media_type.lower()] = max(quality, accepted.get(media_type.lower(), 0.0))
    return accepted


def choose_manifest_type(accept_headers: list[str], convertible: bool) -> str | None:
    """OCI (the stored form) unless the client prefers Docker v2 or accepts only it; None when
    the client accepts neither."""
    accepted = accepted_types(accept_headers)
    if not accepted:
        return OCI_MANIFEST
    wildcard = max(accepted.get("*/*", 0.0), accepted.get("application/*", 0.0))
    oci = accepted.get(OCI_MANIFEST, wildcard)
    docker = accepted.get(DOCKER_MANIFEST, wildcard) if convertible else 0.0
    if oci <= 0 and docker <= 0:
        return None
    return DOCKER_MANIFEST if docker > oci else OCI_MANIFEST
