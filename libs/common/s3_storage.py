"""Artifact storage in an S3 bucket (aioboto3), the same interface as ``LocalStorage``.

Layout in the bucket:

- ``blobs/sha256/<hex>``: each blob, once per content, its key derived from its digest.
- ``names/<key>``: a small pointer object per name (``lockfile/<build key>.yml`` …) holding
  ``"<digest> <size>\\n"``, the same bytes as a local pointer file.

Names are pointers rather than S3 copies of the blob: naming stays one tiny PUT whatever the
artifact's size (a copy of a multi-GiB tarball is a multipart server-side copy above 5 GiB), an
image layer shared by many environments is stored once, and a name resolves to its digest and size
with one small GET. Downloads do not need the name object: the presigned URL points at the blob
itself and carries the artifact's file name in ``response-content-disposition``.

One aioboto3 client (one connection pool) is opened by ``open()`` and closed by ``close()``, or by
``async with``; ``open_storage`` does that for services.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aioboto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from envstore.common.events import BlobRef
from envstore.common.storage import (
    CHUNK,
    BlobNotFoundError,
    StoredBlob,
    check_range,
    checked_key,
    digest_hex,
    digest_of,
    name_pointer,
    parse_name_pointer,
)

if TYPE_CHECKING:
    from envstore.common.settings import EnvstoreSettings

BLOB_PREFIX = "blobs/sha256/"
TOUCHED_PREFIX = "touched/sha256/"
NAME_PREFIX = "names/"
# S3 multipart limits: parts of at least 5 MiB (but the last), at most 10 000 parts.
MULTIPART_PART_BYTES = 8 * 1024 * 1024
MULTIPART_MAX_PARTS = 10_000
# Parts in flight and parts read ahead: bounds an upload's memory to about
# (concurrency + read-ahead) × part size (aioboto3's default read-ahead is 100 parts).
MULTIPART_CONCURRENCY = 4
MULTIPART_READ_AHEAD = 2
NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket"})
RANGE_NOT_SATISFIABLE_CODES = frozenset({"416", "InvalidRange"})
BUCKET_BEING_CREATED_CODES = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})
DEFAULT_REGION = "us-east-1"


class S3StorageError(RuntimeError):
    """The bucket cannot be reached or used with the configured settings."""


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def blob_key(digest: str) -> str:
    return BLOB_PREFIX + digest_hex(digest)


def name_key(key: str) -> str:
    return NAME_PREFIX + checked_key(key)


def blob_ref_of_bytes(data: bytes) -> BlobRef:
    return BlobRef(digest="sha256:" + hashlib.sha256(data).hexdigest(), size=len(data))


def blob_ref_of_file(path: Path) -> BlobRef:
    hasher = hashlib.sha256()
    size = 0
    with open(path, "rb") as source:
        while chunk := source.read(CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return BlobRef(digest="sha256:" + hasher.hexdigest(), size=size)


def attachment_disposition(filename: str) -> str:
    """``Content-Disposition`` that saves the download as ``filename`` (RFC 6266, with an ASCII
    fallback for clients that ignore ``filename*``)."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def upload_transfer_config(size: int) -> TransferConfig:
    part_bytes = max(MULTIPART_PART_BYTES, math.ceil(size / MULTIPART_MAX_PARTS))
    return TransferConfig(
        multipart_threshold=MULTIPART_PART_BYTES,
        multipart_chunksize=part_bytes,
        max_concurrency=MULTIPART_CONCURRENCY,
        max_io_queue=MULTIPART_READ_AHEAD,
        io_chunksize=CHUNK,
    )


