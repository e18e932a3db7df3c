"""Stacks for the conformance suite (conda-store-api.md §6) and the permission tests.

Every stack is a real envstore: nats-server with JetStream, PostgreSQL and every service as its
own process, building from the offline test channel. conda-store's own tests start each test from
a fresh database; here a few stacks keep the suite fast and the assertions exact:

* ``world`` — §6.1's fixture world (namespaces default{name1,name2}, namespace1{name3},
  namespace2{name4}, one real build per environment, in that order). Tests on it only read, or
  are refused, so "exactly these environments" stays true whatever order tests run in.
* ``workbench`` — where tests create, change and delete things, each in namespaces of its own.

conda-store's fixture packages are made up (``madeup-<uuid>``); here each world environment holds
one real package of the channel with no dependencies, so every build has exactly one package.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from envstore.launcher.free_ports import pick_free_port
from envstore.launcher.stack import EmbeddedStack
from tests.api_client import LOGIN_PASSWORD, ApiClient, environment_yaml
from tests.deployments import Deployment

# (namespace, environment, its one package), in build order: builds "1" to "4" of §6.1.
WORLD_ENVIRONMENTS = (
    ("default", "name1", "tinyjson"),
    ("default", "name2", "textutils"),
    ("namespace1", "name3", "greeting-data"),
    ("namespace2", "name4", "compresslite"),
)
# conda-store's default build_artifacts (LOGS always comes too), stated so the world stays the
# same if envstore's defaults change.
WORLD_ARTIFACTS = ("LOCKFILE", "YAML", "CONDA_PACK", "CONSTRUCTOR_INSTALLER")
# A service-account token from settings (conda-store's predefined_tokens).
PREDEFINED_TOKEN = "predefined-namespace1-viewer-token"
PREDEFINED_TOKEN_CLAIMS = {"primary_namespace": "namespace1", "role_bindings": {"namespace1/*": ["viewer"]}}
# conda-store's tests log in as "username" with DummyAuthentication, which makes every login
# */* admin; here that user is named in ENVSTORE_AUTH_ADMIN_USERS, and other names are not admin.
USERNAME = "username"
PASSWORD = LOGIN_PASSWORD


def fresh(prefix: str) -> str:
    """A name no other test uses (tests on the workbench share one stack)."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def stack_settings(channel_url: str, **extra: str) -> dict[str, str]:
    return {
        "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel_url,
        "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel_url,
        # Webhooks registered by these tests point at loopback (never at a real host).
        "ENVSTORE_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        # Tests serve channels of their own on loopback (StalledChannel); envstore's own
        # listeners there stay refused.
        "ENVSTORE_CHANNEL_ALLOWED_HOSTS": "127.0.0.1",
        "ENVSTORE_AUTH_PASSWORD": PASSWORD,
        "ENVSTORE_AUTH_ADMIN_USERS": USERNAME,
        **extra,
    }


@contextlib.asynccontextmanager
async def running_stack(
    directory: Path, channel_url: str, deployment: Deployment, **extra: str
) -> AsyncIterator[EmbeddedStack]:
    async with deployment.stack(directory, stack_settings(channel_url, **extra)) as stack:
        yield stack


@dataclass(frozen=True)
class World:
    stack: EmbeddedStack
    channel_url: str
    builds: dict[str, int]  # environment name → its (only) build
    environment_ids: dict[str, int]
    namespace_ids: dict[str, int]

    @property
    def url(self) -> str:
        return self.stack.api_url


@pytest.fixture(scope="session")
async def world(
    tmp_path_factory: pytest.TempPathFactory, channel_url: str, deployment: Deployment
) -> AsyncIterator[World]:
    directory = tmp_path_factory.mktemp("world")
    async with running_stack(
        directory,
        channel_url,
        deployment,
        ENVSTORE_PREDEFINED_TOKENS=json.dumps({PREDEFINED_TOKEN: PREDEFINED_TOKEN_CLAIMS}),
        ENVSTORE_BUILD_ARTIFACTS=",".join(WORLD_ARTIFACTS),
        # conda-store's fixture world indexes no channel: its channels and packages are the
        # builds' own (cases 33, 34).
        ENVSTORE_CONDA_INDEXED_CHANNELS="",
    ) as stack, ApiClient(stack.api_url, token=stack.admin_token) as admin:
        builds = {}
        for namespace, name, package in WORLD_ENVIRONMENTS:
            builds[name] = await admin.submit(environment_yaml(name, [package]), namespace=namespace)
        for name, build_id in builds.items():
            build = await admin.wait_for_build(build_id)
            assert build["status"] == "COMPLETED", (name, build["status_info"])
            await admin.wait_for_artifacts(build_id, {"LOGS", *WORLD_ARTIFACTS})
        environment_ids, namespace_ids = {}, {}
        for namespace, name, _ in WORLD_ENVIRONMENTS:
            status, body = await admin.get(f"/api/v1/environment/{namespace}/{name}/")
            assert status == 200, body
            environment_ids[name] = body["data"]["id"]
            namespace_ids[namespace] = body["data"]["namespace"]["id"]
        yield World(stack, channel_url, builds, environment_ids, namespace_ids)


