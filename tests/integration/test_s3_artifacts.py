"""With S3 storage, every artifact of a build lands in the bucket and downloads through the API's
307 redirect to a presigned S3 URL, byte for byte as stored.

The stack here is its own (S3, not the suite's local-directory stack): ``EmbeddedStack`` starts a
SeaweedFS ``weed mini`` because ``ENVSTORE_STORAGE_BACKEND=s3`` names no endpoint. Every artifact
kind is requested, and the test walks whatever the build lists in ``build_artifacts``, so kinds the
packager learns later are checked without touching this file.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aioboto3
import aiohttp
import pytest

from envstore.common.artifact_kinds import ArtifactKind
from envstore.common.demo_channel import FIVE_PACKAGE_SPEC
from envstore.launcher.stack import EmbeddedStack
from tests.api_client import ApiClient, environment_yaml

BUCKET = "envstore-artifacts"
# conda-store's download route of each kind that is downloaded as a file. Kinds served otherwise
# (DOCKER_MANIFEST: pulled through the registry) are checked in the bucket only.
DOWNLOAD_ROUTES = {
    ArtifactKind.LOCKFILE: "lockfile/",
    ArtifactKind.YAML: "yaml/",
    ArtifactKind.LOGS: "logs/",
    ArtifactKind.CONDA_PACK: "archive/",
    ArtifactKind.CONSTRUCTOR_INSTALLER: "installer/",
}
EVERY_STORED_KIND = [kind for kind in ArtifactKind if kind != ArtifactKind.DIRECTORY]


@pytest.fixture(scope="module")
async def s3_stack(tmp_path_factory: pytest.TempPathFactory, channel_url: str) -> AsyncIterator[EmbeddedStack]:
    settings = {
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel_url,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel_url,
        "ENVSTORE_STORAGE_BACKEND": "s3",
        "ENVSTORE_S3_BUCKET": BUCKET,
        "ENVSTORE_BUILD_ARTIFACTS": ",".join(EVERY_STORED_KIND),
    }
    async with EmbeddedStack(tmp_path_factory.mktemp("s3-stack"), settings=settings) as stack:
        yield stack


@pytest.fixture(scope="module")
async def completed_build(s3_stack: EmbeddedStack) -> dict[str, Any]:
    async with ApiClient(s3_stack.api_url, token=s3_stack.admin_token) as api:
        build_id = await api.submit(environment_yaml("five", list(FIVE_PACKAGE_SPEC)), namespace="s3")
        build = await api.wait_for_build(build_id)
    assert build["status"] == "COMPLETED", build["status_info"]
    return build


@pytest.fixture
async def bucket(s3_stack: EmbeddedStack):  # type: ignore[no-untyped-def]
    """A plain S3 client of the stack's server: what is in the bucket, seen without envstore."""
    assert s3_stack.s3 is not None, "the stack did not start an S3 server"
    async with aioboto3.Session().client("s3", **s3_stack.s3.client_options()) as client:
        yield client


async def bytes_named_in_bucket(bucket, key: str) -> bytes:  # type: ignore[no-untyped-def]
    """The blob that the name ``key`` points at, read from the bucket, checked against its digest."""
    pointer = await bucket.get_object(Bucket=BUCKET, Key=f"names/{key}")
    digest, size = (await pointer["Body"].read()).decode().split()
    blob = await bucket.get_object(Bucket=BUCKET, Key=f"blobs/sha256/{digest.removeprefix('sha256:')}")
    data = await blob["Body"].read()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
    assert len(data) == int(size)
    return data


async def test_every_artifact_is_in_the_bucket_and_downloads_through_a_presigned_redirect(
    s3_stack: EmbeddedStack, completed_build: dict[str, Any], bucket
) -> None:  # type: ignore[no-untyped-def]
    build_id = completed_build["id"]
    artifacts = completed_build["build_artifacts"]
    assert {"LOCKFILE", "YAML", "LOGS"} <= {artifact["artifact_type"] for artifact in artifacts}
    assert s3_stack.s3 is not None
    async with ApiClient(s3_stack.api_url, token=s3_stack.admin_token) as api, aiohttp.ClientSession() as plain:
        for artifact in artifacts:
            kind, key = artifact["artifact_type"], artifact["key"]
            stored = await bytes_named_in_bucket(bucket, key)
            route = DOWNLOAD_ROUTES.get(ArtifactKind(kind))
            if route is None:
                continue
            async with api.session.get(f"/api/v1/build/{build_id}/{route}", allow_redirects=False) as redirect:
                assert redirect.status == 307, (kind, await redirect.text())
                location = redirect.headers["Location"]
            assert location.startswith(f"{s3_stack.s3.endpoint_url}/{BUCKET}/blobs/sha256/"), (kind, location)
            async with plain.get(location) as download:  # no envstore credentials: the URL is the grant
                assert download.status == 200, (kind, await download.text())
                assert await download.read() == stored, kind
                assert key.rsplit("/", 1)[-1] in download.headers["Content-Disposition"], kind


async def test_a_client_that_follows_redirects_gets_the_lockfile_from_s3(
    s3_stack: EmbeddedStack, completed_build: dict[str, Any], bucket
) -> None:  # type: ignore[no-untyped-def]
    # What conda-store's CLI does: one GET, redirects followed. The API's bearer token must not be
    # forwarded to S3 (a second credential there would make S3 refuse the request).
    lockfile_key = next(a["key"] for a in completed_build["build_artifacts"] if a["artifact_type"] == "LOCKFILE")
    assert s3_stack.s3 is not None
    async with (
        ApiClient(s3_stack.api_url, token=s3_stack.admin_token) as api,
        api.session.get(f"/api/v1/build/{completed_build['id']}/lockfile/") as response,
    ):
        assert response.status == 200
        assert str(response.url).startswith(s3_stack.s3.endpoint_url)
        assert await response.read() == await bytes_named_in_bucket(bucket, lockfile_key)


async def test_nothing_is_written_to_the_local_storage_directory(
    s3_stack: EmbeddedStack, completed_build: dict[str, Any]
) -> None:
    local_blobs = s3_stack.data_directory / "storage" / "blobs" / "sha256"
    assert not local_blobs.exists() or not any(local_blobs.iterdir())


@pytest.mark.faults
async def test_the_s3_server_is_restarted_after_a_crash_and_builds_go_on(
    s3_stack: EmbeddedStack, completed_build: dict[str, Any]
) -> None:
    s3 = s3_stack.process("s3")
    crashed_pid = s3.pid
    await s3.kill()  # SIGKILL; the supervisor starts it again on the same ports and data
    deadline = time.monotonic() + 60
    while not (s3.state == "running" and s3.pid not in (None, crashed_pid)):
        assert time.monotonic() < deadline, f"the S3 server was not restarted: {s3.state}, {s3.last_exit}"
        await asyncio.sleep(0.1)
    assert s3.restarts == 1 and s3.last_exit == "killed by SIGKILL"
    async with ApiClient(s3_stack.api_url, token=s3_stack.admin_token) as api:
        # What was stored before the crash is still there, and a new build stores its artifacts.
        status, _ = await api.get(f"/api/v1/build/{completed_build['id']}/lockfile/")
        assert status == 200
        build = await api.wait_for_build(await api.submit(environment_yaml("after-crash", ["tinyjson"]), namespace="s3"))
        assert build["status"] == "COMPLETED", build["status_info"]
        status, _ = await api.get(f"/api/v1/build/{build['id']}/lockfile/")
        assert status == 200
