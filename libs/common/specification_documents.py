"""Large specifications (a conda-lock lockfile of hundreds of packages) do not ride in events:
they go to storage, and ``build.submitted`` carries their digest. Readers get the full document
back with ``with_full_specification``."""

from __future__ import annotations

import json

import msgspec

from envstore.common.events import BuildSubmitted
from envstore.common.storage import Storage

# Events stay well under NATS's message size (DESIGN: payloads ≤ 256 KiB).
INLINE_SPECIFICATION_BYTES = 128 * 1024


async def offload_large_specification(event: BuildSubmitted, storage: Storage) -> BuildSubmitted:
    if event.specification_blob is not None:
        return event
    document = json.dumps(event.specification, sort_keys=True).encode()
    if len(document) <= INLINE_SPECIFICATION_BYTES:
        return event
    blob = await storage.put_bytes(document)
    summary = {key: event.specification[key] for key in ("name", "description") if key in event.specification}
    return msgspec.structs.replace(event, specification=summary, specification_blob=blob)


async def with_full_specification(event: BuildSubmitted, storage: Storage) -> BuildSubmitted:
    if event.specification_blob is None:
        return event
    document = json.loads(await storage.get_bytes(event.specification_blob))
    return msgspec.structs.replace(event, specification=document, specification_blob=None)
