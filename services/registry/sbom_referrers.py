"""Each image's SBOM as an OCI 1.1 referrer: an artifact manifest (``artifactType`` CycloneDX
JSON, the empty configuration, the SBOM as its one layer) whose ``subject`` is the image manifest.

Nothing is stored: the SBOM is made from the build's lock (``envstore.common.sbom``, the same
bytes as the API's ``/sbom/`` route) and the referrer manifest from it and the image's descriptor,
so both have stable digests. They are made when first asked for and kept in memory; their blobs
(the SBOM, the empty configuration) are served from there.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from envstore.common.lock import Lock
from envstore.common.oci_media_types import OCI_EMPTY, OCI_EMPTY_DATA, OCI_IMAGE_INDEX, OCI_IMAGE_MANIFEST
from envstore.common.sbom import SBOM_MEDIA_TYPE, build_sbom
from envstore.common.storage import Storage
from envstore.registry.catalog import BuildImage

log = logging.getLogger(__name__)
CACHED_REFERRERS = 1024
# An SBOM refers to what the build's tag names: its image, or its image index (several platforms).
SUBJECT_TYPES = (OCI_IMAGE_MANIFEST, OCI_IMAGE_INDEX)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Referrer:
    subject: str  # the image manifest's digest
    manifest: bytes
    digest: str
    blobs: dict[str, bytes]  # digest → bytes: the SBOM and the empty configuration

    def descriptor(self) -> dict[str, Any]:
        return {
            "mediaType": OCI_IMAGE_MANIFEST,
            "digest": self.digest,
            "size": len(self.manifest),
            "artifactType": SBOM_MEDIA_TYPE,
            "annotations": {"org.opencontainers.image.title": "sbom.cdx.json"},
        }


def sbom_referrer(sbom: bytes, subject_digest: str, subject_size: int, subject_type: str = OCI_IMAGE_MANIFEST) -> Referrer:
    manifest = _canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_IMAGE_MANIFEST,
            "artifactType": SBOM_MEDIA_TYPE,
            "config": {"mediaType": OCI_EMPTY, "digest": _digest(OCI_EMPTY_DATA), "size": len(OCI_EMPTY_DATA)},
            "layers": [
                {
                    "mediaType": SBOM_MEDIA_TYPE,
                    "digest": _digest(sbom),
                    "size": len(sbom),
                    "annotations": {"org.opencontainers.image.title": "sbom.cdx.json"},
                }
            ],
            "subject": {"mediaType": subject_type, "digest": subject_digest, "size": subject_size},
        }
    )
    return Referrer(
        subject_digest, manifest, _digest(manifest), {_digest(sbom): sbom, _digest(OCI_EMPTY_DATA): OCI_EMPTY_DATA}
    )


class SbomReferrers:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._made: OrderedDict[tuple[int, str], Referrer] = OrderedDict()

    async def of_image(self, build: BuildImage) -> Referrer | None:
        """The SBOM referrer of a build's image (None for an image of a build without a lock)."""
        if build.manifest is None or build.lock_digest is None or build.manifest_type not in SUBJECT_TYPES:
            return None
        key = (build.build_id, build.manifest.digest)
        made = self._made.get(key)
        if made is not None:
            self._made.move_to_end(key)
            return made
        try:
            lock = Lock.decode(await self.storage.get_bytes(build.lock_digest))
        except FileNotFoundError:
            log.error("the lock %s of build %s is not in storage", build.lock_digest, build.build_id)
            return None
        sbom = await asyncio.to_thread(
            build_sbom,
            lock,
            build_id=build.build_id,
            namespace=build.namespace,
            environment=build.environment,
            build_key=build.build_key,
        )
        made = sbom_referrer(sbom, build.manifest.digest, build.manifest.size, build.manifest_type)
        self._made[key] = made
        while len(self._made) > CACHED_REFERRERS:
            self._made.popitem(last=False)
        return made

    async def of_repository(self, images: list[BuildImage]) -> list[Referrer]:
        found = await asyncio.gather(*(self.of_image(build) for build in images))
        return [referrer for referrer in found if referrer is not None]
