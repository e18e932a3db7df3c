"""Image layers: deterministic tar+gzip blobs, each stored once per content.

A layer's bytes depend only on its entries: sorted by path, every parent directory present, owner
0:0 without names, modes normalized (0755 for directories and executables, 0644 for other files),
the mtime the caller gives (a package's files keep the mtime of its archive, generated files get
``FIXED_MTIME``), PAX format, gzip without a file name and with mtime 0 (``gzip_output``, on every
core). So one package gives the same uncompressed layer, the same ``diff_id``, in every image and
every rebuild.

A layer is written in one pass over its files: tar, hashed for its diff_id, gzipped, the gzip
hashed for its digest. The compressed digest also depends on the compressor that made it (its
version, its level). To keep a single digest per content whichever packager met it first, the first
blob of every diff_id is remembered under the storage name ``docker/layers/<diff_id hex>`` and
reused: a layer that already exists is written again to learn its diff_id (fast: the compressor
runs at hundreds of MB/s), then dropped instead of stored.

The blocking parts (file reads, hashing, compression) run in worker threads.
"""

from __future__ import annotations

import asyncio
import enum
import io
import os
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envstore.common.events import BlobRef
from envstore.common.storage import Storage
from envstore.packager.artifacts.gzip_output import GzipOutput, compression_threads
from envstore.packager.artifacts.oci_media_types import OCI_LAYER_GZIP

FIXED_MTIME = 0
LAYER_MEMO_PREFIX = "docker/layers/"
COPY_BUFFER = 1024 * 1024


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


def _write_tar(entries: Sequence[LayerEntry], sink: GzipOutput) -> None:
    # Written straight into the sink (not tarfile's stream mode, whose buffer copies every byte
    # again): the same bytes. The copy buffer changes how often the sink is called, not the bytes.
    with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as archive:  # type: ignore[call-overload]
        archive.copybufsize = COPY_BUFFER
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


def write_layer(entries: Sequence[LayerEntry], target: Path) -> StoredLayer:
    """The layer's tar, gzipped into ``target`` in one read of its files (blocking: run it in a
    thread), with its diff_id and its blob's digest."""
    size = sum(os.lstat(entry.source).st_size for entry in entries if entry.source is not None)
    with GzipOutput(target, threads=compression_threads(size), hash_uncompressed=True) as output:
        _write_tar(entries, output)
    assert output.blob is not None
    return StoredLayer(digest=output.blob.digest, size=output.blob.size, diff_id=output.uncompressed_digest)


def memo_key(diff_id: str) -> str:
    return LAYER_MEMO_PREFIX + diff_id.removeprefix("sha256:")


async def store_layer(entries: Sequence[LayerEntry], storage: Storage, scratch: Path) -> StoredLayer:
    """The layer of ``entries`` in storage: the blob first made for this content, or this one."""
    entries = complete(entries)
    scratch.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(prefix="layer-", suffix=".tar.gz", dir=scratch)
    os.close(descriptor)
    target = Path(name)
    try:
        written = await asyncio.to_thread(write_layer, entries, target)
        known = await storage.resolve(memo_key(written.diff_id))
        # Touched, not just looked up: garbage collection keeps a blob reused within its grace.
        if known is not None and await storage.touch_blob(known.digest):
            return StoredLayer(known.digest, known.size, written.diff_id)
        blob = await storage.adopt_file(target, BlobRef(digest=written.digest, size=written.size))
    finally:
        target.unlink(missing_ok=True)
    await storage.name(memo_key(written.diff_id), blob)
    return StoredLayer(blob.digest, blob.size, written.diff_id)
