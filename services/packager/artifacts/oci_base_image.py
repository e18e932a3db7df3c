"""The base image under an environment's layers, named by the ``image_base`` setting:

- empty or ``scratch``: no base (the image holds the environment only);
- ``oci:<directory>[:<tag>]``, or a directory path: an OCI image layout (``skopeo copy … oci:DIR:TAG``,
  ``umoci``, ``crane``, ``buildah push … oci:``); without a tag, the layout's only image;
- ``docker://<registry>/<repository>[:<tag>|@<digest>]``: copied once into an OCI layout under the
  cache directory by ``skopeo`` (for this image's platform), then read like one. A tag is read once
  per cache directory: name a digest to pin the base, or empty ``<cache>/base-images`` to refresh.

The base's layers are stored like any other blob (content-addressed, skipped when present); its
configuration (environment, command, entrypoint, user, working directory, labels, history) is
carried into the image's.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envstore.common.storage import Storage
from envstore.packager.artifacts.oci_layers import StoredLayer
from envstore.packager.artifacts.oci_media_types import (
    INDEX_TYPES,
    OCI_LAYER_TYPE,
    ImagePlatform,
)

REFERENCE_NAME_ANNOTATION = "org.opencontainers.image.ref.name"


class BaseImageError(Exception):
    """The base image cannot be used; the message says why and what to change."""


@dataclass(frozen=True)
class BaseImage:
    reference: str
    layers: tuple[StoredLayer, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)  # the base's image configuration document

    @property
    def container_config(self) -> dict[str, Any]:
        return dict(self.config.get("config") or {})

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self.config.get("history") or [])


@dataclass(frozen=True)
class _LayoutImage:
    config: dict[str, Any]
    layers: list[tuple[StoredLayer, Path]]  # each layer and its blob file in the layout


async def load_base_image(
    reference: str, platform: ImagePlatform, storage: Storage, cache_directory: Path
) -> BaseImage:
    reference = reference.strip()
    if reference in ("", "scratch"):
        return BaseImage("scratch")
    if reference.startswith("docker://"):
        directory, tag = await _copy_from_registry(reference, platform, cache_directory), "base"
    else:
        directory, tag = _layout_reference(reference)
    image = await asyncio.to_thread(_read_layout, directory, tag, platform, reference)
    for layer, blob_path in image.layers:
        if await storage.touch_blob(layer.digest):  # reused: kept young for garbage collection
            continue
        stored = await storage.put_file(blob_path)
        if stored.digest != layer.digest:
            raise BaseImageError(f"base image {reference}: layer {layer.digest} has digest {stored.digest}")
    return BaseImage(reference, tuple(layer for layer, _ in image.layers), image.config)


def _layout_reference(reference: str) -> tuple[Path, str | None]:
    text = reference.removeprefix("oci:")
    directory, tag = Path(text), None
    if not (directory / "index.json").exists() and ":" in text:
        head, _, tail = text.rpartition(":")
        if "/" not in tail:
            directory, tag = Path(head), tail
    if not (directory / "index.json").exists():
        raise BaseImageError(
            f"base image {reference!r}: {directory} is not an OCI image layout (no index.json); give "
            "'scratch', 'oci:<directory>[:<tag>]' or 'docker://<registry>/<repository>:<tag>'"
        )
    return directory, tag


def _read_layout(directory: Path, tag: str | None, platform: ImagePlatform, reference: str) -> _LayoutImage:
    def blob(descriptor: dict[str, Any]) -> Path:
        algorithm, _, value = str(descriptor["digest"]).partition(":")
        return directory / "blobs" / algorithm / value

    def document(descriptor: dict[str, Any]) -> dict[str, Any]:
        data = blob(descriptor).read_bytes()
        if "sha256:" + hashlib.sha256(data).hexdigest() != descriptor["digest"]:
            raise BaseImageError(f"base image {reference}: blob {descriptor['digest']} is corrupt")
        return json.loads(data)

    index = json.loads((directory / "index.json").read_text())
    candidates = list(index.get("manifests") or [])
    tags = [(d.get("annotations") or {}).get(REFERENCE_NAME_ANNOTATION) for d in candidates]
    if tag is not None:
        candidates = [d for d, name in zip(candidates, tags) if name == tag]
    if len(candidates) != 1:
        raise BaseImageError(
            f"base image {reference}: the layout holds images tagged {sorted(str(t) for t in tags)}; "
            "name exactly one as oci:<directory>:<tag>"
        )
    descriptor = candidates[0]
    while descriptor.get("mediaType") in INDEX_TYPES:
        descriptor = _for_platform(document(descriptor), platform, reference)
    manifest = document(descriptor)
    config = document(manifest["config"])
    base_platform = ImagePlatform(config.get("os", ""), config.get("architecture", ""), config.get("variant"))
    if (base_platform.os, base_platform.architecture) != (platform.os, platform.architecture):
        raise BaseImageError(f"base image {reference} is {base_platform}; this environment needs {platform}")
    diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
    descriptors = list(manifest.get("layers") or [])
    if len(diff_ids) != len(descriptors):
        raise BaseImageError(f"base image {reference}: {len(descriptors)} layers but {len(diff_ids)} diff_ids")
    layers = []
    for layer, diff_id in zip(descriptors, diff_ids):
        media_type = OCI_LAYER_TYPE.get(layer.get("mediaType", ""))
        if media_type is None:
            raise BaseImageError(
                f"base image {reference}: layer {layer['digest']} has media type {layer.get('mediaType')}, "
                f"not one of {sorted(OCI_LAYER_TYPE)}"
            )
        layers.append((StoredLayer(layer["digest"], int(layer["size"]), diff_id, media_type), blob(layer)))
    return _LayoutImage(config, layers)


def _for_platform(index: dict[str, Any], platform: ImagePlatform, reference: str) -> dict[str, Any]:
    offered = []
    for descriptor in index.get("manifests") or []:
        described = descriptor.get("platform") or {}
        offered.append(f"{described.get('os')}/{described.get('architecture')}")
        same = (described.get("os"), described.get("architecture")) == (platform.os, platform.architecture)
        if same and (platform.variant is None or described.get("variant") in (None, platform.variant)):
            return descriptor
    raise BaseImageError(f"base image {reference} has no {platform} image; it has {offered}")


async def _copy_from_registry(reference: str, platform: ImagePlatform, cache_directory: Path) -> Path:
    target = cache_directory / "base-images" / hashlib.sha256(reference.encode()).hexdigest()[:32]
    if (target / "index.json").exists():
        return target
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    await asyncio.to_thread(shutil.rmtree, partial, True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    command = ["skopeo", "copy", "--quiet", f"--override-os={platform.os}", f"--override-arch={platform.architecture}"]
    if platform.variant:
        command.append(f"--override-variant={platform.variant}")
    command += [reference, f"oci:{partial}:base"]
    try:
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
    except FileNotFoundError:
        raise BaseImageError(
            f"base image {reference}: copying from a registry needs skopeo on PATH; "
            "or give an OCI layout directory (oci:<directory>:<tag>)"
        ) from None
    _, errors = await process.communicate()
    if process.returncode != 0:
        await asyncio.to_thread(shutil.rmtree, partial, True)
        raise BaseImageError(f"skopeo could not copy the base image {reference}: {errors.decode().strip()}")
    try:
        os.replace(partial, target)
    except OSError:  # another packager placed it first
        await asyncio.to_thread(shutil.rmtree, partial, True)
    return target
