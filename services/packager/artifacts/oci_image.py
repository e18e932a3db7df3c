"""The DOCKER_MANIFEST artifact: an OCI image of the environment (DESIGN §4).

Layers, bottom to top: the base image's (none for scratch), one per package (or, past the layer
budget, per deterministic group of small packages; ``oci_layer_plan``), and a last small layer with
``conda-meta``, activation and the specification's variables (``oci_environment_layer``). Packages
are linked for one fixed in-image prefix (``/opt/conda``; ``oci_prefix``) and every layer is
byte-for-byte reproducible (``oci_layers``), so a package has the same layer digest in every image
that holds it, and building the same lock again gives the same manifest digest.

Manifest, configuration and layers are content-addressed blobs in storage; the artifact's blob is
the manifest (``docker/manifest/<build key>``), whose media type is the artifact's content type. A lock
with several Linux platforms (``linux-64``, ``linux-aarch64`` …) gets one image per platform, each
staged from the lock for its platform, and the artifact is their OCI image index (``docker pull`` and
``skopeo copy --override-arch`` choose from it).

Settings (``ENVSTORE_<KEY>``): ``image_prefix`` (default ``/opt/conda``), ``image_base`` (default
scratch; see ``oci_base_image``), ``image_layer_budget`` (default 100 layers, the base's included),
``image_build_id_label`` (default off: a build-id label makes every build's configuration, and so
its manifest digest, differ even when its content is identical).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envstore.common.artifact_keys import artifact_key
from envstore.common.artifact_kinds import ArtifactKind
from envstore.common.events import BlobRef
from envstore.common.settings import EnvstoreSettings
from envstore.common.storage import Storage
from envstore.packager.artifacts.inputs import BuildInputs, Produced
from envstore.packager.artifacts.oci_base_image import BaseImage, load_base_image
from envstore.packager.artifacts.oci_environment_layer import (
    environment_entries,
    environment_variables,
)
from envstore.packager.artifacts.oci_layer_plan import LayerGroup, plan_layers
from envstore.packager.artifacts.oci_layers import StoredLayer, store_layer
from envstore.packager.artifacts.oci_media_types import (
    OCI_IMAGE_CONFIG,
    OCI_IMAGE_INDEX,
    OCI_IMAGE_MANIFEST,
    ImagePlatform,
    image_platform,
)
from envstore.packager.artifacts.oci_prefix import StagedEnvironment, stage_environment

log = logging.getLogger(__name__)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
FIXED_CREATED = "1970-01-01T00:00:00Z"
LABEL_PREFIX = "org.envstore."


@dataclass(frozen=True)
class ImageOptions:
    prefix: str = "/opt/conda"
    base: str = ""
    layer_budget: int = 100
    build_id_label: bool = False

    @classmethod
    def from_settings(cls, settings: EnvstoreSettings) -> ImageOptions:
        options = cls(
            prefix=settings.image_prefix.rstrip("/"),
            base=settings.image_base,
            layer_budget=settings.image_layer_budget,
            build_id_label=settings.image_build_id_label,
        )
        if not options.prefix.startswith("/") or options.prefix == "":
            raise ValueError(f"image_prefix must be an absolute path like /opt/conda, not {options.prefix!r}")
        return options


async def produce(inputs: BuildInputs) -> Produced:
    """One image manifest when the lock has one Linux platform (or none: the main platform's), else
    an image index of one manifest per Linux platform, each made from the lock for its platform."""
    options = ImageOptions.from_settings(inputs.settings)
    linux = [platform for platform in sorted(inputs.lock.platforms) if platform.startswith("linux-")]
    key = artifact_key(ArtifactKind.DOCKER_MANIFEST, inputs.build.build_key)
    if len(linux) <= 1:
        manifest = await image_manifest(inputs, options, linux[0] if linux else inputs.platform)
        return Produced(key, manifest, OCI_IMAGE_MANIFEST)
    # One after the other: each one's layers already use every core.
    manifests = [(platform, await image_manifest(inputs, options, platform)) for platform in linux]
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_IMAGE_INDEX,
        "manifests": [
            {
                "mediaType": OCI_IMAGE_MANIFEST,
                "digest": blob.digest,
                "size": blob.size,
                "platform": image_platform(platform).descriptor(),
            }
            for platform, blob in manifests
        ],
    }
    return Produced(key, await inputs.storage.put_bytes(canonical_json(index)), OCI_IMAGE_INDEX)


async def image_manifest(inputs: BuildInputs, options: ImageOptions, conda_platform: str) -> BlobRef:
    """The image of the lock's environment for ``conda_platform``: its manifest's blob."""
    platform = image_platform(conda_platform)
    variables = environment_variables(inputs.submitted.specification)
    scratch = inputs.work_directory / f"image-{conda_platform}"
    storage = inputs.storage
    started = time.perf_counter()

    base = await load_base_image(options.base, platform, storage, inputs.settings.cache_root)
    staged = await stage_environment(
        inputs.lock,
        conda_platform,
        options.prefix,
        scratch / "prefix",
        inputs.settings.package_cache,
    )
    staged_at = time.perf_counter()
    groups = plan_layers(staged.packages, options.layer_budget - len(base.layers) - 1)
    package_layers = await _package_layers(staged, groups, storage, scratch / "layers")
    environment_layer = await store_layer(
        await asyncio.to_thread(environment_entries, staged, inputs.build.environment, variables),
        storage,
        scratch / "layers",
    )
    layers = [*base.layers, *package_layers, environment_layer]
    history = [*base.history, *(_history(f"conda packages {', '.join(p.label for p in group)}") for group in groups)]
    history.append(_history(f"environment {inputs.build.namespace}/{inputs.build.environment}: conda-meta, activation"))
    config = image_config(base, platform, options, inputs, variables, layers, history, conda_platform)
    config_blob = await storage.put_bytes(canonical_json(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_IMAGE_MANIFEST,
        "config": {"mediaType": OCI_IMAGE_CONFIG, "digest": config_blob.digest, "size": config_blob.size},
        "layers": [layer.descriptor() for layer in layers],
    }
    manifest_blob = await storage.put_bytes(canonical_json(manifest))
    log.info(
        "image of build %s for %s: %d layers (%d base, %d for %d packages), staged in %.2f s, layers in %.2f s, %s",
        inputs.build.build_id,
        conda_platform,
        len(layers),
        len(base.layers),
        len(package_layers),
        len(staged.packages),
        staged_at - started,
        time.perf_counter() - staged_at,
        manifest_blob.digest,
    )
    return manifest_blob


async def _package_layers(
    staged: StagedEnvironment, groups: list[LayerGroup], storage: Storage, scratch: Path
) -> list[StoredLayer]:
    # A few layers at a time: small ones keep every core busy together, and a big one compresses
    # on every core by itself (``gzip_output``).
    concurrency = asyncio.Semaphore(os.cpu_count() or 2)

    async def one(group: LayerGroup) -> StoredLayer:
        async with concurrency:
            entries = await asyncio.to_thread(staged.entries_of, group)
            return await store_layer(entries, storage, scratch)

    return list(await asyncio.gather(*(one(group) for group in groups)))


def _history(created_by: str) -> dict[str, Any]:
    return {"created": FIXED_CREATED, "created_by": f"envstore: {created_by}"}


def image_config(
    base: BaseImage,
    platform: ImagePlatform,
    options: ImageOptions,
    inputs: BuildInputs,
    variables: dict[str, str],
    layers: list[StoredLayer],
    history: list[dict[str, Any]],
    conda_platform: str,
) -> dict[str, Any]:
    container = base.container_config
    environment = dict(entry.partition("=")[::2] for entry in container.get("Env") or [])
    environment["PATH"] = f"{options.prefix}/bin:{environment.get('PATH') or DEFAULT_PATH}"
    environment["CONDA_PREFIX"] = options.prefix
    environment.update(variables)
    labels = dict(container.get("Labels") or {})
    labels.update(
        {
            f"{LABEL_PREFIX}namespace": inputs.build.namespace,
            f"{LABEL_PREFIX}environment": inputs.build.environment,
            f"{LABEL_PREFIX}spec-sha256": inputs.submitted.spec_sha256,
            f"{LABEL_PREFIX}lock-digest": inputs.built.lock.digest,
            f"{LABEL_PREFIX}platform": conda_platform,
        }
    )
    if options.build_id_label:
        labels[f"{LABEL_PREFIX}build-id"] = str(inputs.build.build_id)
    container["Env"] = [f"{name}={value}" for name, value in environment.items()]
    container["Labels"] = labels
    config: dict[str, Any] = {
        "created": FIXED_CREATED,
        "architecture": platform.architecture,
        "os": platform.os,
        "config": container,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": history,
    }
    if platform.variant:
        config["variant"] = platform.variant
    return config


def canonical_json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
