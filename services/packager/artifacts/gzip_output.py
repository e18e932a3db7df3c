"""Gzip files written once, on every core, hashed while they are written.

Compression is ISA-L's (python-isal's threaded gzip writer, pigz's method: fixed blocks, each
deflated on its own with the 32 KiB before it as dictionary, so the blocks compress in parallel and
still form one deflate stream). ISA-L deflates at several hundred MB/s a core, where zlib's level 6
manages a few tens: the artifacts of a big environment were waiting on zlib.

The bytes depend only on the input, the level and the block size: the input reaches the compressor
in exact ``BLOCK_BYTES`` blocks whoever wrote it in what pieces, and one thread or many give the same
blocks. So a layer written twice from the same files is the same blob.

While writing, the compressed bytes are hashed (the blob's digest and size: nothing reads the file
again to store it) and, when asked, the uncompressed ones too (an image layer's ``diff_id``).
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from isal import igzip_threaded

from envstore.common.events import BlobRef

BLOCK_BYTES = 1024 * 1024
# ISA-L levels go from 0 to 3. Level 2 (python-isal's default) compresses about as well as zlib's
# level 1-4 at ~5x the speed; level 3 gains a few percent for half the speed.
COMPRESSION_LEVEL = 2


def compression_threads(expected_bytes: int | None = None) -> int:
    """All cores, or one when the input fits in a block or two (threads would only wait)."""
    cores = len(os.sched_getaffinity(0))
    if expected_bytes is not None and expected_bytes <= 2 * BLOCK_BYTES:
        return 1
    return max(cores, 1)


class _HashingFile(io.RawIOBase):
    """The compressed side: writes to the file and hashes (written from the compressor's thread)."""

    def __init__(self, target: BinaryIO) -> None:
        self.target = target
        self.hasher = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.hasher.update(data)
        self.target.write(data)
        length = len(data) if not isinstance(data, memoryview) else data.nbytes
        self.size += length
        return length


class GzipOutput(io.RawIOBase):
    """A gzip file at ``path``: write the uncompressed bytes, close, then read ``blob`` (and
    ``uncompressed_digest`` when ``hash_uncompressed``). A context manager; on an error the
    partial file is left for the caller's work directory to remove.

    The compressor's threads watch the thread that made the output: make it, write it and close
    it in one thread (one ``asyncio.to_thread`` call)."""

    def __init__(
        self,
        path: Path,
        *,
        threads: int | None = None,
        level: int = COMPRESSION_LEVEL,
        hash_uncompressed: bool = False,
    ) -> None:
        super().__init__()
        self.path = path
        self._file = open(path, "wb")
        self._compressed = _HashingFile(self._file)
        self._gzip = igzip_threaded.open(
            self._compressed,
            "wb",
            compresslevel=level,
            threads=threads or compression_threads(),
            block_size=BLOCK_BYTES,
        )
        # Blocks go straight to the compressor, past the buffered writer that ``open`` puts in front.
        self._compressor = self._gzip.raw
        self._uncompressed_hasher = hashlib.sha256() if hash_uncompressed else None
        self._block = bytearray(BLOCK_BYTES)
        self._filled = 0
        self._written = 0
        self.blob: BlobRef | None = None

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        """Uncompressed bytes written so far (tarfile asks)."""
        return self._written

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        length = view.nbytes
        if self._uncompressed_hasher is not None:
            self._uncompressed_hasher.update(view)
        self._written += length
        while view.nbytes:
            taken = min(view.nbytes, BLOCK_BYTES - self._filled)
            self._block[self._filled : self._filled + taken] = view[:taken]
            self._filled += taken
            view = view[taken:]
            if self._filled == BLOCK_BYTES:
                self._compressor.write(self._block)  # copied by the compressor: the block is reused
                self._filled = 0
        return length

    @property
    def uncompressed_digest(self) -> str:
        if self._uncompressed_hasher is None:
            raise ValueError("this output was not asked to hash its uncompressed bytes")
        return "sha256:" + self._uncompressed_hasher.hexdigest()

    @property
    def uncompressed_size(self) -> int:
        return self._written

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._filled:
                self._compressor.write(self._block[: self._filled])
                self._filled = 0
            self._gzip.close()
            self._file.flush()
            # The blob is announced as stored once this returns: it must be on disk.
            os.fsync(self._file.fileno())
            self.blob = BlobRef(digest="sha256:" + self._compressed.hasher.hexdigest(), size=self._compressed.size)
        finally:
            self._file.close()
            super().close()

    def abandon(self) -> None:
        """After an error: finishes the compressor's threads (their queues must drain, or closing
        would wait forever) without making a blob."""
        if self.closed:
            return
        try:
            self._gzip.close()
        except Exception:  # noqa: BLE001 - the error being handled is the one that matters
            pass
        finally:
            self._file.close()
            super().close()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abandon()
