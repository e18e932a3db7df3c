"""The documents and blobs of a repository's images, read from storage.

A repository serves exactly the manifests of its own builds (by tag, or by digest in either form)
and the blobs those manifests reference: a digest known elsewhere in storage is not readable
through a repository that does not use it. What a repository references is computed from its
manifests when first asked and kept until its set of images changes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from envstore.common.storage import Storage
from envstore.registry.errors import manifest_unknown
from envstore.registry.media_types import (
    DOCKER_MANIFEST,
    OCI_MANIFEST,
    choose_manifest_type,
    to_docker_v2,
)
from envstore.registry.catalog import BuildImage

log = logging.getLogger(__name__)
CACHED_MANIFESTS = 2048
CACHED_REPOSITORIES = 1024


@dataclass(frozen=True)
class ManifestDocument:
    data: bytes
    media_type: str
    digest: str


@dataclass
class _StoredImage:
    document: dict[str, Any]
    stored: ManifestDocument
    docker: ManifestDocument | None

    def forms(self) -> list[ManifestDocument]:
        return [self.stored] + ([self.docker] if self.docker is not None else [])


@dataclass
class _RepositoryContents:
    images: tuple[str, ...]  # the manifests' digests it was computed from
    manifests: dict[str, ManifestDocument] = field(default_factory=dict)  # digest → document
    blobs: dict[str, int] = field(default_factory=dict)  # digest → size


class ImageStore:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._images: OrderedDict[str, _StoredImage] = OrderedDict()
        self._contents: OrderedDict[str, _RepositoryContents] = OrderedDict()

    async def manifest(self, build: BuildImage, accept_headers: list[str], name: str, tag: str) -> ManifestDocument:
        """The build's image in the form the client accepts (``Accept``)."""
        image = await self._image(build)
        if image is None:
            raise manifest_unknown(name, tag, f"the image of build {build.build_id} is missing from storage")
        chosen = choose_manifest_type(accept_headers, image.docker is not None)
        if image.stored.media_type != OCI_MANIFEST or chosen == OCI_MANIFEST:
            return image.stored
        if chosen == DOCKER_MANIFEST and image.docker is not None:
            return image.docker
        raise manifest_unknown(
            name, tag, "the image is an OCI image manifest (or Docker's v2 schema 2); Accept allows neither"
        )

    async def manifest_by_digest(self, name: str, images: list[BuildImage], digest: str) -> ManifestDocument | None:
        return (await self._contents_of(name, images)).manifests.get(digest)

    async def blob_size(self, name: str, images: list[BuildImage], digest: str) -> int | None:
        return (await self._contents_of(name, images)).blobs.get(digest)

    async def _contents_of(self, name: str, images: list[BuildImage]) -> _RepositoryContents:
        """What the repository ``name``'s ``images`` reference."""
        fingerprint = tuple(build.manifest.digest for build in images if build.manifest is not None)
        contents = self._contents.get(name)
        if contents is not None and contents.images == fingerprint:
            self._contents.move_to_end(name)
            return contents
        contents = _RepositoryContents(fingerprint)
        for image in await asyncio.gather(*(self._image(build) for build in images)):
            if image is None:
                continue
            for form in image.forms():
                contents.manifests[form.digest] = form
            for descriptor in [image.document.get("config", {}), *image.document.get("layers", [])]:
                if "digest" in descriptor:
                    contents.blobs[descriptor["digest"]] = int(descriptor.get("size", 0))
        self._contents[name] = contents
        while len(self._contents) > CACHED_REPOSITORIES:
            self._contents.popitem(last=False)
        return contents

    async def _image(self, build: BuildImage) -> _StoredImage | None:
        assert build.manifest is not None
        digest = build.manifest.digest
        image = self._images.get(digest)
        if image is not None:
            self._images.move_to_end(digest)
            return image
        try:
            data = await self.storage.get_bytes(build.manifest)
        except FileNotFoundError:
            log.error("the manifest %s of build %s is not in storage", digest, build.build_id)
            return None
        document = json.loads(data)
        docker_data = to_docker_v2(document) if build.manifest_type == OCI_MANIFEST else None
        image = _StoredImage(
            document,
            ManifestDocument(data, build.manifest_type, digest),
            None
            if docker_data is None
            else ManifestDocument(docker_data, DOCKER_MANIFEST, "sha256:" + hashlib.sha256(docker_data).hexdigest()),
        )
        self._images[digest] = image
        while len(self._images) > CACHED_MANIFESTS:
            self._images.popitem(last=False)
        return image
