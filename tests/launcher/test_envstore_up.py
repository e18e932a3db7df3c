"""`envstore up` as a user runs it: one line saying ready with the API URL and where its generated
admin token and login password are, a working API, and on SIGTERM or SIGINT every child stopped
and exit status 0."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import nats
import nats.errors
import pytest

from envstore.common.bus_permissions import IDENTITIES
from envstore.launcher.child_process import child_pids, process_is_alive
from envstore.launcher.free_ports import pick_free_port


# The second run is served under a URL prefix: ready all the same, every URL under it.
@pytest.mark.parametrize(("stop_signal", "url_prefix"), [(signal.SIGTERM, ""), (signal.SIGINT, "/conda-store")])
async def test_envstore_up_says_ready_serves_and_stops_cleanly(
    tmp_path: Path, stop_signal: signal.Signals, url_prefix: str
) -> None:
    api_port, registry_port = pick_free_port("127.0.0.1"), pick_free_port("127.0.0.1")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "envstore.launcher.cli", "up",
        "--data-dir", str(tmp_path / "data"), "--port", str(api_port), "--registry-port", str(registry_port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "ENVSTORE_URL_PREFIX": url_prefix},
    )
    assert process.stdout is not None
    ready_line = b""
    try:
        async with asyncio.timeout(90):
            while b"ready" not in ready_line:
                ready_line = await process.stdout.readline()
                assert ready_line, "envstore up ended before saying it was ready"
        api_url = f"http://127.0.0.1:{api_port}{url_prefix}"
        assert f"API {api_url}/api/v1/  UI {api_url}/ui/".encode() in ready_line
        # Secrets are generated into the data directory and named, never printed.
        data = (tmp_path / "data").resolve()
        password_file, token_file = data / "auth-password", data / "admin-token"
        assert f"admin token in {token_file}".encode() in ready_line
        assert f"login password in {password_file}".encode() in ready_line
        nats_seeds = [data / "nats-credentials" / f"{identity}.nk" for identity in IDENTITIES]
        for secret_file in (password_file, token_file, *nats_seeds):
            assert secret_file.stat().st_mode & 0o777 == 0o600
            assert secret_file.read_text().encode() not in ready_line
        # The bus admits envstore's identities only.
        nats_port = re.search(r"Listening for client connections on 127\.0\.0\.1:(\d+)", (data / "nats" / "nats-server.log").read_text())[1]
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nats.connect(f"nats://127.0.0.1:{nats_port}", allow_reconnect=False)
        async with aiohttp.ClientSession() as http:
            for url in (f"{api_url}/api/v1/", f"{api_url}/readyz", f"http://127.0.0.1:{api_port}/readyz"):
                async with http.get(url) as response:
                    assert response.status == 200, url
            # The generated password is the one the API checks, and no default works.
            login = {"username": "first-user", "password": password_file.read_text()}
            async with http.post(f"{api_url}/login/", json=login) as response:
                assert response.status == 200
            async with http.post(f"{api_url}/login/", json={"username": "first-user", "password": "password"}) as response:
                assert response.status == 403
            async with http.get(f"{api_url}/api/v1/setting/", headers={"Authorization": f"Bearer {token_file.read_text()}"}) as response:
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


async def test_envstore_up_names_every_missing_program_and_how_to_get_it(tmp_path: Path) -> None:
    # A docker:// base image needs skopeo, which this PATH lacks (the wheels' programs are found
    # beside the interpreter, PostgreSQL's in /usr/lib/postgresql).
    completed = await asyncio.wait_for(
        asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "envstore.launcher.cli", "up", "--data-dir", str(tmp_path / "data")],
            capture_output=True, text=True, check=False,
            env={**os.environ, "PATH": str(tmp_path), "ENVSTORE_IMAGE_BASE": "docker://docker.io/library/busybox:1"},
        ),
        60,
    )

    assert completed.returncode == 1
    assert completed.stdout.startswith("envstore failed to start: missing programs:\n  - skopeo")
    assert "apt-get install postgresql skopeo" in completed.stdout
    # Nothing was started: no NATS or PostgreSQL data.
    assert not (tmp_path / "data" / "nats").exists() and not (tmp_path / "data" / "postgres").exists()
