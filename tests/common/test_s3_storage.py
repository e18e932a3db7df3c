"""Artifact storage, on both back ends: a local directory and S3 (a real SeaweedFS ``weed mini``).

What is shared (blobs, names, ranges, large files) runs on both; what only S3 does (presigned
downloads, the bucket layout, creating the bucket, refusing bad credentials) runs on S3.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import time
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import aioboto3
import aiohttp
import pytest

from envstore.common.events import BlobRef
from envstore.common.s3_storage import S3Storage, S3StorageError
from envstore.common.settings import EnvstoreSettings
from envstore.common.storage import BlobNotFoundError, LocalStorage, Storage, open_storage
from envstore.launcher.s3_process import SeaweedS3Server

MEBIBYTE = 1024 * 1024
ABSENT_DIGEST = "sha256:" + "0" * 64


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def fresh_bucket_name() -> str:
    return f"storage-test-{secrets.token_hex(6)}"


def s3_storage_for(server: SeaweedS3Server, bucket: str, **options: object) -> S3Storage:
    return S3Storage(
        bucket,
        endpoint_url=server.endpoint_url,
        region=server.region,
        access_key=server.access_key,
        secret_key=server.secret_key,
        path_style=True,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
async def s3_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SeaweedS3Server]:
    server = SeaweedS3Server(
        tmp_path_factory.mktemp("s3"), access_key="storage-tests", secret_key=secrets.token_urlsafe(24)
    )
    async with server:
        yield server


@pytest.fixture
async def bucket_client(s3_server: SeaweedS3Server):  # type: ignore[no-untyped-def]
    """A plain S3 client of the server, to look at the bucket without envstore's code."""
    async with aioboto3.Session().client("s3", **s3_server.client_options()) as client:
        yield client


