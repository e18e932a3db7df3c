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
import platform
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from envstore.common.events import BlobRef
from envstore.common.storage import Storage
from envstore.registry.errors import manifest_unknown
from envstore.registry.media_types import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_IMAGE_INDEX,
    OCI_MANIFEST,
    choose_index_type,
    choose_manifest_type,
    to_docker_list,
    to_docker_v2,
)
from envstore.registry.catalog import BuildImage

log = logging.getLogger(__name__)
CACHED_MANIFESTS = 2048
# This machine's CPU as images name it: the image of an index that clients taking no index get.
IMAGE_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64", "i686": "386"}
CACHED_REPOSITORIES = 1024


@dataclass(frozen=True)
class ManifestDocument:
    data: bytes
    media_type: str
    digest: str


@dataclass
class _StoredImage:
    """An image manifest, or an image index with its images (``children``), in its stored form and
    in Docker's (when it has one)."""

    document: dict[str, Any]
    stored: ManifestDocument
    docker: ManifestDocument | None
    children: list[_StoredImage] = field(default_factory=list)
    # Of an index: the image a client that takes no index gets (the registry host's platform's).
    main_child: _StoredImage | None = None

    @property
    def is_index(self) -> bool:
        return self.stored.media_type == OCI_IMAGE_INDEX

    def forms(self) -> list[ManifestDocument]:
        own = [self.stored] + ([self.docker] if self.docker is not None else [])
        return own + [form for child in self.children for form in child.forms()]

    def blobs(self) -> dict[str, int]:
        found = {child_blob: size for child in self.children for child_blob, size in child.blobs().items()}
        if not self.is_index:
            for descriptor in [self.document.get("config", {}), *self.document.get("layers", [])]:
                if "digest" in descriptor:
                    found[descriptor["digest"]] = int(descriptor.get("size", 0))
        return found


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
        if image.is_index:
            chosen_index = choose_index_type(accept_headers, image.docker is not None)
            if chosen_index == OCI_IMAGE_INDEX:
                return image.stored
            if chosen_index == DOCKER_MANIFEST_LIST and image.docker is not None:
                return image.docker
            assert image.main_child is not None
            image = image.main_child
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
            contents.blobs.update(image.blobs())
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
        image = await self._stored_image(data, build.manifest_type, digest)
        if image is None:
            log.error("an image of the index %s of build %s is not in storage", digest, build.build_id)
            return None
        self._images[digest] = image
        while len(self._images) > CACHED_MANIFESTS:
            self._images.popitem(last=False)
        return image

    async def _stored_image(self, data: bytes, media_type: str, digest: str) -> _StoredImage | None:
        document = json.loads(data)
        if media_type == OCI_IMAGE_INDEX:
            children = []
            for descriptor in document.get("manifests", []):
                try:
                    child_data = await self.storage.get_bytes(BlobRef(digest=descriptor["digest"], size=int(descriptor["size"])))
                except FileNotFoundError:
                    return None
                child = await self._stored_image(child_data, descriptor.get("mediaType", OCI_MANIFEST), descriptor["digest"])
                if child is None:
                    return None
                children.append((descriptor.get("platform") or {}, child))
            docker_digests = {
                child.stored.digest: (child.docker.digest, len(child.docker.data))
                for _, child in children
                if child.docker is not None
            }
            docker_list = to_docker_list(document, docker_digests)
            host_architecture = IMAGE_ARCHITECTURES.get(platform.machine(), platform.machine())
            main = next(
                (child for described, child in children if described.get("architecture") == host_architecture),
                children[0][1] if children else None,
            )
            return _StoredImage(
                document,
                ManifestDocument(data, media_type, digest),
                None
                if docker_list is None
                else ManifestDocument(docker_list, DOCKER_MANIFEST_LIST, "sha256:" + hashlib.sha256(docker_list).hexdigest()),
                [child for _, child in children],
                main,
            )
        docker_data = to_docker_v2(document) if media_type == OCI_MANIFEST else None
        return _StoredImage(
            document,
            ManifestDocument(data, media_type, digest),
            None
            if docker_data is None
            else ManifestDocument(docker_data, DOCKER_MANIFEST, "sha256:" + hashlib.sha256(docker_data).hexdigest()),
        )
