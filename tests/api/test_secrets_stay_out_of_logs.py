"""Tokens, passwords and link signatures never reach a log or a trace: a stack that logs at DEBUG
and writes every span to files is sent a token every way a client can send one (Authorization
Bearer and Basic, the cookie, ``?token=`` and ``?jwt=`` query strings, to the API and to the
registry), the login form's password (right and wrong), and a signed artifact link; then every
log and trace file under the stack's data directory is searched for each of them."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from envstore.launcher.stack import EmbeddedStack
from tests.deployments import Deployment
from tests.api.conftest import PASSWORD, fresh, mint, running_stack
from tests.api_client import ApiClient, environment_yaml

WRONG_PASSWORD = "wrong-password-that-must-not-be-logged-5d1c"


@pytest.fixture(scope="module")
async def watched_stack(tmp_path_factory: pytest.TempPathFactory, channel_url: str, deployment: Deployment) -> AsyncIterator[EmbeddedStack]:
    directory = tmp_path_factory.mktemp("secrets-in-logs")
    async with running_stack(
        directory,
        channel_url,
        deployment,
        ENVSTORE_LOG_LEVEL="DEBUG",
        OTEL_TRACES_EXPORTER="envstore-jsonl",
        ENVSTORE_TRACE_DIRECTORY=str(directory / "traces"),
        ENVSTORE_BUILD_ARTIFACTS="LOCKFILE,YAML",
    ) as stack:
        yield stack


def log_and_trace_files(stack: EmbeddedStack) -> list[Path]:
    return [
        path
        for path in stack.data_directory.rglob("*")
        if path.is_file() and (path.suffix in (".log", ".jsonl") or path.parent.name == "logs")
    ]


async def send_every_way(http: aiohttp.ClientSession, base: str, paths: list[str], token: str) -> None:
    basic = base64.b64encode(f"someone:{token}".encode()).decode()
    for path in paths:
        for options in (
            {"headers": {"Authorization": f"Bearer {token}"}},
            {"headers": {"Authorization": f"Basic {basic}"}},
            {"headers": {"Cookie": f"conda-store-auth={token}"}},
            {"params": {"token": token}},
            {"params": {"jwt": token}},
        ):
            async with http.get(base + path, allow_redirects=False, **options) as response:
                await response.read()


async def test_no_token_password_or_signature_is_logged(watched_stack: EmbeddedStack) -> None:
    stack = watched_stack
    namespace = fresh("logged")
    token = await mint(stack, {f"{namespace}/*": ["admin"]}, namespace)
    async with ApiClient(stack.api_url, token=token) as owner:
        build = await owner.wait_for_build(await owner.submit(environment_yaml("quiet", ["tinyjson"]), namespace))
        assert build["status"] == "COMPLETED", build["status_info"]
        await owner.wait_for_artifacts(build["id"], {"LOCKFILE", "LOGS"})
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        await send_every_way(
            http,
            stack.api_url,
            [
                "/api/v1/",
                "/api/v1/permission/",
                f"/api/v1/build/{build['id']}/",
                f"/api/v1/environment/{namespace}/quiet/",
                "/api/v1/build/999999999/",  # 404
                "/no/such/route",  # unmatched
                "/ui/",
            ],
            token,
        )
        await send_every_way(
            http,
            stack.registry_url,
            ["/v2/", "/v2/_catalog", f"/v2/{namespace}/quiet/manifests/latest", "/v2/nobody/nothing/tags/list"],
            token,
        )
        async with http.get(
            f"{stack.api_url}/api/v1/build/{build['id']}/lockfile/",
            headers={"Authorization": f"Bearer {token}"},
            allow_redirects=False,
        ) as response:
            link = response.headers["Location"]
        signature = link.partition("signature=")[2]
        assert len(signature) == 64
        async with http.get(stack.api_url + link) as response:
            assert response.status == 200
        async with http.get(stack.api_url + link.replace(signature, "0" * 64)) as response:
            assert response.status == 403
        for form in (
            {"username": "logger", "password": WRONG_PASSWORD},
            {"username": "logger", "password": PASSWORD},
        ):
            async with http.post(f"{stack.api_url}/login/", data=form, allow_redirects=False) as response:
                await response.read()
                login_cookie = response.cookies.get("conda-store-auth")
        async with http.post(
            f"{stack.api_url}/login/", json={"username": "logger", "password": PASSWORD}, allow_redirects=False
        ) as response:
            assert response.status == 200
    assert login_cookie is not None

    secrets = {
        "minted token": token,
        "login cookie": login_cookie.value,
        "login password": PASSWORD,
        "wrong password": WRONG_PASSWORD,
        "link signature": signature,
        "admin token": stack.admin_token,
        "database writer password": (stack.data_directory / "postgres-writer-password").read_text(),
        "database reader password": (stack.data_directory / "postgres-reader-password").read_text(),
    }
    files = log_and_trace_files(stack)
    names = {path.name for path in files}
    assert {"api.log", "registry.log", "solver.log", "envstore-postgres.log"} <= names, names
    assert any(path.suffix == ".jsonl" for path in files), "no trace file was written"
    everything = ""
    for path in files:
        text = path.read_text(errors="replace")
        everything += text
        for what, secret in secrets.items():
            assert secret not in text, f"the {what} is in {path}"
    # The requests were recorded (so leaving them out is not why nothing was found).
    assert '"GET /v2/_catalog"' in everything  # the registry's access log
    assert "/api/v1/permission/" in everything and "/storage/" in everything  # the API's spans
    assert "DEBUG" in everything
