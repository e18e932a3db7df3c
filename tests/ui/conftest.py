"""Fixtures for the web UI tests: conda-store-ui's files, one headless Chromium for the session,
an admin client for seeding, and a second API replica serving the UI in token mode."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, async_playwright

from envstore.api.ui_shell import missing_ui_files, ui_directory
from envstore.common.settings import EnvstoreSettings
from envstore.launcher.child_process import LoggedChildProcess, describe_failure
from envstore.launcher.free_ports import pick_free_port
from envstore.launcher.stack import EmbeddedStack
from tests.api_client import LOGIN_PASSWORD, ApiClient
from tests.ui.watched_browser import CHROMIUM, CHROMIUM_FLAGS

REPOSITORY = Path(__file__).resolve().parents[2]
PASSWORD = LOGIN_PASSWORD  # set by the session stack (ENVSTORE_AUTH_PASSWORD)


@pytest.fixture(scope="session")
def ui_files() -> Path:
    """The pinned conda-store-ui release, fetched by scripts/fetch-ui.sh (setup runs it too)."""
    settings = EnvstoreSettings()
    if missing_ui_files(settings):
        subprocess.run(["bash", str(REPOSITORY / "scripts" / "fetch-ui.sh")], check=True)
    assert not missing_ui_files(settings), f"conda-store-ui files missing in {ui_directory(settings)}"
    return ui_directory(settings)


@pytest.fixture(scope="session")
async def browser(ui_files: Path) -> AsyncIterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: apt-get install chromium"
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS))
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def admin(stack: EmbeddedStack) -> AsyncIterator[ApiClient]:
    async with ApiClient(stack.api_url, token=stack.admin_token) as client:
        yield client


async def mint_token(admin: ApiClient, primary_namespace: str, role_bindings: dict[str, list[str]]) -> str:
    status, body = await admin.request(
        "POST", "/api/v1/token/", json={"primary_namespace": primary_namespace, "role_bindings": role_bindings}
    )
    assert status == 200, body
    return body["data"]["token"]


@dataclass
class ApiReplica:
    url: str
    process: LoggedChildProcess


async def start_api_replica(stack: EmbeddedStack, name: str, settings: dict[str, str]) -> ApiReplica:
    """Another API process on the same NATS stream and PostgreSQL (replicas share the read
    model), with its own settings: how a deployment serves a differently configured UI."""
    port = pick_free_port(stack.host)
    environment = {**stack.service_environment("api"), "ENVSTORE_API_PORT": str(port), **settings}
    process = LoggedChildProcess.spawn(
        [sys.executable, "-m", "envstore.api"], stack.data_directory / "logs" / f"{name}.log", env=environment
    )
    replica = ApiReplica(f"http://{stack.host}:{port}", process)
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            if process.has_exited():
                raise AssertionError(describe_failure(name, process))
            try:
                async with http.get(f"{replica.url}/api/v1/") as response:
                    if response.status == 200:
                        return replica
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    await process.stop(signal.SIGTERM)
    raise AssertionError(describe_failure(f"{name} did not answer", process))