@pytest.fixture(params=["local", "s3"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path, s3_server: SeaweedS3Server) -> AsyncIterator[Storage]:
    if request.param == "local":
        yield LocalStorage(tmp_path / "storage")
        return
    async with s3_storage_for(s3_server, fresh_bucket_name()) as s3_storage:
        yield s3_storage


@pytest.fixture
async def s3_storage(s3_server: SeaweedS3Server) -> AsyncIterator[S3Storage]:
    async with s3_storage_for(s3_server, fresh_bucket_name()) as opened:
        yield opened


# --- shared behaviour ---------------------------------------------------------------------------


async def test_bytes_are_stored_once_under_their_sha256(storage: Storage) -> None:
    data = b"name: demo\ndependencies: [hello]\n"
    blob = await storage.put_bytes(data)
    assert blob == BlobRef(digest=sha256_digest(data), size=len(data))
    assert await storage.has_blob(blob.digest)
    assert await storage.get_bytes(blob) == data
    assert await storage.get_bytes(blob.digest) == data
    assert await storage.put_bytes(data) == blob  # the same content is the same blob

    empty = await storage.put_bytes(b"")
    assert empty.size == 0 and await storage.get_bytes(empty) == b""


async def test_a_missing_blob_is_reported_as_missing(storage: Storage) -> None:
    assert not await storage.has_blob(ABSENT_DIGEST)
    with pytest.raises(BlobNotFoundError):
        await storage.get_bytes(ABSENT_DIGEST)
    with pytest.raises(BlobNotFoundError):
        await storage.read_range(ABSENT_DIGEST, 0, 10)
    with pytest.raises(ValueError, match="not a sha256 digest"):
        await storage.has_blob("sha256:../../etc/passwd")


async def test_a_name_resolves_to_its_blob_until_deleted(storage: Storage) -> None:
    first = await storage.put_bytes(b"lockfile, first build")
    second = await storage.put_bytes(b"lockfile, second build")
    key = "lockfile/0123abcd-1700000000-1-demo.yml"

    assert await storage.resolve(key) is None
    await storage.name(key, first)
    assert await storage.resolve(key) == first
    await storage.name(key, second)  # naming again points the name elsewhere
    assert await storage.resolve(key) == second
    resolved = await storage.resolve(key)
    assert resolved is not None and await storage.get_bytes(resolved) == b"lockfile, second build"

    await storage.delete_name(key)
    assert await storage.resolve(key) is None
    await storage.delete_name(key)  # deleting what is gone is not an error
    assert await storage.has_blob(second.digest)  # names go, blobs stay (other names may share them)


@pytest.mark.parametrize("bad_key", ["", "/absolute", "a/../b", "a//b", "./a", "trailing/"])
async def test_a_name_must_be_a_relative_path(storage: Storage, bad_key: str) -> None:
    blob = await storage.put_bytes(b"x")
    with pytest.raises(ValueError, match="not a storage key"):
        await storage.name(bad_key, blob)


async def test_a_file_larger_than_16_mib_round_trips(storage: Storage, tmp_path: Path) -> None:
    path = tmp_path / "archive.tar.gz"
    content = os.urandom(17 * MEBIBYTE + 12345)
    path.write_bytes(content)

    blob = await storage.put_file(path)
    assert blob == BlobRef(digest=sha256_digest(content), size=len(content))
    assert await storage.get_bytes(blob) == content
    assert await storage.put_file(path) == blob
    tail = await storage.read_range(blob, len(content) - MEBIBYTE, len(content))
    assert tail == content[-MEBIBYTE:]


async def test_a_file_hashed_by_its_writer_is_adopted_and_outlives_it(storage: Storage, tmp_path: Path) -> None:
    content = os.urandom(9 * MEBIBYTE + 5)
    path = tmp_path / "layer.tar.gz"
    path.write_bytes(content)
    announced = BlobRef(digest=sha256_digest(content), size=len(content))

    assert await storage.adopt_file(path, announced) == announced
    if isinstance(storage, LocalStorage):  # linked, not copied
        stored = storage.local_path(announced)
        assert stored is not None and stored.stat().st_ino == path.stat().st_ino
    path.unlink()  # the packager removes its work directory
    assert await storage.get_bytes(announced) == content
    assert await storage.adopt_file(tmp_path / "gone", announced) == announced  # stored already


async def test_byte_ranges_read_like_slices(storage: Storage) -> None:
    data = bytes(range(256)) * 40
    blob = await storage.put_bytes(data)
    for start, end in [(0, 10), (100, 101), (17, 17), (5000, 20_000), (len(data), len(data) + 5), (99_999, 100_000)]:
        assert await storage.read_range(blob, start, end) == data[start:end], (start, end)
    with pytest.raises(ValueError, match="not a byte range"):
        await storage.read_range(blob, 10, 5)
    with pytest.raises(ValueError, match="not a byte range"):
        await storage.read_range(blob, -1, 5)


async def test_a_blob_streams_in_chunks_whole_or_from_an_offset(storage: Storage) -> None:
    data = os.urandom(3 * MEBIBYTE + 7)
    blob = await storage.put_bytes(data)

    whole = [chunk async for chunk in storage.stream_blob(blob, chunk_size=MEBIBYTE)]
    assert b"".join(whole) == data
    assert len(whole) >= 4 and all(len(chunk) <= MEBIBYTE for chunk in whole)

    from_offset = b"".join([chunk async for chunk in storage.stream_blob(blob, start=MEBIBYTE + 3)])
    assert from_offset == data[MEBIBYTE + 3 :]
    middle = b"".join([chunk async for chunk in storage.stream_blob(blob, 10, 2 * MEBIBYTE, chunk_size=65536)])
    assert middle == data[10 : 2 * MEBIBYTE]


async def test_open_storage_chooses_the_back_end_from_settings(
    tmp_path: Path, s3_server: SeaweedS3Server, bucket_client
) -> None:  # type: ignore[no-untyped-def]
    async with open_storage(EnvstoreSettings(data_dir=tmp_path)) as local:
        assert isinstance(local, LocalStorage)
        assert local.root == (tmp_path / "storage").resolve()

    bucket = fresh_bucket_name()
    s3_settings = EnvstoreSettings(
        data_dir=tmp_path,
        storage_backend="s3",
        s3_endpoint_url=s3_server.endpoint_url,
        s3_bucket=bucket,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
        s3_path_style=True,
        s3_presign_seconds=120,
    )
    async with open_storage(s3_settings) as remote:
        assert isinstance(remote, S3Storage)
        assert remote.presign_seconds == 120
        await bucket_client.head_bucket(Bucket=bucket)  # created because it was missing
        blob = await remote.put_bytes(b"through open_storage")
    async with open_storage(s3_settings) as reopened:  # an existing bucket is used as it is
        assert await reopened.get_bytes(blob) == b"through open_storage"


# --- S3 only ------------------------------------------------------------------------------------


async def test_the_bucket_holds_blobs_by_digest_and_names_as_pointers(
    s3_storage: S3Storage, bucket_client
) -> None:  # type: ignore[no-untyped-def]
    data = b"channels: [local]\n"
    blob = await s3_storage.put_bytes(data)
    await s3_storage.name("yaml/0123abcd-1700000000-1-demo.yml", blob)

    stored = await bucket_client.get_object(Bucket=s3_storage.bucket, Key=f"blobs/sha256/{blob.digest[7:]}")
    assert await stored["Body"].read() == data
    pointer = await bucket_client.get_object(Bucket=s3_storage.bucket, Key="names/yaml/0123abcd-1700000000-1-demo.yml")
    assert await pointer["Body"].read() == f"{blob.digest} {blob.size}\n".encode()


async def test_a_large_file_is_uploaded_in_parts(
    s3_storage: S3Storage, bucket_client, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "installer.sh"
    path.write_bytes(os.urandom(20 * MEBIBYTE))
    blob = await s3_storage.put_file(path)
    head = await bucket_client.head_object(Bucket=s3_storage.bucket, Key=f"blobs/sha256/{blob.digest[7:]}")
    assert head["ContentLength"] == blob.size
    # A multipart object's ETag is "<md5 of the parts' md5s>-<number of parts>": 8 MiB parts here.
    assert head["ETag"].strip('"').endswith("-3")


async def test_a_presigned_url_downloads_a_name_with_a_plain_get(s3_storage: S3Storage) -> None:
    data = b"# conda-lock file\nversion: 1\n"
    key = "lockfile/0123abcd-1700000000-1-demo.yml"
    await s3_storage.name(key, await s3_storage.put_bytes(data))
    blob = await s3_storage.resolve(key)
    assert blob is not None

    url = await s3_storage.download_url(key, blob, filename="0123abcd-1700000000-1-demo.yml", content_type="text/yaml")
    assert url is not None and url.startswith(s3_storage.endpoint_url or "")
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as response:
            assert response.status == 200
            assert await response.read() == data
            assert response.headers["Content-Type"] == "text/yaml"
            assert 'filename="0123abcd-1700000000-1-demo.yml"' in response.headers["Content-Disposition"]
        # The signature is what grants access: the same URL with another key's path is refused.
        tampered = url.replace(f"/blobs/sha256/{blob.digest[7:]}", f"/blobs/sha256/{ABSENT_DIGEST[7:]}")
        async with http.get(tampered) as response:
            assert response.status == 403


async def test_local_storage_offers_no_download_url(tmp_path: Path) -> None:
    local = LocalStorage(tmp_path / "storage")
    blob = await local.put_bytes(b"streamed by the API itself")
    assert await local.download_url("yaml/demo.yml", blob, filename="demo.yml") is None
    assert local.local_path(blob) is not None


async def test_s3_storage_has_no_local_path(s3_storage: S3Storage) -> None:
    blob = await s3_storage.put_bytes(b"remote only")
    assert s3_storage.local_path(blob) is None


async def test_wrong_credentials_fail_at_open_with_what_to_check(s3_server: SeaweedS3Server) -> None:
    storage = S3Storage(
        fresh_bucket_name(),
        endpoint_url=s3_server.endpoint_url,
        access_key=s3_server.access_key,
        secret_key="not-the-secret",
        path_style=True,
    )
    with pytest.raises(S3StorageError, match="ENVSTORE_S3_SECRET_KEY"):
        await storage.open()


async def test_blobs_survive_a_crash_of_the_s3_server(tmp_path: Path) -> None:
    async with SeaweedS3Server(tmp_path / "s3", access_key="crash-test", secret_key="crash-secret") as server:
        async with s3_storage_for(server, "crash-test") as before:
            blob = await before.put_bytes(b"written before the crash")
            await before.name("logs/demo.log", blob)
        endpoint = server.endpoint_url
        await server.kill()
        assert not server.is_running
        await server.restart()
        assert server.endpoint_url == endpoint
        async with s3_storage_for(server, "crash-test") as after:
            assert await after.resolve("logs/demo.log") == blob
            assert await after.get_bytes(blob) == b"written before the crash"


# --- garbage collection's primitives -----------------------------------------------------------


async def test_a_blob_reused_after_the_cutoff_survives_collection_and_an_old_one_goes(storage: Storage) -> None:
    """What garbage collection relies on, in both back ends: the inventory lists every blob with
    its size and time; writing a stored blob again touches it; a blob touched at or after the
    cutoff is not deleted, an older one is (once)."""
    reused, old = b"layer reused by a running build", b"layer of a deleted build"
    reused_blob, old_blob = await storage.put_bytes(reused), await storage.put_bytes(old)
    listed = {blob.digest: blob for blob in [entry async for entry in storage.blob_inventory()]}
    assert listed[reused_blob.digest].size == len(reused) and listed[old_blob.digest].size == len(old)

    # S3 keeps times to the second, file systems stamp with a clock a few ms coarse: the cutoff is
    # the next whole second, and the reuse comes a little after it.
    cutoff = math.ceil(time.time() + 0.01)
    await asyncio.sleep(cutoff - time.time() + 0.05)
    assert await storage.put_bytes(reused) == reused_blob  # a writer finding it stored touches it
    freed = await storage.delete_blobs_unless_touched([reused_blob.digest, old_blob.digest], cutoff)
    assert freed == {old_blob.digest: len(old)}, "the reused blob stays, the old one goes"
    assert await storage.get_bytes(reused_blob) == reused
    assert not await storage.has_blob(old_blob.digest)
    assert await storage.delete_blobs_unless_touched([old_blob.digest], cutoff) == {}
    assert not await storage.touch_blob(old_blob.digest), "a missing blob cannot be touched: its user writes it"
    after = {blob.digest: blob for blob in [entry async for entry in storage.blob_inventory()]}
    assert old_blob.digest not in after and after[reused_blob.digest].modified_at >= cutoff
