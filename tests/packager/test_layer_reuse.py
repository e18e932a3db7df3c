"""A layer made before is reused, not stored again — and touched, so that garbage collection, which
collects only blobs neither written nor reused within its grace period, keeps it for the image
being made (its manifest lands in the read model only when the image is done)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from envstore.common.storage import LocalStorage
from envstore.packager.artifacts.oci_layers import EntryKind, LayerEntry, store_layer


async def test_a_reused_layer_is_touched(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "storage")
    entries = [LayerEntry("opt/conda/share/greeting.txt", EntryKind.FILE, content=b"hello\n")]
    first = await store_layer(entries, storage, tmp_path / "scratch")
    stored = storage.local_path(first.digest)
    assert stored is not None
    a_day_ago = time.time() - 86400
    os.utime(stored, (a_day_ago, a_day_ago))

    again = await store_layer(entries, storage, tmp_path / "scratch")
    assert (again.digest, again.diff_id) == (first.digest, first.diff_id)
    assert stored.stat().st_mtime > time.time() - 60, "the reused layer's time is now"
