"""Image layers: deterministic tar+gzip blobs, each stored once per content.

A layer's bytes depend only on its entries: sorted by path, every parent directory present, owner
0:0 without names, modes normalized (0755 for directories and executables, 0644 for other files),
the mtime the caller gives (a package's files keep the mtime of its archive, generated files get
``FIXED_MTIME``), PAX format, gzip without a file name and with mtime 0 (``oci_gzip``, on every
core). So one package gives the same uncompressed layer, the same ``diff_id``, in every image and
every rebuild.

The compressed digest also depends on the zlib that compressed it. To keep a single digest per
content whichever packager (and zlib build) met it first, the first compressed blob of every
diff_id is remembered under the storage name ``docker/layers/<diff_id hex>`` and reused: a layer
that already exists is tarred once more to compute its diff_id (cheap: hashing, no compression),
then neither compressed nor written again.

The blocking parts (file reads, hashing, compression) run in worker threads.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import io
import os
import tarfile
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envstore.common.storage import Storage
from envstore.packager.artifacts.oci_gzip import GzipWriter
from envstore.packager.artifacts.oci_media_types import OCI_LAYER_GZIP

FIXED_MTIME = 0
COMPRESSION_LEVEL = 6
LAYER_MEMO_PREFIX = "docker/layers/"
WRITE_BUFFER = 1024 * 1024


class EntryKind(enum.Enum):
    DIRECTORY = "directory"
    FILE = "file"
    SYMLINK = "symlink"


@dataclass(frozen=True)
class LayerEntry:
    """One path of a layer, relative to the image root (``opt/conda/bin/hello``)."""

    path: str
    kind: EntryKind
    mtime: int = FIXED_MTIME
    executable: bool = False
    source: Path | None = None  # a file's content, read from disk …
    content: bytes | None = None  # … or given in memory
    link_target: str = ""

    @property
    def mode(self) -> int:
        if self.kind is EntryKind.SYMLINK:
            return 0o777
        return 0o755 if self.kind is EntryKind.DIRECTORY or self.executable else 0o644


@dataclass(frozen=True)
class StoredLayer:
    """A layer blob in storage: its digest and size (compressed) and its diff_id (uncompressed)."""

    digest: str
    size: int
    diff_id: str
    media_type: str = OCI_LAYER_GZIP

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def entry_from_disk(path_in_image: str, source: Path, mtime: int | None = None) -> LayerEntry:
    """A file, symlink or directory of a staged tree as a layer entry (mtime: the file's own)."""
    status = source.lstat()
    own_mtime = max(int(status.st_mtime), 0) if mtime is None else mtime
    if source.is_symlink():
        return LayerEntry(path_in_image, EntryKind.SYMLINK, own_mtime, link_target=os.readlink(source))
    if source.is_dir():
        return LayerEntry(path_in_image, EntryKind.DIRECTORY, FIXED_MTIME)
    return LayerEntry(path_in_image, EntryKind.FILE, own_mtime, executable=bool(status.st_mode & 0o111), source=source)


def complete(entries: Iterable[LayerEntry]) -> list[LayerEntry]:
    """The entries plus every missing parent directory, sorted by path (parents first)."""
    by_path = {entry.path: entry for entry in entries}
    for path in list(by_path):
        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            by_path.setdefault(parent, LayerEntry(parent, EntryKind.DIRECTORY))
    return [by_path[path] for path in sorted(by_path, key=lambda path: path.split("/"))]


class _LayerSink(io.RawIOBase):
    """Where tarfile writes: hashes the tar (diff_id) and, given a gzip writer, compresses it."""

    def __init__(self, gzip: GzipWriter | None = None) -> None:
        self.tar_hash = hashlib.sha256()
        self.gzip = gzip

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        data = bytes(data)
        self.tar_hash.update(data)
        if self.gzip is not None:
            self.gzip.write(data)
        return len(data)

    def finish(self) -> None:
        if self.gzip is not None:
            self.gzip.close()


def _tar_info(entry: LayerEntry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path)
    info.mode = entry.mode
    info.mtime = entry.mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if entry.kind is EntryKind.DIRECTORY:
        info.type = tarfile.DIRTYPE
    elif entry.kind is EntryKind.SYMLINK:
        info.type = tarfile.SYMTYPE
        info.linkname = entry.link_target
    else:
        info.type = tarfile.REGTYPE
    return info


def _write_tar(entries: Sequence[LayerEntry], sink: _LayerSink) -> None:
    # The buffer size changes how often the sink is called, not the bytes (padding is per record).
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT, bufsize=WRITE_BUFFER) as archive:  # type: ignore[call-overload]
        archive.copybufsize = WRITE_BUFFER
        for entry in entries:
            info = _tar_info(entry)
            if entry.kind is not EntryKind.FILE:
                archive.addfile(info)
            elif entry.content is not None:
                info.size = len(entry.content)
                archive.addfile(info, io.BytesIO(entry.content))
            else:
                assert entry.source is not None
                with open(entry.source, "rb") as content:
                    info.size = os.fstat(content.fileno()).st_size
                    archive.addfile(info, content)
    sink.finish()


def diff_id_of(entries: Sequence[LayerEntry]) -> str:
    """sha256 of the layer's uncompressed tar, without writing it anywhere."""
    sink = _LayerSink()
    _write_tar(entries, sink)
    return "sha256:" + sink.tar_hash.hexdigest()


def write_compressed(entries: Sequence[LayerEntry], target: Path, executor: Executor | None = None) -> StoredLayer:
    with open(target, "wb") as output:
        gzip = GzipWriter(output, COMPRESSION_LEVEL, executor)
        sink = _LayerSink(gzip)
        _write_tar(entries, sink)
    return StoredLayer(
        digest="sha256:" + gzip.digest.hexdigest(),
        size=gzip.compressed_size,
        diff_id="sha256:" + sink.tar_hash.hexdigest(),
    )


def memo_key(diff_id: str) -> str:
    return LAYER_MEMO_PREFIX + diff_id.removeprefix("sha256:")


async def store_layer(
    entries: Sequence[LayerEntry], storage: Storage, scratch: Path, executor: Executor | None = None
) -> StoredLayer:
    """The layer of ``entries`` in storage: the blob already made for this content, or a new one
    (compressed in ``executor``'s threads when given)."""
    entries = complete(entries)
    diff_id = await asyncio.to_thread(diff_id_of, entries)
    known = await storage.resolve(memo_key(diff_id))
    if known is not None and await storage.has_blob(known.digest):
        return StoredLayer(known.digest, known.size, diff_id)
    scratch.mkdir(parents=True, exist_ok=True)
    target = scratch / f"layer-{diff_id.removeprefix('sha256:')}.tar.gz"
    try:
        written = await asyncio.to_thread(write_compressed, entries, target, executor)
        if written.diff_id != diff_id:
            raise RuntimeError(
                f"a layer's files changed while it was written ({diff_id} then {written.diff_id}); "
                "is something else writing into the packager's staging directory?"
            )
        blob = await storage.put_file(target)
    finally:
        target.unlink(missing_ok=True)
    await storage.name(memo_key(diff_id), blob)
    return StoredLayer(blob.digest, blob.size, diff_id)
