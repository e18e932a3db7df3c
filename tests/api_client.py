"""A small client for tests: what a user's script does against the REST API."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

TERMINAL = ("COMPLETED", "FAILED", "CANCELED")
# The password backend's password in test stacks (ENVSTORE_AUTH_PASSWORD); a real deployment
# generates one into its data directory.
LOGIN_PASSWORD = "test-login-password"


class ApiClient:
    def __init__(self, base_url: str, token: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # unsafe=True: keep cookies set by 127.0.0.1 (a /login/ session cookie), as a browser would.
        self.session = aiohttp.ClientSession(base_url, headers=headers, cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.session.close()

    async def request(self, method: str, path: str, **options: Any) -> tuple[int, Any]:
        async with self.session.request(method, path, **options) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()

    async def get(self, path: str, **options: Any) -> tuple[int, Any]:
        return await self.request("GET", path, **options)

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
