"""``envstore export`` and ``envstore import``: a namespace (or the whole stack) with its whole
history, moved to another stack through one file (``export_format``).

Export reads the stream in order and keeps the namespace's events — its own, its environments',
its settings, and every event of its builds — and the blobs they reference. Import checks every
checksum first, stores the blobs, then republishes the events in their order into this stack's
log, with new sequences and ids allocated here (build and webhook ids from the bus's counter;
build keys, which contain the id, follow), each marked as imported (``IMPORTED_HEADER``): the read
model applies them like any event, while workers and webhooks leave them alone — their work (the
artifacts) came with the file. Once-only events are published into their empty slots, as at first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from envstore.common.build_keys import build_key_of_submission
from envstore.common.events import (
    ArtifactReady,
    BuildRehydrated,
    BuildSubmitted,
    Event,
    ProjectionEventSkipped,
    UndecodableEvent,
    WebhookEvent,
    WebhookRegistered,
    build_id_of,
    namespace_tree,
)
from envstore.common.bus_permissions import PROJECTION_REBUILD, SUPERUSER
from envstore.common.ids import IdAllocator
from envstore.common.oci_media_types import DOCKER_MANIFEST, OCI_IMAGE_INDEX, OCI_IMAGE_MANIFEST
from envstore.common.service_runtime import connect_bus
from envstore.common.settings import EnvstoreSettings
from envstore.common.storage import Storage, open_storage
from envstore.common.transport import IMPORTED_HEADER, EventBus, Expectation
from envstore.launcher.export_format import ExportFileError, ExportManifest, ExportReader, ExportWriter

log = logging.getLogger(__name__)
MANIFEST_TYPES = (OCI_IMAGE_MANIFEST, OCI_IMAGE_INDEX, DOCKER_MANIFEST)
READ_TIMEOUT_SECONDS = 30.0
# What follows the build key in artifact names (artifact_keys.py) and prefixes ("": none).
KEY_SUFFIXES = (".tar.gz", ".yml", ".log", ".sh", "")


# --- export --------------------------------------------------------------------------------------


def _blob_references(value: Any, found: dict[str, bool]) -> None:
    """Every BlobRef in an event (as builtins), and whether it is an image manifest."""
    if isinstance(value, dict):
        if isinstance(value.get("digest"), str) and isinstance(value.get("size"), int) and len(value) == 2:
            found.setdefault(value["digest"], False)
        for item in value.values():
            _blob_references(item, found)
        if value.get("content_type") in MANIFEST_TYPES and isinstance(value.get("blob"), dict):
            found[value["blob"]["digest"]] = True
    elif isinstance(value, list):
        for item in value:
            _blob_references(item, found)


class _Selection:
    """Which events belong to the export: a namespace's, or every one (operators' decisions about
    the source's read model excepted; they name source sequences)."""

    def __init__(self, namespace: str | None) -> None:
        self.namespace = namespace
        self.builds: set[int] = set()

    def wants(self, event: Event) -> bool:
        if isinstance(event, ProjectionEventSkipped):
            return False
        if self.namespace is None:
            return True
        if isinstance(event, BuildSubmitted) and event.namespace == self.namespace:
            self.builds.add(event.build_id)
            return True
        if isinstance(event, WebhookEvent):
            return False  # a webhook's target and secret belong to its deployment
        if getattr(event, "namespace", None) == self.namespace:
            return True
        return build_id_of(event) in self.builds


async def export_stack(settings: EnvstoreSettings, namespace: str | None, path: Path) -> ExportManifest:
    # Reading the log is the operator's read-only identity's work.
    bus = await connect_bus(settings, PROJECTION_REBUILD)
    try:
        async with open_storage(settings) as storage:
            return await _export(bus, storage, namespace, path)
    finally:
        await bus.close()


