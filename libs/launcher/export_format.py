"""The export file: a namespace's (or a whole stack's) events and the blobs they reference, in one
file that another stack imports. Format ``envstore-export``, version 1 — a tar archive of:

    events.jsonl            one event per line, in stream order:
                            {"sequence": <source stream sequence>, "subject": "...", "event": {...}}
                            (``event`` is the event's JSON as on the bus, ``type`` and ``version`` included)
    blobs/sha256/<hex>      every blob the events reference (an image manifest's configuration and
                            layers too), its name its sha256
    envstore-export.json    the manifest (last): {"format": "envstore-export", "version": 1,
                            "created_at", "namespace" (null: the whole stack), "source_stream",
                            "source_last_sequence", "events": {"path", "count", "sha256"},
                            "blobs": [{"digest", "size"}], "missing_blobs": [digests not stored
                            any more, e.g. collected phase logs]}

Checksums: the manifest names the events file's sha256, each blob is named by its own; an import
checks both before it changes anything, and refuses a file of another format or a newer version.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

FORMAT = "envstore-export"
VERSION = 1
MANIFEST = "envstore-export.json"
EVENTS = "events.jsonl"
BLOB_DIRECTORY = "blobs/sha256/"
CHUNK = 1024 * 1024


class ExportFileError(Exception):
    """The file is not an export this release can import; the message says why and what to do."""


@dataclass
class ExportedEvent:
    sequence: int
    subject: str
    event: dict[str, Any]


@dataclass
class ExportManifest:
    namespace: str | None
    source_stream: str
    source_last_sequence: int
    events_count: int = 0
    events_sha256: str = ""
    blobs: list[dict[str, Any]] = field(default_factory=list)
    missing_blobs: list[str] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)

    def document(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "created_at": self.created_at,
            "namespace": self.namespace,
            "source_stream": self.source_stream,
            "source_last_sequence": self.source_last_sequence,
            "events": {"path": EVENTS, "count": self.events_count, "sha256": self.events_sha256},
            "blobs": self.blobs,
            "missing_blobs": self.missing_blobs,
        }


class ExportWriter:
    """Writes an export file: events first (spooled to disk), then blobs, then the manifest."""

    def __init__(self, path: Path, manifest: ExportManifest) -> None:
        self.path = path
        self.manifest = manifest
        self._events = tempfile.TemporaryFile()
        self._events_hash = hashlib.sha256()
        self._archive = tarfile.open(path, "w")

    def add_event(self, sequence: int, subject: str, payload: bytes) -> None:
        line = json.dumps({"sequence": sequence, "subject": subject, "event": json.loads(payload)}, sort_keys=True).encode() + b"\n"
        self._events.write(line)
        self._events_hash.update(line)
        self.manifest.events_count += 1

    def add_blob(self, digest: str, source: BinaryIO, size: int) -> None:
        info = tarfile.TarInfo(BLOB_DIRECTORY + digest.removeprefix("sha256:"))
        info.size = size
        self._archive.addfile(info, source)
        self.manifest.blobs.append({"digest": digest, "size": size})

    def finish(self) -> None:
        self.manifest.events_sha256 = self._events_hash.hexdigest()
        size = self._events.tell()
        self._events.seek(0)
        info = tarfile.TarInfo(EVENTS)
        info.size = size
        self._archive.addfile(info, self._events)
        document = json.dumps(self.manifest.document(), indent=2, sort_keys=True).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(document)
        self._archive.addfile(info, io.BytesIO(document))
        self._archive.close()
        self._events.close()


class ExportReader:
    """Reads and checks an export file."""

    def __init__(self, path: Path) -> None:
        try:
            self._archive = tarfile.open(path, "r")
        except (OSError, tarfile.TarError) as error:
            raise ExportFileError(f"{path} is not an envstore export file (a tar archive): {error}") from None
        self.manifest = self._read_manifest(path)

    def _read_manifest(self, path: Path) -> dict[str, Any]:
        try:
            document = json.load(self._member(MANIFEST))
        except (KeyError, ValueError) as error:
            raise ExportFileError(f"{path} has no readable {MANIFEST}: {error}; was it made by `envstore export`?") from None
        if document.get("format") != FORMAT:
            raise ExportFileError(f"{path} is not an envstore export (format {document.get('format')!r})")
        if not isinstance(document.get("version"), int) or document["version"] > VERSION:
            raise ExportFileError(
                f"{path} is format version {document.get('version')}; this release imports version {VERSION} "
                "and older: import it with a newer envstore"
            )
        return document

    def _member(self, name: str) -> BinaryIO:
        extracted = self._archive.extractfile(name)
        if extracted is None:
            raise KeyError(name)
        return extracted  # type: ignore[return-value]

    def check(self) -> None:
        """Every checksum: the events file's, and each blob's against its name."""
        hasher = hashlib.sha256()
        events = self._member(EVENTS)
        while chunk := events.read(CHUNK):
            hasher.update(chunk)
        if hasher.hexdigest() != self.manifest["events"]["sha256"]:
            raise ExportFileError("the events file does not match the manifest's sha256: the export is damaged")
        for blob in self.manifest["blobs"]:
            with self.blob(blob["digest"]) as source:
                hasher = hashlib.sha256()
                while chunk := source.read(CHUNK):
                    hasher.update(chunk)
            if "sha256:" + hasher.hexdigest() != blob["digest"]:
                raise ExportFileError(f"blob {blob['digest']} does not match its digest: the export is damaged")

    def events(self) -> Iterator[ExportedEvent]:
        for line in self._member(EVENTS):
            item = json.loads(line)
            yield ExportedEvent(item["sequence"], item["subject"], item["event"])

    def blob(self, digest: str) -> BinaryIO:
        return self._member(BLOB_DIRECTORY + digest.removeprefix("sha256:"))

    def close(self) -> None:
        self._archive.close()
