"""`envstore up` as a user runs it: one line saying ready with the API URL, a working API, and on
SIGTERM or SIGINT every child stopped and exit status 0."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from envstore.launcher.child_process import child_pids, pick_free_port, process_is_alive


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
async def test_envstore_up_says_ready_serves_and_stops_cleanly(tmp_path: Path, stop_signal: signal.Signals) -> None:
    api_port, registry_port = pick_free_port("127.0.0.1"), pick_free_port("127.0.0.1")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "envstore.launcher.cli", "up",
        "--data-dir", str(tmp_path / "data"), "--port", str(api_port), "--registry-port", str(registry_port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    ready_line = b""
    try:
        async with asyncio.timeout(90):
            while b"ready" not in ready_line:
                ready_line = await process.stdout.readline()
                assert ready_line, "envstore up ended before saying it was ready"
        assert f"http://127.0.0.1:{api_port}/api/v1/".encode() in ready_line
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{api_port}/api/v1/") as response:
                assert response.status == 200
        children = set(child_pids(process.pid))
        assert children, "the launcher should have started NATS, PostgreSQL and the services"
        process.send_signal(stop_signal)
        async with asyncio.timeout(60):
            output = await process.stdout.read()
            status = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert status == 0, output.decode(errors="replace")[-2000:]
    assert b"envstore stopped" in output
    assert not [pid for pid in children if process_is_alive(pid)]
