"""Pulling envstore's images as users do: skopeo from the registry into an OCI layout and a
``dir:``, by tag (latest, build key, build id) and by digest, then umoci unpacks the image and the
environment's program runs from the rootfs, seeing the in-image prefix."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from envstore.common.demo_channel import FIVE_PACKAGE_SPEC, PREFIX_PLACEHOLDER
from envstore.common.storage import LocalStorage
from envstore.launcher.stack import EmbeddedStack
from envstore.packager.artifacts.oci_base_image import load_base_image
from envstore.packager.artifacts.oci_media_types import image_platform
from tests.api_client import ApiClient
from tests.registry.conftest import auth, built_image
from tests.registry.oci_tools import (
    Registry,
    run,
    run_in_rootfs,
    skopeo_copy,
    skopeo_inspect,
    unpack,
)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
REGISTRIES_CONF_D = Path("/etc/containers/registries.conf.d")
BLOB_REQUEST = re.compile(r"GET https?://[^ ]+/blobs/(sha256:[0-9a-f]{64})")


@pytest.fixture(scope="module")
async def five(registry_stack: EmbeddedStack) -> dict:
    async with ApiClient(registry_stack.api_url, token=registry_stack.admin_token) as api:
        return await built_image(api, "team", "five", list(FIVE_PACKAGE_SPEC))


async def test_pulled_by_tag_unpacked_and_run(
    five: dict, registry: Registry, admin_credentials: str, tmp_path: Path
) -> None:
    pulled = skopeo_copy(registry.reference("team/five", "latest"), f"oci:{tmp_path / 'layout'}:five", admin_credentials)
    assert pulled.returncode == 0, pulled.stderr
    rootfs = unpack(f"{tmp_path / 'layout'}:five", tmp_path / "bundle")

    assert run_in_rootfs(rootfs, "/opt/conda/bin/hello") == "hello 2.1 prefix=/opt/conda greeting-data=2.0\n"
    # Binary relocation: the prefix, NUL-padded to the placeholder's length.
    relocated = (rootfs / "opt" / "conda" / "share" / "hello" / "prefix.bin").read_bytes()
    assert relocated[: len(PREFIX_PLACEHOLDER)] == b"/opt/conda".ljust(len(PREFIX_PLACEHOLDER), b"\x00")
    assert relocated.endswith(b"envstore\x00\x9f")
    # The image configuration puts the environment first on PATH, as `docker run image hello` needs.
    inspected = json.loads(run(["skopeo", "inspect", f"oci:{tmp_path / 'layout'}:five"]))
    assert "PATH=/opt/conda/bin:/usr/local/bin:/usr/bin:/bin" in inspected["Env"]
    assert inspected["Labels"]["org.envstore.namespace"] == "team"
    assert inspected["Labels"]["org.envstore.environment"] == "five"


async def test_build_key_build_id_and_digest_name_the_same_image(
    five: dict, registry: Registry, admin_credentials: str, tmp_path: Path
) -> None:
    key = next(a["key"] for a in five["build_artifacts"] if a["artifact_type"] == "DOCKER_MANIFEST").rsplit("/", 1)[1]
    digests = set()
    for tag in ("latest", key, str(five["id"])):
        inspected = skopeo_inspect(registry.reference("team/five", tag), admin_credentials)
        assert inspected.returncode == 0, inspected.stderr
        digests.add(json.loads(inspected.stdout)["Digest"])
    [digest] = digests

    # By digest, into a plain directory: skopeo verifies every blob against its digest.
    by_digest = skopeo_copy(registry.reference("team/five", digest), f"dir:{tmp_path / 'dir'}", admin_credentials)
    assert by_digest.returncode == 0, by_digest.stderr
    manifest_bytes = (tmp_path / "dir" / "manifest.json").read_bytes()
    assert "sha256:" + hashlib.sha256(manifest_bytes).hexdigest() == digest
    for layer in json.loads(manifest_bytes)["layers"]:
        assert (tmp_path / "dir" / layer["digest"].removeprefix("sha256:")).stat().st_size == layer["size"]


async def test_second_image_transfers_only_the_layers_it_lacks(
    five: dict, registry_api: ApiClient, registry: Registry, admin_credentials: str, tmp_path: Path
) -> None:
    await built_image(registry_api, "team", "five-and-maths", [*FIVE_PACKAGE_SPEC, "libmath"])
    # Both layouts keep their blobs in one directory, as a local image store shares them.
    shared = tmp_path / "shared-blobs"
    first = _copy_sharing_blobs(registry.reference("team/five"), tmp_path / "first", "five", shared, admin_credentials)
    second = _copy_sharing_blobs(
        registry.reference("team/five-and-maths"), tmp_path / "second", "maths", shared, admin_credentials
    )
    five_manifest = json.loads((shared / "sha256" / _manifest_digest_of(tmp_path / "first", "five")).read_bytes())
    maths_manifest = json.loads((shared / "sha256" / _manifest_digest_of(tmp_path / "second", "maths")).read_bytes())
    five_layers = {layer["digest"] for layer in five_manifest["layers"]}
    maths_layers = [layer["digest"] for layer in maths_manifest["layers"]]
    lacking = {digest for digest in maths_layers if digest not in five_layers}
    # libmath's own layer and the environment layer are new; the base and the five packages' are shared.
    assert len(maths_layers) == len(five_layers) + 1 and len(lacking) == 2

    assert set(BLOB_REQUEST.findall(first)) - {five_manifest["config"]["digest"]} == five_layers
    assert set(BLOB_REQUEST.findall(second)) - {maths_manifest["config"]["digest"]} == lacking


def _copy_sharing_blobs(source: str, layout: Path, tag: str, shared: Path, credentials: str) -> str:
    """skopeo's debug log of a copy into an OCI layout whose blobs live in ``shared``."""
    completed = subprocess.run(
        ["skopeo", "--debug", "copy", "--src-tls-verify=false", f"--src-creds={credentials}",
         "--dest-shared-blob-dir", str(shared), source, f"oci:{layout}:{tag}"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stderr


def _manifest_digest_of(layout: Path, tag: str) -> str:
    index = json.loads((layout / "index.json").read_text())
    [descriptor] = [d for d in index["manifests"] if d["annotations"]["org.opencontainers.image.ref.name"] == tag]
    return descriptor["digest"].removeprefix("sha256:")


async def test_manifest_negotiated_between_oci_and_docker_media_types(
    five: dict, registry_stack: EmbeddedStack, http: aiohttp.ClientSession, registry: Registry,
    admin_credentials: str, tmp_path: Path,
) -> None:
    token = registry_stack.admin_token
    async with http.get("/v2/team/five/manifests/latest", headers={**auth(token), "Accept": OCI_MANIFEST}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == OCI_MANIFEST
        oci_bytes = await response.read()
        oci_digest = response.headers["Docker-Content-Digest"]
    assert oci_digest == "sha256:" + hashlib.sha256(oci_bytes).hexdigest()

    async with http.get("/v2/team/five/manifests/latest", headers={**auth(token), "Accept": DOCKER_MANIFEST}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == DOCKER_MANIFEST
        docker_bytes = await response.read()
        docker_digest = response.headers["Docker-Content-Digest"]
    assert docker_digest == "sha256:" + hashlib.sha256(docker_bytes).hexdigest() != oci_digest
    oci, docker = json.loads(oci_bytes), json.loads(docker_bytes)
    # The same image: one configuration blob, the same layer blobs, Docker's type names.
    assert docker["config"]["digest"] == oci["config"]["digest"]
    assert [layer["digest"] for layer in docker["layers"]] == [layer["digest"] for layer in oci["layers"]]
    assert {layer["mediaType"] for layer in docker["layers"]} == {"application/vnd.docker.image.rootfs.diff.tar.gzip"}

    # Preference by quality; both digests are served by digest, with their own media types.
    accept = f"{OCI_MANIFEST};q=0.5, {DOCKER_MANIFEST}"
    async with http.head("/v2/team/five/manifests/latest", headers={**auth(token), "Accept": accept}) as response:
        assert response.status == 200 and response.headers["Docker-Content-Digest"] == docker_digest
        assert int(response.headers["Content-Length"]) == len(docker_bytes)
    for digest, media_type in ((oci_digest, OCI_MANIFEST), (docker_digest, DOCKER_MANIFEST)):
        async with http.get(f"/v2/team/five/manifests/{digest}", headers=auth(token)) as response:
            assert response.status == 200 and response.headers["Content-Type"] == media_type
            assert "sha256:" + hashlib.sha256(await response.read()).hexdigest() == digest
    # A client that takes Docker's format only (docker pull, old registries' clients) pulls it.
    pulled = skopeo_copy(registry.reference("team/five", docker_digest), f"dir:{tmp_path / 'docker'}", admin_credentials)
    assert pulled.returncode == 0, pulled.stderr
    assert json.loads((tmp_path / "docker" / "manifest.json").read_bytes())["mediaType"] == DOCKER_MANIFEST


async def test_blobs_served_whole_in_ranges_and_only_through_their_repository(
    five: dict, registry_stack: EmbeddedStack, registry_api: ApiClient, http: aiohttp.ClientSession
) -> None:
    token = registry_stack.admin_token
    async with http.get("/v2/team/five/manifests/latest", headers=auth(token)) as response:
        layer = json.loads(await response.read())["layers"][-1]
    path = f"/v2/team/five/blobs/{layer['digest']}"
    async with http.get(path, headers=auth(token)) as response:
        assert response.status == 200
        whole = await response.read()
        assert response.headers["Docker-Content-Digest"] == layer["digest"]
    assert len(whole) == layer["size"] and "sha256:" + hashlib.sha256(whole).hexdigest() == layer["digest"]
    async with http.head(path, headers=auth(token)) as response:
        assert response.status == 200 and int(response.headers["Content-Length"]) == layer["size"]
    async with http.get(path, headers={**auth(token), "Range": "bytes=10-99"}) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes 10-99/{layer['size']}"
        assert await response.read() == whole[10:100]
    async with http.get(path, headers={**auth(token), "Range": f"bytes={layer['size'] + 5}-"}) as response:
        assert response.status == 416

    # A blob that exists, but that no image of this repository uses, is not served through it.
    other = await built_image(registry_api, "team", "only-maths", ["libmath"])
    async with http.get("/v2/team/only-maths/manifests/latest", headers=auth(token)) as response:
        maths_layers = [entry["digest"] for entry in json.loads(await response.read())["layers"]]
    async with http.get("/v2/team/five/manifests/latest", headers=auth(token)) as response:
        five_layers = {entry["digest"] for entry in json.loads(await response.read())["layers"]}
    foreign = next(digest for digest in maths_layers if digest not in five_layers)
    async with http.get(f"/v2/team/five/blobs/{foreign}", headers=auth(token)) as response:
        assert response.status == 404
        assert (await response.json())["errors"][0]["code"] == "BLOB_UNKNOWN"
    assert other["status"] == "COMPLETED"


async def test_anonymous_pull_follows_the_unauthenticated_role_bindings(
    registry_api: ApiClient, registry: Registry, tmp_path: Path
) -> None:
    """Anonymous users may read ``default/*`` (conda-store's default bindings), nothing else."""
    await built_image(registry_api, "default", "public", ["tinyjson"])
    pulled = skopeo_copy(registry.reference("default/public"), f"oci:{tmp_path / 'public'}:public")
    assert pulled.returncode == 0, pulled.stderr
    refused = skopeo_copy(registry.reference("team/five"), f"oci:{tmp_path / 'private'}:five")
    assert refused.returncode != 0
    assert "authentication required" in refused.stderr


@pytest.fixture
def insecure_registry(registry: Registry) -> Iterator[None]:
    """Declares the test registry (plain HTTP on loopback) insecure, the way containers tools
    (skopeo, podman) are told so: a drop-in file of registries.conf, removed afterwards."""
    drop_in = REGISTRIES_CONF_D / f"envstore-tests-{registry.host.replace(':', '-')}.conf"
    drop_in.parent.mkdir(parents=True, exist_ok=True)
    drop_in.write_text(f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n')
    try:
        yield
    finally:
        drop_in.unlink(missing_ok=True)


async def test_an_envstore_image_as_the_base_of_another_image(
    registry_api: ApiClient, registry: Registry, insecure_registry: None, tmp_path: Path
) -> None:
    """``image_base = docker://…``: skopeo copies the base from a registry, here envstore's own."""
    await built_image(registry_api, "default", "base-for-others", ["tinyjson"])
    storage = LocalStorage(tmp_path / "storage")

    base = await load_base_image(
        registry.reference("default/base-for-others"), image_platform("linux-64"), storage, tmp_path / "cache"
    )
    assert len(base.layers) == 1 + 1 + 1  # busybox, tinyjson, the environment layer
    assert base.container_config["Labels"]["org.envstore.environment"] == "base-for-others"
    assert all([await storage.has_blob(layer.digest) for layer in base.layers])
    # Read once per cache directory: a second load needs no registry.
    again = await load_base_image(
        registry.reference("default/base-for-others"), image_platform("linux-64"), storage, tmp_path / "cache"
    )
    assert again.layers == base.layers
