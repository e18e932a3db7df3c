"""Channels as a way into the server's network: a submitter who may widen their namespace's
allow-list (a namespace admin can) still cannot make the solver fetch loopback hosts, envstore's
own listeners or files, through a build, a remote solve or a lockfile's package URLs; the
solver refuses such a submission again if one reaches the stream; and a failing channel's
answer stays out of what the submitter reads. Every target here is on loopback."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from envstore.common.settings import EnvstoreSettings
from envstore.common.specification import SpecificationError
from envstore.common.submission import SubmissionRequest, build_submission
from envstore.launcher.free_ports import pick_free_port
from envstore.launcher.stack import EmbeddedStack
from tests.api.conftest import fresh, mint, wait_until
from tests.api_client import ApiClient, environment_yaml

SECRET_ANSWER = "internal-only-text-7f3a"


class RecordingServer:
    """A loopback HTTP server that notes every request and answers 404 with a text that must
    never reach a submitter."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.port = pick_free_port("127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port}/internal"
        self.runner: web.AppRunner | None = None

    async def _answer(self, request: web.Request) -> web.Response:
        self.paths.append(request.path)
        return web.Response(status=404, text=SECRET_ANSWER)

    async def __aenter__(self) -> RecordingServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


@pytest.fixture
async def internal_server() -> AsyncIterator[RecordingServer]:
    async with RecordingServer() as server:
        yield server


@pytest.fixture
async def opened_namespace(stack: EmbeddedStack) -> AsyncIterator[tuple[str, ApiClient]]:
    """A namespace whose admin has emptied its channel allow-list (conda-store: any channel)."""
    namespace = fresh("opened")
    token = await mint(stack, {f"{namespace}/*": ["admin"]}, namespace)
    async with ApiClient(stack.api_url, token=token) as owner:
        assert (await owner.request("POST", f"/api/v1/namespace/{namespace}/"))[0] == 200
        status, body = await owner.request("PUT", f"/api/v1/setting/{namespace}/", json={"conda_allowed_channels": []})
        assert status == 200, body
        yield namespace, owner


def refused_channels(stack: EmbeddedStack, server: RecordingServer, channel_directory: Path) -> dict[str, str]:
    return {
        "a loopback host": server.url,
        "loopback by name": f"http://localhost:{server.port}/internal",
        "loopback over IPv6": f"http://[::1]:{server.port}/internal",
        "envstore's own API": f"{stack.api_url}/api/v1",
        "envstore's own registry": f"{stack.registry_url}/v2",
        "a file on the server": "file:///etc",
        "out of the trusted channel": f"{channel_directory.as_uri()}/../../../etc",
        "another scheme": f"ftp://127.0.0.1:{server.port}/x",
    }


def assert_says_nothing_inside(message: str, case: str) -> None:
    assert "not allowed" in message, (case, message)
    assert SECRET_ANSWER not in message and "No such file" not in message, (case, message)
    if "localhost" in message:
        assert "127.0.0.1" not in message, (case, message)  # what the name resolved to


async def test_builds_and_solves_cannot_point_the_server_inward(
    stack: EmbeddedStack, channel_url: str, internal_server: RecordingServer, opened_namespace: tuple[str, ApiClient]
) -> None:
    namespace, owner = opened_namespace
    channel_directory = Path(urlsplit(channel_url).path)
    for case, channel in refused_channels(stack, internal_server, channel_directory).items():
        status, body = await owner.request(
            "POST",
            "/api/v1/specification/",
            json={"namespace": namespace, "specification": environment_yaml("probe", ["tinyjson"], channels=[channel])},
        )
        assert status == 400, (case, body)
        assert_says_nothing_inside(body["message"], case)
        status, body = await owner.get("/api/v1/specification/", params={"conda": "tinyjson", "channel": channel})
        assert status == 400, (case, body)
        assert_says_nothing_inside(body["message"], case)
    assert internal_server.paths == []
    # The channel the deployment names itself still works (it is a file:// channel).
    build = await owner.wait_for_build(await owner.submit(environment_yaml("fine", ["tinyjson"], channels=[channel_url]), namespace))
    assert build["status"] == "COMPLETED", build["status_info"]


