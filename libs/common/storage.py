"""Artifact storage: content-addressed blobs (``blobs/sha256/<hex>``) plus names that point at
them (``lockfile/<build key>.yml`` …), behind one interface with two back ends: a local directory
(here) and S3 (``s3_storage``). ``open_storage`` picks one by settings and owns its lifetime.

Names are what the REST API serves; blobs are what is really stored, once per content.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Protocol

from envstore.common.events import BlobRef

if TYPE_CHECKING:
    from envstore.common.settings import EnvstoreSettings

CHUNK = 1024 * 1024


class BlobNotFoundError(FileNotFoundError):
    """No blob with this digest is stored."""


@dataclass(frozen=True)
class StoredBlob:
    """A blob as garbage collection sees it: when it was last written (or reused: ``touch_blob``)."""

    digest: str
    size: int
    modified_at: float  # seconds since the epoch


class Storage(Protocol):
    async def put_bytes(self, data: bytes) -> BlobRef: ...
    async def put_file(self, path: Path) -> BlobRef: ...
    async def adopt_file(self, path: Path, blob: BlobRef) -> BlobRef: ...
    async def get_bytes(self, blob: BlobRef | str) -> bytes: ...
    async def has_blob(self, digest: str) -> bool: ...
    async def name(self, key: str, blob: BlobRef) -> None: ...
    async def resolve(self, key: str) -> BlobRef | None: ...
    async def delete_name(self, key: str) -> None: ...

    # Garbage collection: a blob written or reused within its grace period is never collected,
    # so whoever reuses a stored blob without writing it (a layer made before) touches it first.
    async def touch_blob(self, digest: str) -> bool:
        """Mark the blob as used now; False if it is not stored (write it then)."""
        ...

    def blob_inventory(self) -> AsyncIterator[StoredBlob]:
        """Every stored blob, with its size and when it was last written or touched."""
        ...

    async def delete_blobs_unless_touched(self, digests: list[str], touched_before: float) -> dict[str, int]:
        """Delete each blob that was last written or touched before ``touched_before``; the bytes
        freed by digest (a blob gone already, or touched since, is not in it)."""
        ...

    def local_path(self, blob: BlobRef | str) -> Path | None:
        """The blob as a file on this machine; None when the back end keeps it elsewhere (S3)."""
        ...

    async def download_url(
        self, key: str, blob: BlobRef, filename: str | None = None, content_type: str | None = None
    ) -> str | None:
        """A URL a client can GET the blob named ``key`` from without envstore in between
        (presigned, for S3), or None: the API then streams it itself (local directory)."""
        ...

    async def read_range(self, blob: BlobRef | str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the blob (``end`` exclusive, clamped to the size, as slicing)."""
        ...

    def stream_blob(
        self, blob: BlobRef | str, start: int = 0, end: int | None = None, chunk_size: int = CHUNK
    ) -> AsyncIterator[bytes]:
        """The blob's bytes ``[start, end)`` in chunks, without holding it in memory."""
        ...


def digest_of(blob: BlobRef | str) -> str:
    return blob.digest if isinstance(blob, BlobRef) else blob


def digest_hex(digest: str) -> str:
    """The hex part of ``sha256:<hex>``, after checking that it is one (it becomes a path)."""
    algorithm, _, value = digest.partition(":")
    if algorithm != "sha256" or len(value) != 64 or not all(c in "0123456789abcdef" for c in value):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return value


