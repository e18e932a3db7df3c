"""One envstore stack for the registry's tests: builds ask for DOCKER_MANIFEST, images are built on
a busybox base (so their ``#!/bin/sh`` programs run in the unpacked rootfs), and two predefined
tokens stand for users with narrower rights than the admin's. Its API is under ``/conda-store``,
and nginx can be put in front of it (``proxy``)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from envstore.launcher.stack import EmbeddedStack
from tests.api_client import ApiClient, environment_yaml
from tests.registry.oci_tools import Registry, busybox_base_layout
from tests.reverse_proxy import PROXY_HOST, NginxProxy

# Reads team/* only.
READER_TOKEN = "registry-tests-reader"
# Reads conda-store-dynamic/* but may not create environments there.
DYNAMIC_VIEWER_TOKEN = "registry-tests-dynamic-viewer"
PREDEFINED_TOKENS = {
    READER_TOKEN: {"primary_namespace": "team", "role_bindings": {"team/*": ["viewer"]}},
    DYNAMIC_VIEWER_TOKEN: {"primary_namespace": "viewers", "role_bindings": {"conda-store-dynamic/*": ["viewer"]}},
}


@pytest.fixture(scope="package")
async def registry_stack(session_directory: Path, channel_url: str) -> AsyncIterator[EmbeddedStack]:
    base_layout = session_directory / "registry-busybox-base"
    base_layout.mkdir()
    settings = {
        "ENVSTORE_BUILD_ARTIFACTS": "LOCKFILE,YAML,DOCKER_MANIFEST",
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel_url,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel_url,
        "ENVSTORE_IMAGE_BASE": busybox_base_layout(base_layout),
        "ENVSTORE_PREDEFINED_TOKENS": json.dumps(PREDEFINED_TOKENS),
        "ENVSTORE_REGISTRY_IMAGE_WAIT_SECONDS": "120",
        # The API under a prefix, and nginx (tests/reverse_proxy.py) trusted in front of both: the
        # token realm the registry names must carry both.
        "ENVSTORE_URL_PREFIX": "/conda-store",
        "ENVSTORE_TRUSTED_PROXIES": PROXY_HOST,
    }
    async with EmbeddedStack(session_directory / "registry-stack", settings=settings) as stack:
        yield stack


@pytest.fixture(scope="package")
async def proxy(registry_stack: EmbeddedStack) -> AsyncIterator[NginxProxy]:
    """nginx terminating TLS in front of the stack's API and registry."""
    nginx = NginxProxy(
        registry_stack.data_directory / "nginx",
        registry_stack.url_prefix,
        f"{registry_stack.host}:{registry_stack.api_port}",
        f"{registry_stack.host}:{registry_stack.registry_port}",
    )
    await nginx.start()
    try:
        yield nginx
    finally:
        await nginx.stop()


@pytest.fixture(scope="package")
def registry(registry_stack: EmbeddedStack) -> Registry:
    return Registry(registry_stack.registry_url.removeprefix("http://"))


@pytest.fixture(scope="package")
def admin_credentials(registry_stack: EmbeddedStack) -> str:
    """``skopeo --creds``: any user name, the token as password (``docker login`` does the same)."""
    return f"anyone:{registry_stack.admin_token}"


@pytest.fixture
async def registry_api(registry_stack: EmbeddedStack) -> AsyncIterator[ApiClient]:
    async with ApiClient(registry_stack.api_url, token=registry_stack.admin_token) as client:
        yield client


@pytest.fixture
async def http(registry_stack: EmbeddedStack) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(registry_stack.registry_url) as session:
        yield session


async def built_image(api: ApiClient, namespace: str, name: str, dependencies: list[str]) -> dict:
    """Submit an environment and wait until its image exists; returns the build."""
    build_id = await api.submit(environment_yaml(name, dependencies), namespace=namespace)
    build = await api.wait_for_build(build_id, timeout_seconds=120)
    assert build["status"] == "COMPLETED", build["status_info"]
    assert "DOCKER_MANIFEST" in {artifact["artifact_type"] for artifact in build["build_artifacts"]}
    return build


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def manifest_digest(
    http: aiohttp.ClientSession, name: str, tag: str, token: str, accept: str = "application/vnd.oci.image.manifest.v1+json"
) -> str | None:
    async with http.head(f"/v2/{name}/manifests/{tag}", headers={**auth(token), "Accept": accept}) as response:
        return response.headers.get("Docker-Content-Digest") if response.status == 200 else None


async def wait_for_digest(
    http: aiohttp.ClientSession, name: str, tag: str, token: str, wanted: str | None, timeout_seconds: float = 30
) -> None:
    """Until the registry answers ``tag`` with ``wanted`` (None: no manifest), within a bound."""
    deadline = time.monotonic() + timeout_seconds
    while (current := await manifest_digest(http, name, tag, token)) != wanted:
        assert time.monotonic() < deadline, f"{name}:{tag} is {current}, not {wanted}, after {timeout_seconds} s"
        await asyncio.sleep(0.05)
