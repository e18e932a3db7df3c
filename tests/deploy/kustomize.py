"""``kustomize build`` for the subset of Kustomize that ``deploy/k8s`` uses, so the tests see the
objects ``kubectl apply -k`` would create without kubectl or kustomize (neither is installed
here). A kustomization that uses anything else is refused, so the manifests cannot drift into
features this renderer would silently ignore."""

from __future__ import annotations

import base64
import copy
from pathlib import Path

import yaml

SUPPORTED_FIELDS = {
    "apiVersion",
    "kind",
    "namespace",
    "resources",
    "images",
    "generatorOptions",
    "configMapGenerator",
    "secretGenerator",
}
# Kinds without a namespace (kustomize's namespace transformer leaves them alone).
CLUSTER_SCOPED_KINDS = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding"}


class UnsupportedKustomization(Exception):
    pass


def render(directory: Path) -> list[dict]:
    """Every object the kustomization in ``directory`` produces, in kustomize's order of sources
    (resources, then generated ConfigMaps and Secrets)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - SUPPORTED_FIELDS
    if unsupported:
        raise UnsupportedKustomization(f"{sorted(unsupported)}: teach tests/deploy/kustomize.py first")
    if kustomization.get("generatorOptions") != {"disableNameSuffixHash": True}:
        # With hashed names kustomize rewrites every reference; this renderer does not.
        raise UnsupportedKustomization("generatorOptions must be exactly {disableNameSuffixHash: true}")
    objects: list[dict] = []
    for resource in kustomization["resources"]:
        path = directory / resource
        if not path.is_file():
            raise UnsupportedKustomization(f"resource {resource} is not a file of {directory}")
        objects.extend(document for document in yaml.safe_load_all(path.read_text()) if document)
    for generator in kustomization.get("configMapGenerator", []):
        objects.append(_generated("ConfigMap", generator, directory))
    for generator in kustomization.get("secretGenerator", []):
        objects.append(_generated("Secret", generator, directory))
    namespace = kustomization.get("namespace")
    images = kustomization.get("images", [])
    return [_transformed(document, namespace, images) for document in objects]


def _generated(kind: str, generator: dict, directory: Path) -> dict:
    unsupported = set(generator) - {"name", "files"}
    if unsupported:
        raise UnsupportedKustomization(f"{kind} generator fields {sorted(unsupported)}")
    data = {}
    for entry in generator["files"]:
        key, _, source = entry.rpartition("=")
        path = directory / source
        if not path.resolve().is_relative_to(directory.resolve()):
            raise UnsupportedKustomization(f"{source}: kustomize loads files only below {directory}")
        key = key or path.name
        data[key] = path.read_text() if kind == "ConfigMap" else base64.b64encode(path.read_bytes()).decode()
    document = {"apiVersion": "v1", "kind": kind, "metadata": {"name": generator["name"]}, "data": data}
    if kind == "Secret":
        document["type"] = "Opaque"
    return document


def _transformed(document: dict, namespace: str | None, images: list[dict]) -> dict:
    document = copy.deepcopy(document)
    if namespace and document["kind"] not in CLUSTER_SCOPED_KINDS:
        document["metadata"]["namespace"] = namespace
    for container in pod_containers(document):
        container["image"] = _image(container["image"], images)
    return document


def pod_template(document: dict) -> dict | None:
    """The pod spec of a workload (Deployment, StatefulSet …), else None."""
    template = document.get("spec", {}).get("template")
    return template["spec"] if template else None


def pod_containers(document: dict) -> list[dict]:
    pod = pod_template(document)
    if pod is None:
        return []
    return [*pod.get("initContainers", []), *pod["containers"]]


def _image(image: str, images: list[dict]) -> str:
    """kustomize's image transformer: an entry named like the image (without tag or digest)
    replaces its name, tag or digest."""
    name, tag, digest = image, None, None
    if "@" in name:
        name, digest = name.split("@", 1)
    elif ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    for entry in images:
        if entry["name"] != name:
            continue
        name = entry.get("newName", name)
        if "digest" in entry:
            return f"{name}@{entry['digest']}"
        tag = entry.get("newTag", tag)
    if digest:
        return f"{name}@{digest}"
    return f"{name}:{tag}" if tag else name
