"""With S3 storage the image's layers live in the bucket: the registry answers blob requests with a
307 redirect to a presigned S3 URL, which skopeo follows, and the pulled image runs as from local
storage. (The stack is its own: ``EmbeddedStack`` starts SeaweedFS for ``ENVSTORE_STORAGE_BACKEND=s3``.)"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from envstore.common.demo_channel import FIVE_PACKAGE_SPEC
from envstore.launcher.stack import EmbeddedStack
from tests.api_client import ApiClient
from tests.registry.conftest import auth, built_image
from tests.registry.oci_tools import (
    Registry,
    busybox_base_layout,
    run_in_rootfs,
    skopeo_copy,
    unpack,
)


@pytest.fixture(scope="module")
async def s3_registry_stack(tmp_path_factory: pytest.TempPathFactory, channel_url: str) -> AsyncIterator[EmbeddedStack]:
    base = tmp_path_factory.mktemp("s3-registry-base")
    settings = {
        "ENVSTORE_BUILD_ARTIFACTS": "LOCKFILE,YAML,DOCKER_MANIFEST",
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel_url,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel_url,
        "ENVSTORE_STORAGE_BACKEND": "s3",
        "ENVSTORE_S3_BUCKET": "envstore-images",
        "ENVSTORE_IMAGE_BASE": busybox_base_layout(base),
    }
    async with EmbeddedStack(tmp_path_factory.mktemp("s3-registry-stack"), settings=settings) as stack:
        yield stack


async def test_layers_redirect_to_presigned_s3_urls_and_the_image_runs(
    s3_registry_stack: EmbeddedStack, tmp_path: Path
) -> None:
    stack = s3_registry_stack
    async with ApiClient(stack.api_url, token=stack.admin_token) as api:
        await built_image(api, "team", "five", list(FIVE_PACKAGE_SPEC))
    async with aiohttp.ClientSession(stack.registry_url) as http:
        async with http.get("/v2/team/five/manifests/latest", headers=auth(stack.admin_token)) as response:
            layer = json.loads(await response.read())["layers"][-1]
        blob_path = f"/v2/team/five/blobs/{layer['digest']}"
        async with http.get(blob_path, headers=auth(stack.admin_token), allow_redirects=False) as response:
            assert response.status == 307
            assert response.headers["Docker-Content-Digest"] == layer["digest"]
            location = response.headers["Location"]
        assert "X-Amz-Signature=" in location and not location.startswith(stack.registry_url)
        # The presigned URL needs no envstore credentials.
        async with aiohttp.ClientSession() as anonymous, anonymous.get(location) as response:
            assert response.status == 200
            assert "sha256:" + hashlib.sha256(await response.read()).hexdigest() == layer["digest"]

    registry = Registry(stack.registry_url.removeprefix("http://"))
    pulled = skopeo_copy(registry.reference("team/five"), f"oci:{tmp_path / 'layout'}:five", f"u:{stack.admin_token}")
    assert pulled.returncode == 0, pulled.stderr
    rootfs = unpack(f"{tmp_path / 'layout'}:five", tmp_path / "bundle")
    assert run_in_rootfs(rootfs, "/opt/conda/bin/hello") == "hello 2.1 prefix=/opt/conda greeting-data=2.0\n"
