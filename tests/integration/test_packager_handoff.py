"""No filesystem is shared between the builder and the packager: a packager on "another host" —
its own package cache, never the builder's prefix — installs the lock itself and makes every
artifact, which works where it is unpacked."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import aiohttp
import pytest

from envstore.launcher.stack import EmbeddedStack
from tests.api_client import ApiClient, environment_yaml


@pytest.fixture(scope="module")
async def split_stack(session_directory: Path, channel_url: str):  # type: ignore[no-untyped-def]
    settings = {
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel_url,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel_url,
        "ENVSTORE_BUILD_ARTIFACTS": "LOCKFILE,YAML,CONDA_PACK,CONSTRUCTOR_INSTALLER",
    }
    packager_host = session_directory / "packager-host"
    packager = {
        "ENVSTORE_PACKAGER_REUSE_BUILDER_PREFIX": "false",
        "ENVSTORE_CACHE_DIRECTORY": str(packager_host / "cache"),
        "ENVSTORE_STORE_DIRECTORY": str(packager_host / "store"),
    }
    async with EmbeddedStack(
        session_directory / "split-stack", settings=settings, service_settings={"packager": packager}
    ) as running:
        yield running, packager_host


async def test_a_packager_on_another_host_packs_from_the_lock(split_stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    stack, packager_host = split_stack
    async with ApiClient(stack.api_url, token=stack.admin_token) as admin:
        build = await admin.wait_for_build(await admin.submit(environment_yaml("handed-off", ["hello", "tinyjson"]), "handoff"))
        assert build["status"] == "COMPLETED", build["status_info"]
        status, log = await admin.get(f"/api/v1/build/{build['id']}/logs/")
        assert "the builder's prefix is not on this host" in log
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {stack.admin_token}"}) as http:
            async with http.get(f"{stack.api_url}/api/v1/build/{build['id']}/archive/") as response:
                assert response.status == 200
                (tmp_path / "env.tar.gz").write_bytes(await response.read())
    # The packager filled its own package cache; the builder's was never read by it.
    assert any((packager_host / "cache" / "pkgs").iterdir())
    unpacked = tmp_path / "unpacked"
    with tarfile.open(tmp_path / "env.tar.gz") as archive:
        archive.extractall(unpacked, filter="tar")
    subprocess.run(["python3", str(unpacked / "bin" / "conda-unpack")], check=True)
    greeting = subprocess.run([str(unpacked / "bin" / "hello")], capture_output=True, text=True, check=True)
    assert greeting.stdout.strip()
