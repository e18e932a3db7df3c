"""The embedded stack: NATS (JetStream), PostgreSQL, local storage and all five services as child
processes on loopback, with every piece of data under one directory.

Used by ``envstore up``/``envstore demo`` and by the tests, which kill and restart single
services to show that no accepted build is lost.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import time
from pathlib import Path

import aiohttp

from envstore.launcher.child_process import LoggedChildProcess, describe_failure, pick_free_port
from envstore.launcher.nats_process import NatsServer
from envstore.launcher.postgres_process import PostgresServer

SERVICES = ("api", "solver", "builder", "packager", "registry")
READY_TIMEOUT_SECONDS = 60.0


class StackError(RuntimeError):
    pass


class EmbeddedStack:
    def __init__(
        self,
        data_directory: Path,
        host: str = "127.0.0.1",
        api_port: int | None = None,
        registry_port: int | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.data_directory = data_directory.resolve()
        self.host = host
        self.api_port = api_port or pick_free_port(host)
        self.registry_port = registry_port or pick_free_port(host)
        self.extra_settings = dict(settings or {})
        self.admin_token = self.extra_settings.get("ENVSTORE_ADMIN_TOKEN") or secrets.token_urlsafe(24)
        self.nats = NatsServer(self.data_directory / "nats", host=host)
        self.postgres = PostgresServer(self.data_directory / "postgres", host=host)
        self.services: dict[str, LoggedChildProcess] = {}

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    @property
    def registry_url(self) -> str:
        return f"http://{self.host}:{self.registry_port}"

    def service_environment(self) -> dict[str, str]:
        environment = dict(os.environ)
        environment.update(
            {
                "ENVSTORE_DATA_DIR": str(self.data_directory),
                "ENVSTORE_NATS_URL": self.nats.url,
                "ENVSTORE_DATABASE_URL": self.postgres.dsn,
                "ENVSTORE_API_HOST": self.host,
                "ENVSTORE_API_PORT": str(self.api_port),
                "ENVSTORE_REGISTRY_HOST": self.host,
                "ENVSTORE_REGISTRY_PORT": str(self.registry_port),
                "ENVSTORE_ADMIN_TOKEN": self.admin_token,
                "PYTHONUNBUFFERED": "1",
            }
        )
        environment.update(self.extra_settings)
        return environment

    async def start(self) -> None:
        self.data_directory.mkdir(parents=True, exist_ok=True)
        await asyncio.gather(self.nats.start(), self.postgres.start())
        for name in SERVICES:
            self.start_service(name)
        await self.wait_until_ready()

    def start_service(self, name: str) -> LoggedChildProcess:
        if name not in SERVICES:
            raise StackError(f"unknown service {name!r}; services: {', '.join(SERVICES)}")
        child = LoggedChildProcess.spawn(
            [sys.executable, "-m", f"envstore.{name}"],
            self.data_directory / "logs" / f"{name}.log",
            env=self.service_environment(),
        )
        self.services[name] = child
        return child

    async def kill_service(self, name: str) -> None:
        """SIGKILL, as a crash would."""
        await self.services[name].kill()

    async def stop_service(self, name: str) -> None:
        await self.services[name].stop(signal.SIGTERM, grace_seconds=10)

    async def wait_until_ready(self, timeout_seconds: float = READY_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + timeout_seconds
        async with aiohttp.ClientSession() as http:
            while True:
                for name, child in self.services.items():
                    if child.has_exited():
                        raise StackError(describe_failure(f"service {name}", child))
                try:
                    async with http.get(f"{self.api_url}/api/v1/") as api, http.get(
                        f"{self.registry_url}/v2/"
                    ) as registry:
                        if api.status == 200 and registry.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise StackError(f"the API did not answer at {self.api_url} within {timeout_seconds} s")
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        await asyncio.gather(
            *(child.stop(signal.SIGTERM, grace_seconds=10) for child in self.services.values()),
            return_exceptions=True,
        )
        await asyncio.gather(self.nats.stop(), self.postgres.stop(), return_exceptions=True)

    async def __aenter__(self) -> EmbeddedStack:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
