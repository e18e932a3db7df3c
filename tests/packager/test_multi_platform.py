"""A build locked for several platforms, as its users get it: a tarball and an installer for every
platform (installed from the lock on this linux-64 machine without running any package's scripts),
at conda-store's routes for the main platform and with ``?platform=`` for the others, listed by
``/artifacts/``; the image is an OCI image index of linux/amd64 and linux/arm64 images that skopeo
pulls by architecture; a rebuild gives the same index digest. A specification's virtual packages
(a GPU's ``__cuda``) are what its solve assumes, and the lockfile records them."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from envstore.common.demo_channel import HELLO_PLATFORM_FILE
from envstore.common.settings import host_platform
from envstore.launcher.stack import EmbeddedStack
from tests.api_client import ApiClient, environment_yaml
from tests.registry.oci_tools import Registry, skopeo_inspect, unpack

PLATFORMS = ("linux-64", "linux-aarch64", "osx-arm64")
OCI_INDEX = "application/vnd.oci.image.index.v1+json"

pytestmark = pytest.mark.skipif(host_platform() != "linux-64", reason="the main platform of these builds is linux-64")


@pytest.fixture(scope="module")
async def multi_platform_stack(session_directory: Path, channel_url: str) -> AsyncIterator[EmbeddedStack]:
    settings = {
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel_url,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel_url,
        "ENVSTORE_CONDA_SOLVE_PLATFORMS": ",".join(PLATFORMS),
    }
    async with EmbeddedStack(session_directory / "multi-platform-stack", settings=settings) as stack:
        yield stack


@pytest.fixture
async def admin(multi_platform_stack: EmbeddedStack) -> AsyncIterator[ApiClient]:
    async with ApiClient(multi_platform_stack.api_url, token=multi_platform_stack.admin_token) as client:
        yield client


async def download(stack: EmbeddedStack, path: str) -> bytes:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {stack.admin_token}"}) as http:
        async with http.get(f"{stack.api_url}{path}") as response:
            assert response.status == 200, await response.text()
            return await response.read()


def member(archive: bytes, path: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(archive)) as opened:
        extracted = opened.extractfile(path)
        assert extracted is not None
        return extracted.read()


def installer_payload(installer: bytes) -> bytes:
    """The tarball an installer carries after its header (its last PAYLOAD_SIZE bytes)."""
    size = int(next(line for line in installer.split(b"\n") if line.startswith(b"PAYLOAD_SIZE=")).split(b"=")[1])
    return installer[-size:]


async def test_every_platform_gets_its_tarball_installer_and_image(
    admin: ApiClient, multi_platform_stack: EmbeddedStack, tmp_path: Path
) -> None:
    stack = multi_platform_stack
    build = await admin.wait_for_build(await admin.submit(environment_yaml("everywhere", ["hello", "tinyjson"]), "multi"), 120)
    assert build["status"] == "COMPLETED", build["status_info"]
    build_id = build["id"]

    # conda-store's view is unchanged: one artifact of each kind, the main platform's.
    assert sorted(artifact["artifact_type"] for artifact in build["build_artifacts"]) == sorted(
        ["LOCKFILE", "YAML", "CONDA_PACK", "CONSTRUCTOR_INSTALLER", "DOCKER_MANIFEST", "LOGS"]
    )
    status, listing = await admin.get(f"/api/v1/build/{build_id}/artifacts/")
    assert status == 200
    by_kind: dict[str, dict[str, dict]] = {}
    for artifact in listing["data"]:
        by_kind.setdefault(artifact["artifact_type"], {})[artifact["platform"]] = artifact
    for kind, route in (("CONDA_PACK", "archive"), ("CONSTRUCTOR_INSTALLER", "installer")):
        assert sorted(by_kind[kind]) == sorted(PLATFORMS)
        assert by_kind[kind]["linux-64"]["main"] and by_kind[kind]["linux-64"]["url"] == f"/api/v1/build/{build_id}/{route}/"
        assert by_kind[kind]["linux-aarch64"]["url"] == f"/api/v1/build/{build_id}/{route}/?platform=linux-aarch64"
        assert "linux-aarch64" in by_kind[kind]["linux-aarch64"]["key"]
    assert by_kind["DOCKER_MANIFEST"][None]["content_type"] == OCI_INDEX

    # Each platform's tarball holds that platform's build of hello; the conda-store route keeps the host's.
    main_archive = await download(stack, f"/api/v1/build/{build_id}/archive/")
    assert member(main_archive, HELLO_PLATFORM_FILE) == b"linux-64\n"
    for platform in PLATFORMS:
        archive = await download(stack, f"/api/v1/build/{build_id}/archive/?platform={platform}")
        assert member(archive, HELLO_PLATFORM_FILE) == f"{platform}\n".encode()
        hello_record = next(
            json.loads(member(archive, name))
            for name in tarfile.open(fileobj=io.BytesIO(archive)).getnames()
            if name.startswith("conda-meta/hello-") and name.endswith(".json")
        )
        assert hello_record["subdir"] == platform
        installer = await download(stack, f"/api/v1/build/{build_id}/installer/?platform={platform}")
        assert f"PLATFORM={platform}".encode() in installer
        assert member(installer_payload(installer), HELLO_PLATFORM_FILE) == f"{platform}\n".encode()

    status, body = await admin.get(f"/api/v1/build/{build_id}/archive/?platform=win-64")
    assert status == 404
    assert body["message"] == f"build {build_id} has no CONDA_PACK artifact for win-64; it has one for {sorted(PLATFORMS)}"

    # The image: an index of linux/amd64 and linux/arm64; skopeo takes the architecture asked for.
    registry = Registry(f"{stack.host}:{stack.registry_port}")
    credentials = f"any:{stack.admin_token}"
    raw = skopeo_inspect(registry.reference("multi/everywhere"), credentials, raw=True)
    assert raw.returncode == 0, raw.stderr
    index = json.loads(raw.stdout)
    assert index["mediaType"] == OCI_INDEX
    assert [(m["platform"]["os"], m["platform"]["architecture"]) for m in index["manifests"]] == [
        ("linux", "amd64"),
        ("linux", "arm64"),
    ]
    for architecture, platform in (("arm64", "linux-aarch64"), ("amd64", "linux-64")):
        layout = tmp_path / f"layout-{architecture}"
        copied = subprocess_copy(registry, credentials, layout, architecture)
        assert copied.returncode == 0, copied.stderr
        rootfs = unpack(f"{layout}:image", tmp_path / f"bundle-{architecture}")
        assert (rootfs / "opt" / "conda" / HELLO_PLATFORM_FILE).read_text() == f"{platform}\n"

    # A rebuild of the same specification gives the same index, byte for byte.
    status, answer = await admin.request("PUT", f"/api/v1/build/{build_id}/")
    rebuilt = await admin.wait_for_build(answer["data"]["build_id"], 120)
    assert rebuilt["status"] == "COMPLETED", rebuilt["status_info"]
    again = skopeo_inspect(registry.reference("multi/everywhere", str(rebuilt["id"])), credentials, raw=True)
    assert hashlib.sha256(again.stdout.encode()).hexdigest() == hashlib.sha256(raw.stdout.encode()).hexdigest()


def subprocess_copy(registry: Registry, credentials: str, layout: Path, architecture: str) -> subprocess.CompletedProcess[str]:
    """``skopeo --override-arch <architecture> copy``: the image of an index for that architecture."""
    return subprocess.run(
        [
            "skopeo", "--override-arch", architecture, "copy", "--src-tls-verify=false", f"--src-creds={credentials}",
            registry.reference("multi/everywhere"), f"oci:{layout}:image",
        ],
        capture_output=True, text=True, timeout=300, check=False,
    )


async def test_virtual_packages_of_the_specification_are_solved_with_and_locked(admin: ApiClient) -> None:
    without = await admin.wait_for_build(await admin.submit(environment_yaml("no-gpu", ["gpukit"]), "multi"), 60)
    assert without["status"] == "FAILED"
    assert "__cuda" in without["status_info"]

    specification = environment_yaml("gpu", ["gpukit"]) + "virtual_packages:\n  - __cuda=12.4\n"
    build = await admin.wait_for_build(await admin.submit(specification, "multi"), 120)
    assert build["status"] == "COMPLETED", build["status_info"]
    _, lockfile = await admin.get(f"/api/v1/build/{build['id']}/lockfile/")
    lockfile = json.loads(lockfile) if isinstance(lockfile, str) else lockfile
    custom = lockfile["metadata"]["custom_metadata"]
    for platform in PLATFORMS:
        assert "__cuda=12.4=0" in custom[f"virtual_packages.{platform}"].split()
    assert "__glibc=2.28=0" in custom["virtual_packages.linux-aarch64"].split()


async def test_a_virtual_package_written_wrongly_is_refused(admin: ApiClient) -> None:
    specification = environment_yaml("bad-gpu", ["gpukit"]) + "virtual_packages:\n  - cuda 12\n"
    status, body = await admin.request("POST", "/api/v1/specification/", json={"specification": specification, "namespace": "multi"})
    assert status == 400
    assert "virtual package 'cuda 12' must be written as __name=version[=build], e.g. __cuda=12.4" in body["message"]