@pytest.fixture(scope="session")
async def workbench(
    tmp_path_factory: pytest.TempPathFactory, channel_url: str, deployment: Deployment
) -> AsyncIterator[EmbeddedStack]:
    async with running_stack(tmp_path_factory.mktemp("workbench"), channel_url, deployment) as stack:
        yield stack


@contextlib.asynccontextmanager
async def logged_in(base_url: str, username: str = USERNAME) -> AsyncIterator[ApiClient]:
    """conda-store's ``authenticate`` fixture: ``POST /login/`` with the password backend; the
    session then carries the ``conda-store-auth`` cookie."""
    async with ApiClient(base_url) as client:
        status, body = await client.request("POST", "/login/", json={"username": username, "password": PASSWORD})
        assert status == 200, body
        yield client


async def mint(stack: EmbeddedStack, role_bindings: dict[str, list[str]], primary_namespace: str | None = None) -> str:
    """A JWT with exactly these role bindings, minted by the admin through ``POST /api/v1/token/``."""
    body: dict[str, object] = {"role_bindings": role_bindings}
    if primary_namespace is not None:
        body["primary_namespace"] = primary_namespace
    async with ApiClient(stack.api_url, token=stack.admin_token) as admin:
        status, answer = await admin.request("POST", "/api/v1/token/", json=body)
    assert status == 200, answer
    return answer["data"]["token"]


# --- callers on the world --------------------------------------------------------------------


@pytest.fixture
async def anonymous(world: World) -> AsyncIterator[ApiClient]:
    async with ApiClient(world.url) as client:
        yield client


@pytest.fixture
async def user(world: World) -> AsyncIterator[ApiClient]:
    async with logged_in(world.url) as client:
        yield client


@pytest.fixture
async def world_admin(world: World) -> AsyncIterator[ApiClient]:
    async with ApiClient(world.url, token=world.stack.admin_token) as client:
        yield client


# --- callers on the workbench ----------------------------------------------------------------


@pytest.fixture
async def bench_user(workbench: EmbeddedStack) -> AsyncIterator[ApiClient]:
    async with logged_in(workbench.api_url) as client:
        yield client


@pytest.fixture
async def bench_anonymous(workbench: EmbeddedStack) -> AsyncIterator[ApiClient]:
    async with ApiClient(workbench.api_url) as client:
        yield client


@pytest.fixture
async def bench_admin(workbench: EmbeddedStack) -> AsyncIterator[ApiClient]:
    async with ApiClient(workbench.api_url, token=workbench.admin_token) as client:
        yield client


# --- a channel that never answers until released ------------------------------------------


class StalledChannel:
    """An HTTP conda channel whose every request waits until ``release()``: a build that uses it
    stays in its solve phase (BUILDING) for as long as a test needs, with no sleeping."""

    def __init__(self) -> None:
        self.released = asyncio.Event()
        self.paths: list[str] = []  # every request received
        self.abandoned = 0  # requests whose client went away before an answer
        self.port = pick_free_port("127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port}/stalled"
        self.runner: web.AppRunner | None = None

    async def _answer(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        try:
            await self.released.wait()
        except asyncio.CancelledError:
            self.abandoned += 1
            raise
        return web.Response(status=404, text="released")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self.runner = web.AppRunner(app, handler_cancellation=True)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def release(self) -> None:
        self.released.set()

    async def stop(self) -> None:
        self.release()
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def stalled_channel() -> AsyncIterator[StalledChannel]:
    channel = StalledChannel()
    await channel.start()
    try:
        yield channel
    finally:
        await channel.stop()


async def allow_stalled_channels(admin: ApiClient, channel_url: str, namespace: str, *urls: str) -> None:
    status, body = await admin.request(
        "PUT", f"/api/v1/setting/{namespace}/", json={"conda_allowed_channels": [channel_url, *urls]}
    )
    assert status == 200, body


async def stalled_build(admin: ApiClient, channel: StalledChannel, channel_url: str, namespace: str, name: str) -> int:
    """A build that stays BUILDING: its solve waits on ``channel`` (at a path of its own)."""
    url = f"{channel.url}/{name}"
    await allow_stalled_channels(admin, channel_url, namespace, url)
    build_id = await admin.submit(environment_yaml(name, ["tinyjson"], channels=[url]), namespace)

    async def building() -> bool:
        return (await admin.build(build_id))["status"] == "BUILDING" and any(
            path.startswith(f"/stalled/{name}/") for path in channel.paths
        )

    await wait_until(building, f"build {build_id} solving against the stalled channel")
    return build_id


async def wait_until(check, what: str, timeout_seconds: float = 60, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll ``check`` (an async callable) until it returns something truthy, within a bound."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout_seconds} s")
        await asyncio.sleep(interval)