async def _export(bus: EventBus, storage: Storage, namespace: str | None, path: Path) -> ExportManifest:
    last = await bus.last_sequence()
    manifest = ExportManifest(namespace, bus.stream_name, last)
    writer = ExportWriter(path, manifest)
    selection = _Selection(namespace)
    blobs: dict[str, bool] = {}
    if last > 0:
        subscription = await bus.replay(1)
        try:
            sequence = 0
            while sequence < last:
                message = await subscription.next_msg(timeout=READ_TIMEOUT_SECONDS)
                sequence = message.metadata.sequence.stream
                try:
                    event = bus.codec.decode(message.subject, message.data, sequence)
                except UndecodableEvent as error:
                    log.warning("not exported: %s", error)
                    continue
                if not selection.wants(event):
                    continue
                payload = bus.codec.encode(event)
                writer.add_event(sequence, event.subject, payload)
                _blob_references(json.loads(payload), blobs)
        finally:
            await subscription.unsubscribe()
    if namespace is not None and not selection.builds and manifest.events_count == 0:
        raise ExportFileError(f"namespace {namespace!r} has no events in this stack: nothing to export")
    await _export_blobs(storage, writer, blobs)
    await asyncio.to_thread(writer.finish)
    return manifest


async def _export_blobs(storage: Storage, writer: ExportWriter, blobs: dict[str, bool]) -> None:
    pending = dict(blobs)
    done: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="envstore-export-") as scratch:
        while pending:
            digest, is_manifest = pending.popitem()
            if digest in done:
                continue
            done.add(digest)
            copy = Path(scratch) / "blob"
            try:
                with open(copy, "wb") as target:
                    async for chunk in storage.stream_blob(digest):
                        await asyncio.to_thread(target.write, chunk)
            except FileNotFoundError:
                writer.manifest.missing_blobs.append(digest)
                continue
            if is_manifest:
                document = json.loads(copy.read_bytes())
                for descriptor in [document.get("config", {}), *document.get("layers", [])]:
                    if "digest" in descriptor and descriptor["digest"] not in done:
                        pending.setdefault(descriptor["digest"], False)
                for child in document.get("manifests", []):  # an image index: its images
                    if "digest" in child and child["digest"] not in done:
                        pending[child["digest"]] = True
            size = copy.stat().st_size
            with open(copy, "rb") as source:
                await asyncio.to_thread(writer.add_blob, digest, source, size)


# --- import --------------------------------------------------------------------------------------


@dataclass
class ImportReport:
    events: int = 0
    blobs: int = 0
    builds: dict[int, int] = field(default_factory=dict)  # source build id → this stack's
    webhooks: dict[int, int] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)


class _IdMapping:
    """Source ids, sequences and build keys → this stack's, filled in as the events are republished."""

    def __init__(self, build_ids: IdAllocator, webhook_ids: IdAllocator, report: ImportReport) -> None:
        self.build_ids = build_ids
        self.webhook_ids = webhook_ids
        self.report = report
        self.sequences: dict[int, int] = {}
        self.build_keys: dict[str, str] = {}

    async def allocate_for(self, event: Event) -> None:
        if isinstance(event, BuildSubmitted) and event.build_id not in self.report.builds:
            self.report.builds[event.build_id] = await self.build_ids.next()
        if isinstance(event, WebhookRegistered) and event.webhook_id not in self.report.webhooks:
            self.report.webhooks[event.webhook_id] = await self.webhook_ids.next()

    def _value(self, key: str | None, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, str, dict, list)):
            return value
        if isinstance(value, int):
            if key in ("build_id", "rebuild_of"):
                return self.report.builds.get(value, value)
            if key == "webhook_id":
                return self.report.webhooks.get(value, value)
            if key in ("submission_sequence", "event_id"):
                return self.sequences.get(value, value)
            return value
        if isinstance(value, str):
            if key == "build_key":
                return self.build_keys.get(value, value)
            if key in ("key", "prefix"):
                # An artifact's name (lockfile/<build key>.yml …) or a prefix (…/<namespace>/<build key>).
                head, _, last = value.rpartition("/")
                for suffix in KEY_SUFFIXES:
                    if last.endswith(suffix) and last.removesuffix(suffix) in self.build_keys:
                        return f"{head}/{self.build_keys[last.removesuffix(suffix)]}{suffix}" if head else value
            return value
        if isinstance(value, dict):
            return {item: self._value(item, inner) for item, inner in value.items()}
        return [self._value(None, inner) for inner in value]

    def remapped(self, event: Event) -> Event:
        mapped = msgspec.convert(self._value(None, msgspec.to_builtins(event)), type(event))
        if isinstance(event, BuildSubmitted):
            assert isinstance(mapped, BuildSubmitted)
            self.build_keys[build_key_of_submission(event)] = build_key_of_submission(mapped)
            mapped = msgspec.convert(self._value(None, msgspec.to_builtins(event)), type(event))
        return mapped


