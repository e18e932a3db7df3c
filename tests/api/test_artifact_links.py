"""Artifact links of local storage as an outsider tries them: a private build's logs, lockfile,
YAML, archive and installer are reached through the API's routes (permission checked, then a
307 to a signed link that expires); the link itself works without a token until it expires, and
anonymous, expired, tampered and other-namespace requests are refused."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from envstore.api.artifact_links import ArtifactLinks
from envstore.common.settings import EnvstoreSettings
from envstore.launcher.stack import EmbeddedStack
from tests.api.conftest import fresh, mint
from tests.api_client import ApiClient, environment_yaml

ROUTES = {"LOGS": "logs/", "LOCKFILE": "lockfile/", "YAML": "yaml/", "CONDA_PACK": "archive/", "CONSTRUCTOR_INSTALLER": "installer/"}
# What each artifact's first bytes are, so a served answer is known to be the artifact.
STARTS = {"LOGS": b"", "LOCKFILE": b"", "YAML": b"", "CONDA_PACK": b"\x1f\x8b", "CONSTRUCTOR_INSTALLER": b"#!"}


@dataclass(frozen=True)
class PrivateBuild:
    stack: EmbeddedStack
    namespace: str
    build_id: int
    keys: dict[str, str]  # artifact kind -> storage key
    owner_token: str
    stranger_token: str  # admin of another namespace


@pytest.fixture(scope="module")
async def private_build(workbench: EmbeddedStack) -> AsyncIterator[PrivateBuild]:
    namespace = fresh("secret")
    async with ApiClient(workbench.api_url, token=workbench.admin_token) as admin:
        build = await admin.wait_for_build(await admin.submit(environment_yaml("vault", ["tinyjson"]), namespace))
        assert build["status"] == "COMPLETED", build["status_info"]
        build = await admin.wait_for_artifacts(build["id"], set(ROUTES))
    keys = {artifact["artifact_type"]: artifact["key"] for artifact in build["build_artifacts"]}
    yield PrivateBuild(
        workbench,
        namespace,
        build["id"],
        keys,
        owner_token=await mint(workbench, {f"{namespace}/*": ["viewer"]}, namespace),
        stranger_token=await mint(workbench, {f"{fresh('stranger')}/*": ["admin"]}),
    )


async def fetch(stack: EmbeddedStack, path: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request without cookies or redirects, as a pasted link or a script makes it."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(stack.api_url, cookie_jar=aiohttp.DummyCookieJar()) as http:
        async with http.get(path, headers=headers, allow_redirects=False) as response:
            return response.status, dict(response.headers), await response.read()


async def signed_link(private: PrivateBuild, kind: str) -> str:
    status, headers, body = await fetch(private.stack, f"/api/v1/build/{private.build_id}/{ROUTES[kind]}", private.owner_token)
    assert status == 307, body
    return headers["Location"]


@pytest.mark.parametrize("kind", list(ROUTES))
async def test_a_reader_downloads_through_a_signed_link(private_build: PrivateBuild, kind: str) -> None:
    link = await signed_link(private_build, kind)
    assert urlsplit(link).path == f"/storage/{private_build.keys[kind]}"
    query = parse_qs(urlsplit(link).query)
    expires = int(query["expires"][0])
    assert time.time() < expires <= time.time() + EnvstoreSettings().storage_url_seconds + 5

    # The link is enough on its own: no token, no cookie (a browser tab, the conda-store CLI).
    status, headers, body = await fetch(private_build.stack, link)
    assert status == 200, body
    assert body.startswith(STARTS[kind]) and len(body) > 0
    assert "no-store" in headers["Cache-Control"]


@pytest.mark.parametrize("kind", list(ROUTES))
async def test_outsiders_are_refused(private_build: PrivateBuild, kind: str) -> None:
    stack, key = private_build.stack, private_build.keys[kind]
    link = await signed_link(private_build, kind)
    path, _, query = link.partition("?")
    expires = parse_qs(query)["expires"][0]
    signature = parse_qs(query)["signature"][0]
    other_key = next(other for other_kind, other in private_build.keys.items() if other_kind != kind)
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    secret = (stack.data_directory / "storage-url-secret").read_text()
    # Signed with the server's own secret, but an hour ago: long expired.
    an_hour_ago = ArtifactLinks(secret.encode(), 600, clock=lambda: time.time() - 3600).link("/storage", key)

    refused = {
        "anonymous, unsigned": (f"/storage/{key}", None),
        "another namespace's admin, unsigned": (f"/storage/{key}", private_build.stranger_token),
        "another namespace's admin, API route": (f"/api/v1/build/{private_build.build_id}/{ROUTES[kind]}", private_build.stranger_token),
        "anonymous, API route": (f"/api/v1/build/{private_build.build_id}/{ROUTES[kind]}", None),
        "expired": (an_hour_ago, None),
        "signature tampered": (f"{path}?expires={expires}&signature={flipped}", None),
        "expiry extended": (f"{path}?expires={int(expires) + 86400}&signature={signature}", None),
        "signature of another artifact": (f"/storage/{other_key}?expires={expires}&signature={signature}", None),
        "signature without expiry": (f"{path}?signature={signature}", None),
    }
    for case, (request_path, token) in refused.items():
        status, _, body = await fetch(stack, request_path, token)
        assert status == 403, (case, status, body[:200])
        assert STARTS[kind] == b"" or not body.startswith(STARTS[kind]), case
    status, _, body = await fetch(stack, an_hour_ago)
    assert b"expired" in body
    status, _, body = await fetch(stack, f"/storage/{key}")
    assert b"GET /api/v1/build/<id>/<artifact>/" in body  # says how to get a link


async def test_a_reader_token_still_opens_the_unsigned_path(private_build: PrivateBuild) -> None:
    status, _, body = await fetch(private_build.stack, f"/storage/{private_build.keys['LOCKFILE']}", private_build.owner_token)
    assert status == 200 and b"package" in body


async def test_unknown_keys_answer_outsiders_as_existing_ones_do(private_build: PrivateBuild) -> None:
    """An outsider cannot tell which keys exist."""
    missing = private_build.keys["CONDA_PACK"].replace("archive/", "archive/0")
    assert (await fetch(private_build.stack, f"/storage/{missing}"))[0] == 403
    assert (await fetch(private_build.stack, f"/storage/{missing}", private_build.stack.admin_token))[0] == 404
