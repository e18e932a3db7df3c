"""The embedded stack: NATS (JetStream), PostgreSQL, storage (a directory, or a local SeaweedFS S3
server when ENVSTORE_STORAGE_BACKEND=s3 names no endpoint) and all five services as child
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

from envstore.common.local_secrets import read_or_create_secret
from envstore.common.settings import normalized_url_prefix
from envstore.launcher.child_process import LoggedChildProcess, describe_failure, pick_free_port
from envstore.launcher.nats_process import NatsCluster
from envstore.launcher.postgres_process import PostgresServer
from envstore.launcher.prerequisites import describe_missing, missing_programs
from envstore.launcher.s3_process import SeaweedS3Server

# "api.webhooks" is the API's webhook delivering process (python -m envstore.api.webhooks).
SERVICES = ("api", "solver", "builder", "packager", "registry", "api.webhooks")
# Services started only when their setting is set: the directory watcher (python -m envstore.watcher)
# when there are directories to watch.
OPTIONAL_SERVICES = {"watcher": "ENVSTORE_WATCH_PATHS"}
READY_TIMEOUT_SECONDS = 60.0
ADMIN_TOKEN_FILE = "admin-token"


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
        service_settings: dict[str, dict[str, str]] | None = None,
    ) -> None:
        self.data_directory = data_directory.resolve()
        # Settings for one service only (e.g. a packager with its own cache, as on another host).
        self.service_settings = {name: dict(values) for name, values in (service_settings or {}).items()}
        self.host = host
        self.api_port = api_port or pick_free_port(host)
        self.registry_port = registry_port or pick_free_port(host)
        self.extra_settings = dict(settings or {})
        self.url_prefix = normalized_url_prefix(self._wanted_setting("ENVSTORE_URL_PREFIX") or "")
        # Kept in the data directory (mode 0600) rather than printed: output ends up in logs.
        self.admin_token = self.extra_settings.get("ENVSTORE_ADMIN_TOKEN") or read_or_create_secret(
            self.admin_token_file
        )
        self.nats = NatsCluster(self.data_directory / "nats", host=host)
        self.postgres = PostgresServer(self.data_directory / "postgres", host=host)
        self.services: dict[str, LoggedChildProcess] = {}
        # The API serves /metrics on its own port; every other service gets a metrics listener
        # (which answers /healthz and /readyz too).
        self.metrics_ports = {name: pick_free_port(host) for name in self.service_names if name != "api"}
        self.s3 = self._local_s3_server_if_wanted()

    @property
    def admin_token_file(self) -> Path:
        return self.data_directory / ADMIN_TOKEN_FILE

    @property
    def api_origin(self) -> str:
        """The API's listener, where the stack probes it (no prefix)."""
        return f"http://{self.host}:{self.api_port}"

    @property
    def api_url(self) -> str:
        """Where users reach the API: the listener and the URL prefix (``/api/v1/`` follows)."""
        return f"{self.api_origin}{self.url_prefix}"

    @property
    def registry_url(self) -> str:
        return f"http://{self.host}:{self.registry_port}"

    def metrics_url(self, name: str) -> str:
        """Where service ``name`` answers Prometheus scrapes."""
        if name == "api":
            return f"{self.api_url}/metrics"
        return f"http://{self.host}:{self.metrics_ports[name]}/metrics"

    def readiness_url(self, name: str) -> str:
        """Where service ``name`` answers ``/readyz``: the API's and the registry's own listeners
        (at the root, whatever the prefix), the metrics listener of every other service."""
        if name == "api":
            return f"{self.api_origin}/readyz"
        if name == "registry":
            return f"{self.registry_url}/readyz"
        return f"http://{self.host}:{self.metrics_ports[name]}/readyz"

    @property
    def service_names(self) -> tuple[str, ...]:
        """The services this stack runs: every one of SERVICES, and the optional ones whose
        setting is set."""
        optional = tuple(name for name, key in OPTIONAL_SERVICES.items() if self._wanted_setting(key))
        return (*SERVICES, *optional)

    def _wanted_setting(self, key: str) -> str | None:
        """A setting as the services will see it: the stack's own, else the environment's."""
        return self.extra_settings.get(key, os.environ.get(key))

    # --- S3 storage: a local SeaweedFS when the settings ask for S3 but name no endpoint ---------

    def _local_s3_server_if_wanted(self) -> SeaweedS3Server | None:
        wanted = {**os.environ, **self.extra_settings}
        if wanted.get("ENVSTORE_STORAGE_BACKEND") != "s3" or wanted.get("ENVSTORE_S3_ENDPOINT_URL"):
            return None
        return SeaweedS3Server(
            self.data_directory / "s3",
            host=self.host,
            access_key=wanted.get("ENVSTORE_S3_ACCESS_KEY") or secrets.token_hex(10),
            secret_key=wanted.get("ENVSTORE_S3_SECRET_KEY") or secrets.token_urlsafe(30),
        )

    def _local_s3_settings(self) -> dict[str, str]:
        if self.s3 is None:
            return {}
        return {
            "ENVSTORE_S3_ENDPOINT_URL": self.s3.endpoint_url,
            "ENVSTORE_S3_REGION": self.s3.region,
            "ENVSTORE_S3_ACCESS_KEY": self.s3.access_key or "",
            "ENVSTORE_S3_SECRET_KEY": self.s3.secret_key or "",
            "ENVSTORE_S3_PATH_STYLE": "true",
        }

    # ---------------------------------------------------------------------------------------------

    def service_environment(self) -> dict[str, str]:
        environment = dict(os.environ)
        environment.update(
            {
                "ENVSTORE_DATA_DIR": str(self.data_directory),
                "ENVSTORE_NATS_URL": self.nats.url,
                "ENVSTORE_DATABASE_URL": self.postgres.dsn,
                "ENVSTORE_READER_DATABASE_URL": self.postgres.reader_dsn,
                "ENVSTORE_API_HOST": self.host,
                "ENVSTORE_API_PORT": str(self.api_port),
                "ENVSTORE_REGISTRY_HOST": self.host,
                "ENVSTORE_REGISTRY_PORT": str(self.registry_port),
                "ENVSTORE_ADMIN_TOKEN": self.admin_token,
                "PYTHONUNBUFFERED": "1",
            }
        )
        environment.update(self.extra_settings)
        environment.update(self._local_s3_settings())
        return environment

    async def start(self) -> None:
        wanted = {**os.environ, **self.extra_settings}
        missing = missing_programs(wanted, needs_local_s3=self.s3 is not None)
        if missing:
            raise StackError(describe_missing(missing).rstrip())
        self.data_directory.mkdir(parents=True, exist_ok=True)
        local_s3 = [self.s3.start()] if self.s3 is not None else []
        await asyncio.gather(self.nats.start(), self.postgres.start(), *local_s3)
        for name in self.service_names:
            self.start_service(name)
        await self.wait_until_ready()

    def start_service(self, name: str) -> LoggedChildProcess:
        if name not in self.service_names:
            raise StackError(f"unknown service {name!r}; services: {', '.join(self.service_names)}")
        child = LoggedChildProcess.spawn(
            [sys.executable, "-m", f"envstore.{name}"],
            self.data_directory / "logs" / f"{name}.log",
            env=self.service_environment() | self._metrics_listener_settings(name) | self.service_settings.get(name, {}),
        )
        self.services[name] = child
        return child

    def _metrics_listener_settings(self, name: str) -> dict[str, str]:
        if name not in self.metrics_ports:
            return {}
        return {"ENVSTORE_METRICS_HOST": self.host, "ENVSTORE_METRICS_PORT": str(self.metrics_ports[name])}

    async def kill_service(self, name: str) -> None:
        """SIGKILL, as a crash would."""
        await self.services[name].kill()

    async def stop_service(self, name: str) -> None:
        await self.services[name].stop(signal.SIGTERM, grace_seconds=10)

    async def wait_until_ready(self, timeout_seconds: float = READY_TIMEOUT_SECONDS) -> None:
        """Until every service answers 200 on ``/readyz`` (bounded; a service that exits or is not
        ready in time is named, with what its ``/readyz`` said last)."""
        deadline = time.monotonic() + timeout_seconds
        last_answer: dict[str, str] = {}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:

            async def ready(name: str) -> bool:
                try:
                    async with http.get(self.readiness_url(name)) as response:
                        last_answer[name] = f"HTTP {response.status}: {(await response.text()).strip()}"
                        return response.status == 200
                except (aiohttp.ClientError, TimeoutError) as error:
                    last_answer[name] = f"no answer ({type(error).__name__})"
                    return False

            waiting = set(self.services)
            while waiting:
                for name, child in self.services.items():
                    if child.has_exited():
                        raise StackError(describe_failure(f"service {name}", child))
                answers = await asyncio.gather(*(ready(name) for name in sorted(waiting)))
                waiting -= {name for name, is_ready in zip(sorted(waiting), answers) if is_ready}
                if not waiting:
                    return
                if time.monotonic() > deadline:
                    details = "; ".join(f"{name} ({self.readiness_url(name)}): {last_answer[name]}" for name in sorted(waiting))
                    raise StackError(f"not ready within {timeout_seconds} s: {details}")
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        await asyncio.gather(
            *(child.stop(signal.SIGTERM, grace_seconds=10) for child in self.services.values()),
            return_exceptions=True,
        )
        local_s3 = [self.s3.stop()] if self.s3 is not None else []
        await asyncio.gather(self.nats.stop(), self.postgres.stop(), *local_s3, return_exceptions=True)

    async def __aenter__(self) -> EmbeddedStack:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