async def import_export(settings: EnvstoreSettings, path: Path) -> ImportReport:
    reader = ExportReader(path)
    try:
        await asyncio.to_thread(reader.check)
        # Republishing every publisher's events (with their recorded principals) is maintenance of
        # the log: only the superuser's key may (ENVSTORE_NATS_CREDENTIALS_FILE).
        bus = await connect_bus(settings, SUPERUSER)
        try:
            await bus.wait_for_stream()
            async with open_storage(settings) as storage:
                return await _import(bus, storage, reader)
        finally:
            await bus.close()
    finally:
        reader.close()


async def _import(bus: EventBus, storage: Storage, reader: ExportReader) -> ImportReport:
    events = [
        (item, bus.codec.decode(item.subject, json.dumps(item.event).encode(), item.sequence)) for item in reader.events()
    ]
    report = ImportReport(namespaces=sorted({event.namespace for _, event in events if getattr(event, "namespace", None)}))
    for namespace in report.namespaces:
        if await bus.has_event_on(namespace_tree(namespace)):
            raise ExportFileError(
                f"namespace {namespace!r} already has a history in this stack; import into a stack without it "
                "(an import recreates a namespace, it does not merge into one)"
            )
    with tempfile.TemporaryDirectory(prefix="envstore-import-") as scratch:
        for blob in reader.manifest["blobs"]:
            copy = Path(scratch) / "blob"
            with reader.blob(blob["digest"]) as source, open(copy, "wb") as target:
                await asyncio.to_thread(shutil.copyfileobj, source, target)
            stored = await storage.put_file(copy)
            if stored.digest != blob["digest"]:
                raise ExportFileError(f"blob {blob['digest']} stored as {stored.digest}: the export is damaged")
            report.blobs += 1
    mapping = _IdMapping(
        IdAllocator(bus, "build", BuildSubmitted.legacy_subject()),
        IdAllocator(bus, "webhook", WebhookRegistered.legacy_subject()),
        report,
    )
    export_id = reader.manifest["events"]["sha256"][:16]
    for item, event in events:
        await mapping.allocate_for(event)
        imported = mapping.remapped(event)
        once = imported.once_filter()
        acknowledgement = await bus.publish(
            imported,
            f"import:{export_id}:{item.sequence}",
            expect=Expectation(once, 0) if once is not None else None,
            headers={IMPORTED_HEADER: str(item.sequence)},
            # Who caused it where it was recorded (the importer vouches for the file it checked).
            principal=imported.principal or None,
        )
        mapping.sequences[item.sequence] = acknowledgement.seq
        await _name_artifacts(storage, imported)
        report.events += 1
    return report


async def _name_artifacts(storage: Storage, event: Event) -> None:
    """The storage names the artifacts were served by (conda-store's keys)."""
    if isinstance(event, ArtifactReady):
        await storage.name(event.key, event.blob)
    elif isinstance(event, BuildRehydrated):
        for artifact in event.artifacts:
            await storage.name(artifact.key, artifact.blob)