def checked_key(key: str) -> str:
    """``key`` if it is a relative path with no empty, ``.`` or ``..`` part (it becomes a path)."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"not a storage key: {key!r}")
    return key


def check_range(start: int, end: int | None) -> None:
    if start < 0 or (end is not None and end < start):
        raise ValueError(f"not a byte range: [{start}, {end})")


def name_pointer(blob: BlobRef) -> bytes:
    """What a name holds: the digest and size of its blob (both back ends write the same)."""
    return f"{blob.digest} {blob.size}\n".encode()


def parse_name_pointer(text: str) -> BlobRef:
    digest, size = text.split()
    return BlobRef(digest=digest, size=int(size))


class LocalStorage:
    """Storage in a directory: ``blobs/sha256/<hex>`` files and ``names/<key>`` pointer files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "names").mkdir(parents=True, exist_ok=True)
        (root / "tmp").mkdir(parents=True, exist_ok=True)

    def _blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / digest_hex(digest)

    def _name_path(self, key: str) -> Path:
        return self.root / "names" / checked_key(key)

    def local_path(self, blob: BlobRef | str) -> Path | None:
        path = self._blob_path(digest_of(blob))
        return path if path.exists() else None

    async def put_bytes(self, data: bytes) -> BlobRef:
        return await asyncio.to_thread(self._put_bytes, data)

    def _put_bytes(self, data: bytes) -> BlobRef:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        target = self._blob_path(digest)
        if not self._touch(target):
            self._write_atomically(target, data)
        return BlobRef(digest=digest, size=len(data))

    async def put_file(self, path: Path) -> BlobRef:
        return await asyncio.to_thread(self._put_file, path)

    def _put_file(self, path: Path) -> BlobRef:
        hasher = hashlib.sha256()
        size = 0
        with open(path, "rb") as source:
            while chunk := source.read(CHUNK):
                hasher.update(chunk)
                size += len(chunk)
        digest = "sha256:" + hasher.hexdigest()
        target = self._blob_path(digest)
        if not self._touch(target):
            with tempfile.NamedTemporaryFile(dir=self.root / "tmp", delete=False) as temporary:
                with open(path, "rb") as source:
                    while chunk := source.read(CHUNK):
                        temporary.write(chunk)
                temporary.flush()
                os.fsync(temporary.fileno())
            os.replace(temporary.name, target)
        return BlobRef(digest=digest, size=size)

    async def adopt_file(self, path: Path, blob: BlobRef) -> BlobRef:
        """Stores ``path``, a file whose writer hashed it as ``blob`` (and fsynced it) and that nobody
        changes any more: it is hard-linked into the store, not read or copied again (copied only
        when the store is on another file system)."""
        return await asyncio.to_thread(self._adopt_file, path, blob)

    def _adopt_file(self, path: Path, blob: BlobRef) -> BlobRef:
        target = self._blob_path(blob.digest)
        if self._touch(target):
            return blob
        try:
            os.link(path, target)
        except FileExistsError:
            pass  # another writer stored the same content meanwhile
        except OSError:  # another file system (EXDEV), or links refused
            stored = self._put_file(path)
            if stored != blob:
                raise ValueError(f"{path} holds {stored.digest} ({stored.size} bytes), not the announced {blob.digest}")
        return blob

    async def get_bytes(self, blob: BlobRef | str) -> bytes:
        digest = digest_of(blob)
        try:
            return await asyncio.to_thread(self._blob_path(digest).read_bytes)
        except FileNotFoundError:
            raise BlobNotFoundError(f"no blob {digest} in {self.root}") from None

    async def read_range(self, blob: BlobRef | str, start: int, end: int) -> bytes:
        check_range(start, end)
        return await asyncio.to_thread(self._read_range, digest_of(blob), start, end)

    def _read_range(self, digest: str, start: int, end: int) -> bytes:
        with self._open_blob(digest) as source:
            source.seek(start)
            return source.read(end - start)

    async def stream_blob(
        self, blob: BlobRef | str, start: int = 0, end: int | None = None, chunk_size: int = CHUNK
    ) -> AsyncIterator[bytes]:
        check_range(start, end)
        source = await asyncio.to_thread(self._open_blob, digest_of(blob))
        try:
            await asyncio.to_thread(source.seek, start)
            remaining = None if end is None else end - start
            while remaining is None or remaining > 0:
                wanted = chunk_size if remaining is None else min(chunk_size, remaining)
                chunk = await asyncio.to_thread(source.read, wanted)
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            await asyncio.to_thread(source.close)

    def _open_blob(self, digest: str) -> BinaryIO:
        try:
            return open(self._blob_path(digest), "rb")
        except FileNotFoundError:
            raise BlobNotFoundError(f"no blob {digest} in {self.root}") from None

    async def download_url(
        self, key: str, blob: BlobRef, filename: str | None = None, content_type: str | None = None
    ) -> str | None:
        return None  # the API streams local blobs itself

    async def has_blob(self, digest: str) -> bool:
        return await asyncio.to_thread(self._blob_path(digest).exists)

    @staticmethod
    def _touch(target: Path) -> bool:
        try:
            os.utime(target)
        except FileNotFoundError:
            return False
        return True

    async def touch_blob(self, digest: str) -> bool:
        return await asyncio.to_thread(self._touch, self._blob_path(digest))

    async def blob_inventory(self) -> AsyncIterator[StoredBlob]:
        for entry in await asyncio.to_thread(self._scan_blobs):
            yield entry

    def _scan_blobs(self) -> list[StoredBlob]:
        found = []
        with os.scandir(self.root / "blobs" / "sha256") as entries:
            for entry in entries:
                try:
                    status = entry.stat()
                except FileNotFoundError:
                    continue
                found.append(StoredBlob("sha256:" + entry.name, status.st_size, status.st_mtime))
        return found

    async def delete_blobs_unless_touched(self, digests: list[str], touched_before: float) -> dict[str, int]:
        def delete_all() -> dict[str, int]:
            freed = {digest: self._delete_unless_touched(digest, touched_before) for digest in digests}
            return {digest: size for digest, size in freed.items() if size is not None}

        return await asyncio.to_thread(delete_all)

    def _delete_unless_touched(self, digest: str, touched_before: float) -> int | None:
        # Moved aside first: a writer that finds it gone writes it again (same bytes), one that
        # touched it first made it young, and then it is moved back.
        target = self._blob_path(digest)
        aside = self.root / "tmp" / f"collecting-{digest_hex(digest)}"
        try:
            os.rename(target, aside)
        except FileNotFoundError:
            return None
        status = aside.stat()
        if status.st_mtime >= touched_before:
            try:
                os.link(aside, target)
            except FileExistsError:
                pass  # written again meanwhile
            aside.unlink()
            return None
        aside.unlink()
        return status.st_size

    async def name(self, key: str, blob: BlobRef) -> None:
        await asyncio.to_thread(self._write_atomically, self._name_path(key), name_pointer(blob))

    async def resolve(self, key: str) -> BlobRef | None:
        return await asyncio.to_thread(self._resolve, key)

    def _resolve(self, key: str) -> BlobRef | None:
        try:
            return parse_name_pointer(self._name_path(key).read_text())
        except FileNotFoundError:
            return None

    async def delete_name(self, key: str) -> None:
        await asyncio.to_thread(self._name_path(key).unlink, True)

    def _write_atomically(self, target: Path, data: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.root / "tmp", delete=False) as temporary:
            temporary.write(data)
            temporary.flush()
            os.fsync(temporary.fileno())
        os.replace(temporary.name, target)


@contextlib.asynccontextmanager
async def open_storage(settings: EnvstoreSettings) -> AsyncIterator[Storage]:
    """The storage back end chosen by ``settings.storage_backend``, open for the ``async with``
    block (an S3 client holds a connection pool; it is closed when the block ends)."""
    if settings.storage_backend == "s3":
        # Imported here: s3_storage builds on this module, and local deployments need no boto.
        from envstore.common.s3_storage import S3Storage

        async with S3Storage.from_settings(settings) as storage:
            yield storage
    else:
        yield LocalStorage(settings.storage_root)