class S3Storage:
    """Blobs and names in one bucket (created on ``open()`` if missing)."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str = DEFAULT_REGION,
        access_key: str | None = None,
        secret_key: str | None = None,
        path_style: bool = False,
        presign_seconds: int = 3600,
    ) -> None:
        if (access_key is None) != (secret_key is None):
            raise S3StorageError(
                "set both the S3 access key and secret key, or neither (to use boto's credential chain)"
            )
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        self.presign_seconds = presign_seconds
        self._access_key = access_key
        self._secret_key = secret_key
        self._path_style = path_style
        self._resources: contextlib.AsyncExitStack | None = None
        self._open_client: Any = None

    @classmethod
    def from_settings(cls, settings: EnvstoreSettings) -> S3Storage:
        return cls(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key=settings.s3_access_key.get_secret_value() if settings.s3_access_key else None,
            secret_key=settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None,
            path_style=settings.s3_path_style,
            presign_seconds=settings.s3_presign_seconds,
        )

    # --- lifetime -------------------------------------------------------------------------------

    async def open(self) -> None:
        if self._open_client is not None:
            raise S3StorageError("this S3Storage is already open")
        resources = contextlib.AsyncExitStack()
        try:
            self._open_client = await resources.enter_async_context(self._new_client())
            await self._ensure_bucket()
        except BaseException:
            self._open_client = None
            await resources.aclose()
            raise
        self._resources = resources

    async def close(self) -> None:
        resources, self._resources, self._open_client = self._resources, None, None
        if resources is not None:
            await resources.aclose()

    async def __aenter__(self) -> S3Storage:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def _new_client(self) -> Any:
        credentials = (
            {"aws_access_key_id": self._access_key, "aws_secret_access_key": self._secret_key}
            if self._access_key is not None
            else {}
        )
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path" if self._path_style else "auto"},
            # Checksums only where S3 demands them: S3-compatible servers differ in how they take
            # botocore's default CRC trailers, and blobs are already verified by their sha256 name.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"mode": "standard", "max_attempts": 5},
        )
        return aioboto3.Session().client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config, **credentials
        )

    @property
    def _client(self) -> Any:
        if self._open_client is None:
            raise S3StorageError("S3Storage is not open: use `async with S3Storage(...)` or `await storage.open()`")
        return self._open_client

    async def _ensure_bucket(self) -> None:
        if await self._bucket_exists():
            return
        arguments: dict[str, Any] = {"Bucket": self.bucket}
        if self.region != DEFAULT_REGION:
            arguments["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            await self._client.create_bucket(**arguments)
        except ClientError as error:
            # Several services start at once and race to create it; whoever won, it must be usable.
            if error_code(error) not in BUCKET_BEING_CREATED_CODES or not await self._bucket_exists():
                raise S3StorageError(self._bucket_problem(error)) from error

    async def _bucket_exists(self) -> bool:
        try:
            await self._client.head_bucket(Bucket=self.bucket)
        except ClientError as error:
            if error_code(error) in NOT_FOUND_CODES:
                return False
            raise S3StorageError(self._bucket_problem(error)) from error
        except BotoCoreError as error:  # unreachable endpoint, no credentials found …
            raise S3StorageError(self._bucket_problem(error)) from error
        return True

    def _bucket_problem(self, error: Exception) -> str:
        where = self.endpoint_url or f"AWS region {self.region}"
        return (
            f"cannot use S3 bucket {self.bucket!r} at {where}: {error}; check ENVSTORE_S3_BUCKET, "
            "ENVSTORE_S3_ENDPOINT_URL and the credentials (ENVSTORE_S3_ACCESS_KEY / ENVSTORE_S3_SECRET_KEY)"
        )

    # --- blobs ----------------------------------------------------------------------------------

    async def put_bytes(self, data: bytes) -> BlobRef:
        blob = await asyncio.to_thread(blob_ref_of_bytes, data)
        if not await self.touch_blob(blob.digest):
            await self._client.put_object(Bucket=self.bucket, Key=blob_key(blob.digest), Body=data)
        return blob

    async def put_file(self, path: Path) -> BlobRef:
        blob = await asyncio.to_thread(blob_ref_of_file, path)
        if not await self.touch_blob(blob.digest):
            # aioboto3 reads the file through aiofiles (a thread) and sends parts concurrently.
            await self._client.upload_file(
                str(path), self.bucket, blob_key(blob.digest), Config=upload_transfer_config(blob.size)
            )
        return blob

    async def adopt_file(self, path: Path, blob: BlobRef) -> BlobRef:
        """``put_file`` for a file whose writer already hashed it as ``blob``: no hashing pass."""
        if not await self.touch_blob(blob.digest):
            await self._client.upload_file(
                str(path), self.bucket, blob_key(blob.digest), Config=upload_transfer_config(blob.size)
            )
        return blob

    async def has_blob(self, digest: str) -> bool:
        try:
            await self._client.head_object(Bucket=self.bucket, Key=blob_key(digest))
        except ClientError as error:
            if error_code(error) in NOT_FOUND_CODES:
                return False
            raise
        return True

    async def get_bytes(self, blob: BlobRef | str) -> bytes:
        digest = digest_of(blob)
        response = await self._get_object(blob_key(digest), digest)
        body = response["Body"]
        async with body:  # releases the connection, even when reading fails
            return await body.read()

    async def read_range(self, blob: BlobRef | str, start: int, end: int) -> bytes:
        check_range(start, end)
        chunks = [chunk async for chunk in self.stream_blob(blob, start, end)]
        return b"".join(chunks)

    async def stream_blob(
        self, blob: BlobRef | str, start: int = 0, end: int | None = None, chunk_size: int = CHUNK
    ) -> AsyncIterator[bytes]:
        check_range(start, end)
        if end is not None and end == start:
            return
        digest = digest_of(blob)
        options = {}
        if start > 0 or end is not None:
            options["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            response = await self._get_object(blob_key(digest), digest, **options)
        except ClientError as error:
            if error_code(error) in RANGE_NOT_SATISFIABLE_CODES:
                return  # start at or past the end: empty, as slicing gives
            raise
        body = response["Body"]
        async with body:  # releases the connection, also when the reader stops early
            async for chunk in body.iter_chunks(chunk_size):
                yield chunk

    async def _get_object(self, key: str, digest: str, **options: Any) -> Any:
        try:
            return await self._client.get_object(Bucket=self.bucket, Key=key, **options)
        except ClientError as error:
            if error_code(error) in NOT_FOUND_CODES:
                raise BlobNotFoundError(f"no blob {digest} in s3://{self.bucket}") from None
            raise

    def local_path(self, blob: BlobRef | str) -> Path | None:
        return None

    # --- garbage collection ---------------------------------------------------------------------
    # S3 cannot change an object's time without copying it: a reuse writes a small marker
    # (touched/<hex>) instead, and a blob's time is the later of its own and its marker's.

    async def touch_blob(self, digest: str) -> bool:
        if not await self.has_blob(digest):
            return False
        await self._client.put_object(Bucket=self.bucket, Key=TOUCHED_PREFIX + digest_hex(digest), Body=b"")
        return True

    async def _listing(self, prefix: str) -> AsyncIterator[dict[str, Any]]:
        paginator = self._client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item

    async def blob_inventory(self) -> AsyncIterator[StoredBlob]:
        touched = {
            item["Key"].removeprefix(TOUCHED_PREFIX): item["LastModified"].timestamp()
            async for item in self._listing(TOUCHED_PREFIX)
        }
        async for item in self._listing(BLOB_PREFIX):
            hex_digest = item["Key"].removeprefix(BLOB_PREFIX)
            modified = max(item["LastModified"].timestamp(), touched.get(hex_digest, 0.0))
            yield StoredBlob("sha256:" + hex_digest, int(item["Size"]), modified)

    async def _last_use(self, key: str) -> float | None:
        try:
            response = await self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if error_code(error) in NOT_FOUND_CODES:
                return None
            raise
        return response["LastModified"].timestamp()

    async def delete_blobs_unless_touched(self, digests: list[str], touched_before: float) -> dict[str, int]:
        freed = await asyncio.gather(*(self._delete_unless_touched(digest, touched_before) for digest in digests))
        return {digest: size for digest, size in zip(digests, freed) if size is not None}

    async def _delete_unless_touched(self, digest: str, touched_before: float) -> int | None:
        key = blob_key(digest)
        try:
            head = await self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if error_code(error) in NOT_FOUND_CODES:
                return None
            raise
        marker = await self._last_use(TOUCHED_PREFIX + digest_hex(digest))
        if max(head["LastModified"].timestamp(), marker or 0.0) >= touched_before:
            return None
        # S3 (and SeaweedFS) offer no compare-and-delete: a reuse touching the blob in the moment
        # between this check and the delete is not seen (the local back end has no such window).
        await self._client.delete_object(Bucket=self.bucket, Key=key)
        await self._client.delete_object(Bucket=self.bucket, Key=TOUCHED_PREFIX + digest_hex(digest))
        return int(head["ContentLength"])

    # --- names ----------------------------------------------------------------------------------

    async def name(self, key: str, blob: BlobRef) -> None:
        await self._client.put_object(
            Bucket=self.bucket, Key=name_key(key), Body=name_pointer(blob), ContentType="text/plain"
        )

    async def resolve(self, key: str) -> BlobRef | None:
        try:
            response = await self._client.get_object(Bucket=self.bucket, Key=name_key(key))
        except ClientError as error:
            if error_code(error) in NOT_FOUND_CODES:
                return None
            raise
        body = response["Body"]
        async with body:
            return parse_name_pointer((await body.read()).decode())

    async def delete_name(self, key: str) -> None:
        await self._client.delete_object(Bucket=self.bucket, Key=name_key(key))

    async def download_url(
        self, key: str, blob: BlobRef, filename: str | None = None, content_type: str | None = None
    ) -> str | None:
        """A presigned GET of the blob named ``key``; presigning is local (no request to S3)."""
        checked_key(key)
        parameters = {"Bucket": self.bucket, "Key": blob_key(blob.digest)}
        if filename:
            parameters["ResponseContentDisposition"] = attachment_disposition(filename)
        if content_type:
            parameters["ResponseContentType"] = content_type
        return await self._client.generate_presigned_url(
            "get_object", Params=parameters, ExpiresIn=self.presign_seconds
        )
