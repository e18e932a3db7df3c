"""Gzip on every core, with the same bytes whatever the number of threads (pigz's method).

The input is cut into fixed 1 MiB chunks; each is deflated on its own, primed with the last 32 KiB
of the chunk before it (so matches across the cut are still found), and ends with a sync flush
(the last one with the final block), so the concatenation is one valid deflate stream. The output
depends only on the input, the chunk size and the level: deflating chunks in parallel, or one by
one without an executor, writes the same file.

One big package (hundreds of MB of libraries) is one layer, and plain ``zlib`` deflates it at
tens of MB/s on one core: this is where an image's time goes.
"""

from __future__ import annotations

import collections
import hashlib
import struct
import zlib
from concurrent.futures import Executor, Future
from typing import BinaryIO

CHUNK_BYTES = 1024 * 1024
DICTIONARY_BYTES = 32 * 1024
# Magic, deflate, no flags (no name), mtime 0, no extra flags, OS "Unix" (as zlib writes it).
HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"


def _deflate(chunk: bytes, dictionary: bytes, level: int, final: bool) -> bytes:
    if dictionary:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15, zlib.DEF_MEM_LEVEL, zlib.Z_DEFAULT_STRATEGY, dictionary)
    else:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    return compressor.compress(chunk) + compressor.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH)


class GzipWriter:
    """Writes gzip of what it is given into ``target``, hashing the compressed bytes."""

    def __init__(self, target: BinaryIO, level: int, executor: Executor | None = None, in_flight: int = 8) -> None:
        self.target = target
        self.level = level
        self.executor = executor
        self.in_flight = in_flight
        self.digest = hashlib.sha256()
        self.compressed_size = 0
        self._buffer = bytearray()
        self._dictionary = b""
        self._crc = 0
        self._size = 0
        self._pending: collections.deque[Future[bytes] | bytes] = collections.deque()
        self._emit(HEADER)

    def write(self, data: bytes) -> None:
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        self._buffer += data
        while len(self._buffer) >= CHUNK_BYTES:
            chunk = bytes(self._buffer[:CHUNK_BYTES])
            del self._buffer[:CHUNK_BYTES]
            self._deflate(chunk, final=False)

    def close(self) -> None:
        self._deflate(bytes(self._buffer), final=True)
        self._buffer.clear()
        while self._pending:
            self._emit_next()
        self._emit(struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF))

    def _deflate(self, chunk: bytes, final: bool) -> None:
        dictionary, self._dictionary = self._dictionary, chunk[-DICTIONARY_BYTES:]
        if self.executor is None:
            self._pending.append(_deflate(chunk, dictionary, self.level, final))
        else:
            self._pending.append(self.executor.submit(_deflate, chunk, dictionary, self.level, final))
        while len(self._pending) > self.in_flight:
            self._emit_next()

    def _emit_next(self) -> None:
        done = self._pending.popleft()
        self._emit(done if isinstance(done, bytes) else done.result())

    def _emit(self, compressed: bytes) -> None:
        if compressed:
            self.digest.update(compressed)
            self.compressed_size += len(compressed)
            self.target.write(compressed)
