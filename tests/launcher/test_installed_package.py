"""The product is the package: a wheel built from this checkout, installed into a fresh virtual
environment outside it, runs ``envstore up`` with nothing from the checkout (conda-store's UI comes
from the wheel), here under ``/conda-store`` behind nginx terminating TLS, and headless Chromium
shows the environment list.

The wheel is built and installed with uv (its cache makes the install take seconds; pip resolves
the hundred dependencies of a fresh environment in minutes), the same wheel pip installs.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from envstore.launcher.child_process import LoggedChildProcess, describe_failure
from envstore.launcher.free_ports import pick_free_port
from tests.api_client import ApiClient, environment_yaml
from tests.reverse_proxy import PROXY_HOST, NginxProxy
from tests.ui.watched_browser import CHROMIUM, CHROMIUM_FLAGS, WatchedPage

REPOSITORY = Path(__file__).resolve().parents[2]
URL_PREFIX = "/conda-store"
ADMIN_TOKEN = "installed-package-admin-token"
READY_SECONDS = 120
ENVIRONMENT = "from-the-wheel"


def run(command: list[str | Path], **options) -> str:  # type: ignore[no-untyped-def]
    completed = subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=600, **options)
    assert completed.returncode == 0, f"{command} exited {completed.returncode}:\n{completed.stdout}\n{completed.stderr}"
    return completed.stdout


def uv() -> str:
    beside_python = Path(sys.executable).parent / "uv"
    found = str(beside_python) if beside_python.exists() else shutil.which("uv")
    assert found, "uv is missing: it is one of envstore's test extras"
    return found


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` directory of a fresh virtual environment holding only the built wheel and its
    dependencies (not this checkout, not the test environment's packages)."""
    work = tmp_path_factory.mktemp("installed-package")
    run([uv(), "build", "--quiet", "--wheel", "--out-dir", work / "dist", REPOSITORY])
    (wheel,) = (work / "dist").glob("envstore-*.whl")
    base_python = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    run([uv(), "venv", "--quiet", "--python", base_python, work / "venv"])
    run([uv(), "pip", "install", "--quiet", "--python", work / "venv" / "bin" / "python", wheel])
    return work / "venv" / "bin"


def user_environment(bin_directory: Path, **settings: str) -> dict[str, str]:
    """A shell's environment: the venv first on PATH, the system's tools after it, no PYTHONPATH
    and no envstore settings but those given."""
    kept = {key: value for key, value in os.environ.items() if key in ("HOME", "LANG", "TMPDIR", "USER")}
    return {**kept, "PATH": f"{bin_directory}:/usr/local/bin:/usr/bin:/bin", **settings}


async def wait_for_line(process: LoggedChildProcess, text: str, timeout_seconds: float) -> str:
    deadline = time.monotonic() + timeout_seconds
    while text not in process.log_text():
        if process.has_exited():
            raise AssertionError(describe_failure("envstore up", process))
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not printed within {timeout_seconds} s:\n{process.log_tail()}")
        await asyncio.sleep(0.1)
    return next(line for line in process.log_text().splitlines() if text in line)


async def test_the_installed_wheel_serves_the_ui_that_lists_environments(installed: Path, tmp_path: Path) -> None:
    python = installed / "python"
    where = run([python, "-c", "import envstore.api.ui_shell as m; print(m.DEFAULT_UI_DIRECTORY)"], cwd=tmp_path)
    ui_directory = Path(where.strip())
    assert ui_directory.is_relative_to(installed.parent), f"envstore imported from {ui_directory}, not the venv"
    channel = run([installed / "envstore", "make-channel", tmp_path / "channel"], cwd=tmp_path).strip()

    api_port, registry_port = pick_free_port(PROXY_HOST), pick_free_port(PROXY_HOST)
    environment = user_environment(
        installed,
        ENVSTORE_ADMIN_TOKEN=ADMIN_TOKEN,
        ENVSTORE_CONDA_DEFAULT_CHANNELS=channel,
        ENVSTORE_CONDA_ALLOWED_CHANNELS=channel,
        ENVSTORE_BUILD_ARTIFACTS="LOCKFILE,YAML",
        ENVSTORE_URL_PREFIX=URL_PREFIX,
        ENVSTORE_TRUSTED_PROXIES=PROXY_HOST,
    )
    up = LoggedChildProcess.spawn(
        [str(installed / "envstore"), "up", "--data-dir", str(tmp_path / "data"),
         "--port", str(api_port), "--registry-port", str(registry_port)],
        tmp_path / "envstore-up.log",
        env=environment,
        cwd=tmp_path,
    )
    proxy = NginxProxy(tmp_path / "nginx", URL_PREFIX, f"{PROXY_HOST}:{api_port}", f"{PROXY_HOST}:{registry_port}")
    try:
        ready = await wait_for_line(up, "envstore ready", READY_SECONDS)
        direct = f"http://{PROXY_HOST}:{api_port}{URL_PREFIX}"
        assert f"UI {direct}/ui/" in ready
        async with ApiClient(direct, token=ADMIN_TOKEN) as admin:
            async with admin.raw("GET", "/static/conda-store-ui/main.js") as response:
                assert response.status == 200
                assert await response.read() == (ui_directory / "main.js").read_bytes()
            build_id = await admin.submit(environment_yaml(ENVIRONMENT, ["tinyjson"]), namespace="default")
            build = await admin.wait_for_build(build_id)
            assert build["status"] == "COMPLETED", build["status_info"]

        await proxy.start()
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_FLAGS))
            watched = await WatchedPage.open(browser, "test_installed_package", ignore_https_errors=True)
            try:
                page = watched.page
                await page.goto(f"{proxy.url}{URL_PREFIX}/")
                await expect(page).to_have_url(f"{proxy.url}{URL_PREFIX}/ui/")
                # Anonymous visitors read the default namespace, listed under shared environments.
                await expect(page.get_by_text("Shared Environments")).to_be_visible()
                await page.get_by_text("default", exact=True).click()  # accordions start collapsed
                await expect(page.get_by_role("link", name=ENVIRONMENT)).to_be_visible()
                await watched.snap("environment-list")
                await page.get_by_role("link", name=ENVIRONMENT).click()
                await expect(page).to_have_url(f"{proxy.url}{URL_PREFIX}/ui/default/{ENVIRONMENT}")
                await expect(page.get_by_text("tinyjson", exact=True).last).to_be_visible()
                await watched.snap("environment")
                watched.assert_clean()
            finally:
                await watched.close()
                await browser.close()
    finally:
        await proxy.stop()
        up.send_signal(signal.SIGTERM)
        stopped = await up.wait(60)
        if not stopped:
            await up.kill()
    assert stopped and up.returncode == 0, up.log_tail()
    assert "envstore stopped" in up.log_text()
