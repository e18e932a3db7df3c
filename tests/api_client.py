"""A small client for tests: what a user's script does against the REST API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from yarl import URL

TERMINAL = ("COMPLETED", "FAILED", "CANCELED")
# The password backend's password in test stacks (ENVSTORE_AUTH_PASSWORD); a real deployment
# generates one into its data directory.
LOGIN_PASSWORD = "test-login-password"


class ApiClient:
    """``base_url`` is the API's URL as users are given it, URL prefix included
    (``http://host:8080/conda-store``); paths are written from the API's root (``/api/v1/``)."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        url = URL(base_url)
        self.prefix = url.path.rstrip("/")  # "" or "/conda-store"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # The HTTPS of these tests is a reverse proxy's with a certificate the test made itself; what
        # is tested is the proxying, and the conda-store CLI's run checks that certificate.
        connector = aiohttp.TCPConnector(ssl=False) if url.scheme == "https" else None
        # unsafe=True: keep cookies set by 127.0.0.1 (a /login/ session cookie), as a browser would.
        self.session = aiohttp.ClientSession(
            str(url.origin()), headers=headers, cookie_jar=aiohttp.CookieJar(unsafe=True), connector=connector
        )

    def path(self, path: str) -> str:
        """``path`` (from the API's root) as sent: under the URL prefix."""
        return self.prefix + path

    def raw(self, method: str, path: str, **options: Any) -> Any:
        """The aiohttp request itself (``async with client.raw("GET", "/login/") as response``)."""
        return self.session.request(method, self.path(path), **options)

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.session.close()

    async def request(self, method: str, path: str, **options: Any) -> tuple[int, Any]:
        async with self.raw(method, path, **options) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()

    async def get(self, path: str, **options: Any) -> tuple[int, Any]:
        return await self.request("GET", path, **options)

    async def wait_until(
        self, path: str, ready: Callable[[Any], bool], timeout_seconds: float = 30
    ) -> tuple[int, Any]:
        """GET ``path`` until ``ready(body)`` holds (bounded); the last answer."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            status, body = await self.get(path)
            if status == 200 and ready(body):
                return status, body
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} did not become ready in {timeout_seconds} s: {status} {body}")
            await asyncio.sleep(0.05)

    async def submit(self, specification: str, namespace: str = "tests", **fields: Any) -> int:
        status, body = await self.request(
            "POST",
            "/api/v1/specification/",
            json={"specification": specification, "namespace": namespace, **fields},
        )
        assert status == 200, body
        return body["data"]["build_id"]

    async def build(self, build_id: int) -> dict[str, Any]:
        status, body = await self.get(f"/api/v1/build/{build_id}/")
        assert status == 200, body
        return body["data"]

    async def wait_for_build(self, build_id: int, timeout_seconds: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_seconds
        while True:
            build = await self.build(build_id)
            if build["status"] in TERMINAL:
                return build
            if time.monotonic() > deadline:
                raise AssertionError(f"build {build_id} still {build['status']} after {timeout_seconds} s")
            await asyncio.sleep(0.05)

    async def wait_for_artifacts(self, build_id: int, kinds: set[str], timeout_seconds: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_seconds
        while True:
            build = await self.build(build_id)
            present = {artifact["artifact_type"] for artifact in build["build_artifacts"] or []}
            if kinds <= present:
                return build
            if time.monotonic() > deadline:
                raise AssertionError(f"build {build_id} has {present}, not {kinds}, after {timeout_seconds} s")
            await asyncio.sleep(0.05)


def environment_yaml(name: str, dependencies: list[str], channels: list[str] | None = None) -> str:
    lines = [f"name: {name}"]
    if channels:
        lines.append("channels:")
        lines += [f"  - {channel}" for channel in channels]
    lines.append("dependencies:")
    lines += [f"  - {dependency}" for dependency in dependencies]
    return "\n".join(lines) + "\n"