async def test_a_lockfile_cannot_name_inward_package_urls(
    stack: EmbeddedStack, internal_server: RecordingServer, opened_namespace: tuple[str, ApiClient]
) -> None:
    namespace, owner = opened_namespace
    for url in (f"{internal_server.url}/linux-64/tinyjson-1.0-0.conda", "file:///etc/passwd"):
        lockfile = {
            "version": 1,
            "metadata": {"platforms": ["linux-64"], "channels": [], "content_hash": {}, "sources": []},
            "package": [
                {"name": "tinyjson", "version": "1.0", "manager": "conda", "platform": "linux-64", "url": url,
                 "hash": {"sha256": "0" * 64}, "dependencies": {}, "category": "main", "optional": False}
            ],
        }
        status, body = await owner.request(
            "POST",
            "/api/v1/specification/",
            json={"namespace": namespace, "is_lockfile": True, "environment_name": "locked", "specification": json.dumps(lockfile)},
        )
        assert status == 400, body
        assert body["message"].startswith(f"package URL {url} is not allowed"), body
    assert internal_server.paths == []


async def test_the_solver_refuses_an_inward_channel_that_reached_the_stream(
    stack: EmbeddedStack, api: ApiClient, internal_server: RecordingServer
) -> None:
    """As an older submission (or one made before a DNS answer changed) would be."""
    namespace = fresh("forged")
    specification = environment_yaml("inward", ["tinyjson"], channels=[internal_server.url])
    event = build_submission(
        SubmissionRequest(specification=specification, namespace=namespace), EnvstoreSettings(conda_allowed_channels=[])
    )
    bus = await stack.connect_bus("api")
    try:
        await bus.publish(event, message_id=f"test-inward-{uuid.uuid4()}")
    finally:
        await bus.close()

    async def failed_build() -> dict | None:
        status, body = await api.get("/api/v1/build/", params={"namespace": namespace})
        builds = body["data"] if status == 200 else []
        return builds[0] if builds and builds[0]["status"] in ("FAILED", "COMPLETED") else None

    build = await wait_until(failed_build, "the forged build ends", timeout_seconds=60)
    assert build["status"] == "FAILED"
    assert build["status_info"].startswith(f"channel {internal_server.url} is not allowed"), build["status_info"]
    assert internal_server.paths == []


async def test_a_failing_channel_answer_stays_out_of_the_build(workbench: EmbeddedStack) -> None:
    """The workbench allows loopback channels (ENVSTORE_CHANNEL_ALLOWED_HOSTS): the solver
    fetches, the channel answers 404 with a text, and the submitter reads neither."""
    namespace = fresh("failing")
    async with RecordingServer() as server, ApiClient(workbench.api_url, token=workbench.admin_token) as admin:
        status, body = await admin.request("PUT", f"/api/v1/setting/{namespace}/", json={"conda_allowed_channels": []})
        assert status == 200, body
        build = await admin.wait_for_build(
            await admin.submit(environment_yaml("failing", ["tinyjson"], channels=[server.url]), namespace)
        )
        assert server.paths, "the allowed loopback channel was fetched"
        status, log = await admin.get(f"/api/v1/build/{build['id']}/logs/")
    assert build["status"] == "FAILED"
    info = build["status_info"]
    assert f"cannot read the package index of {server.url}" in info, info
    assert SECRET_ANSWER not in info and "404" not in info.replace(server.url, ""), info
    assert status == 200 and "cannot read the package index" in log and SECRET_ANSWER not in log


def test_the_default_allow_list_is_conda_stores_plus_the_default_channels() -> None:
    assert EnvstoreSettings().conda_allowed_channels == ["main", "conda-forge", "https://repo.anaconda.com/pkgs/main"]
    settings = EnvstoreSettings(conda_default_channels=["bioconda"])
    for channels, refused in ((["bioconda"], None), (["conda-forge"], None), (["nvidia"], "nvidia")):
        request = SubmissionRequest(specification=environment_yaml("x", ["tinyjson"], channels=channels), namespace="n")
        if refused is None:
            assert build_submission(request, settings).specification["channels"] == channels
        else:
            with pytest.raises(SpecificationError, match=f"{refused} not allowed"):
                build_submission(request, settings)
