"""Artifact storage: content-addressed blobs (``blobs/sha256/<hex>``) plus names that point at
them (``lockfile/<build key>.yml`` …), behind one interface with a local-directory back end.

Names are what the REST API serves; blobs are what is really stored, once per content.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Protocol

from envstore.common.events import BlobRef

CHUNK = 1024 * 1024


class Storage(Protocol):
    async def put_bytes(self, data: bytes) -> BlobRef: ...
    async def put_file(self, path: Path) -> BlobRef: ...
    async def get_bytes(self, blob: BlobRef | str) -> bytes: ...
    async def has_blob(self, digest: str) -> bool: ...
    async def name(self, key: str, blob: BlobRef) -> None: ...
    async def resolve(self, key: str) -> BlobRef | None: ...
    async def delete_name(self, key: str) -> None: ...
    def local_path(self, blob: BlobRef | str) -> Path | None: ...


def digest_of(blob: BlobRef | str) -> str:
    return blob.digest if isinstance(blob, BlobRef) else blob


def _hex(digest: str) -> str:
    algorithm, _, value = digest.partition(":")
    if algorithm != "sha256" or len(value) != 64 or not all(c in "0123456789abcdef" for c in value):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return value


def _safe_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"not a storage key: {key!r}")
    return key


class LocalStorage:
    """Storage in a directory: ``blobs/sha256/<hex>`` files and ``names/<key>`` pointer files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "names").mkdir(parents=True, exist_ok=True)
        (root / "tmp").mkdir(parents=True, exist_ok=True)

    def _blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / _hex(digest)

    def _name_path(self, key: str) -> Path:
        return self.root / "names" / _safe_key(key)

    def local_path(self, blob: BlobRef | str) -> Path | None:
        path = self._blob_path(digest_of(blob))
        return path if path.exists() else None

    async def put_bytes(self, data: bytes) -> BlobRef:
        return await asyncio.to_thread(self._put_bytes, data)

    def _put_bytes(self, data: bytes) -> BlobRef:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        target = self._blob_path(digest)
        if not target.exists():
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
        if not target.exists():
            with tempfile.NamedTemporaryFile(dir=self.root / "tmp", delete=False) as temporary:
                with open(path, "rb") as source:
                    while chunk := source.read(CHUNK):
                        temporary.write(chunk)
                temporary.flush()
                os.fsync(temporary.fileno())
            os.replace(temporary.name, target)
        return BlobRef(digest=digest, size=size)

    async def get_bytes(self, blob: BlobRef | str) -> bytes:
        path = self._blob_path(digest_of(blob))
        return await asyncio.to_thread(path.read_bytes)

    async def has_blob(self, digest: str) -> bool:
        return await asyncio.to_thread(self._blob_path(digest).exists)

    async def name(self, key: str, blob: BlobRef) -> None:
        pointer = f"{blob.digest} {blob.size}\n".encode()
        await asyncio.to_thread(self._write_atomically, self._name_path(key), pointer)

    async def resolve(self, key: str) -> BlobRef | None:
        return await asyncio.to_thread(self._resolve, key)

    def _resolve(self, key: str) -> BlobRef | None:
        try:
            digest, size = self._name_path(key).read_text().split()
        except FileNotFoundError:
            return None
        return BlobRef(digest=digest, size=int(size))

    async def delete_name(self, key: str) -> None:
        await asyncio.to_thread(self._name_path(key).unlink, True)

    def _write_atomically(self, target: Path, data: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.root / "tmp", delete=False) as temporary:
            temporary.write(data)
            temporary.flush()
            os.fsync(temporary.fileno())
        os.replace(temporary.name, target)


def open_storage(settings: "EnvstoreSettings") -> Storage:  # noqa: F821 - avoids an import cycle
    """The storage back end chosen by settings."""
    return LocalStorage(settings.storage_root)
