"""`envstore up` as a user runs it, in a subprocess, for tests that treat the launcher as a black box:
started with a data directory and flags, ready when it says so, asked with `envstore ps`, stopped
with SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from envstore.launcher.free_ports import pick_free_port

READY_SECONDS = 120
STOP_SECONDS = 90


class EnvstoreUp:
    def __init__(self, data_directory: Path, *flags: str, settings: dict[str, str] | None = None) -> None:
        self.data_directory = data_directory
        self.api_port = pick_free_port("127.0.0.1")
        self.registry_port = pick_free_port("127.0.0.1")
        self.flags = flags
        self.settings = settings or {}
        self.process: asyncio.subprocess.Process | None = None
        self.output = b""
        self.exit_status: int | None = None
        self._reading: asyncio.Task[None] | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def admin_token(self) -> str:
        return (self.data_directory / "admin-token").read_text()

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "envstore.launcher.cli", "up", "--data-dir", str(self.data_directory),
            "--port", str(self.api_port), "--registry-port", str(self.registry_port), *self.flags,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **self.settings},
        )
        assert self.process.stdout is not None
        async with asyncio.timeout(READY_SECONDS):
            while b"envstore ready" not in self.output:
                line = await self.process.stdout.readline()
                assert line, f"envstore up ended before saying it was ready:\n{self.output.decode(errors='replace')}"
                self.output += line
        # Keep reading: a launcher writing into a full pipe would stall.
        self._reading = asyncio.create_task(self._read_output())

    async def _read_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.output += line

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")

    async def stop(self, stop_signal: signal.Signals = signal.SIGTERM) -> int:
        assert self.process is not None and self.process.stdout is not None
        if self.process.returncode is None:
            self.process.send_signal(stop_signal)
        try:
            async with asyncio.timeout(STOP_SECONDS):
                if self._reading is not None:
                    await self._reading
                else:
                    self.output += await self.process.stdout.read()
                self.exit_status = await self.process.wait()
        finally:
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()
        return self.exit_status

    async def envstore(self, *arguments: str, timeout: float = 120) -> tuple[int, str, str]:
        """Another `envstore` command (``ps``, ``projection rebuild`` …) on this data directory."""
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "envstore.launcher.cli", *arguments, "--data-dir", str(self.data_directory),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(timeout):
            stdout, stderr = await process.communicate()
        assert process.returncode is not None
        return process.returncode, stdout.decode(), stderr.decode()

    async def ps(self) -> dict[str, Any]:
        status, stdout, stderr = await self.envstore("ps", "--json")
        assert status == 0, stderr
        return json.loads(stdout)

    async def __aenter__(self) -> EnvstoreUp:
        try:
            await self.start()
        except BaseException:
            if self.process is not None:
                await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
