"""Rebuilding a running stack's read model from its log, as an operator does, for tests that
check that the read model equals a fresh replay."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from envstore.common.bus_permissions import PROJECTION_REBUILD
from envstore.launcher.stack import EmbeddedStack


async def rebuild_read_model(stack: EmbeddedStack) -> None:
    environment = {
        **os.environ,
        **stack.nats_client_settings(PROJECTION_REBUILD),
        "ENVSTORE_DATABASE_URL": stack.postgres.dsn,
        # Large specifications live in storage: the rebuild reads them from there.
        "ENVSTORE_DATA_DIR": str(stack.data_directory),
    }
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "envstore.launcher.cli", "projection", "rebuild"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "read model rebuilt" in result.stdout
