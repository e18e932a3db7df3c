"""Registry authentication as docker clients meet it: the Bearer challenge on ``/v2/`` naming the
API's token realm (skopeo goes through it), an envstore token as password (any user name) or as a
bearer token, 401 for credentials that are not a valid token, 403 for a valid token without read
permission on the environment."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest

from envstore.launcher.stack import EmbeddedStack
from tests.api_client import ApiClient
from tests.registry.conftest import READER_TOKEN, auth, built_image
from tests.registry.oci_tools import Registry, skopeo_copy, skopeo_inspect
from tests.reverse_proxy import NginxProxy


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture(scope="module")
async def images(registry_stack: EmbeddedStack) -> None:
    async with ApiClient(registry_stack.api_url, token=registry_stack.admin_token) as api:
        await built_image(api, "team", "tools", ["tinyjson"])
        await built_image(api, "private", "secrets", ["tinyjson"])


async def error_of(response: aiohttp.ClientResponse) -> tuple[int, str, str]:
    body = await response.json()
    return response.status, body["errors"][0]["code"], body["errors"][0]["message"]


async def test_version_check_challenges_until_a_valid_token_is_sent(
    registry_stack: EmbeddedStack, http: aiohttp.ClientSession
) -> None:
    async with http.get("/v2/") as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == (
            f'Bearer realm="{registry_stack.api_url}/registry/token",service="envstore-registry"'
        )
        assert response.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
        assert (await error_of(response))[1] == "UNAUTHORIZED"
    async with http.get("/v2/", headers=basic("whoever", registry_stack.admin_token)) as response:
        assert response.status == 200 and await response.json() == {}
    async with http.get("/v2/", headers=auth(registry_stack.admin_token)) as response:
        assert response.status == 200
    async with http.get("/v2/", headers=basic("whoever", "not-a-token")) as response:
        assert response.status == 401 and "WWW-Authenticate" in response.headers


async def test_wrong_token_is_401_and_missing_permission_is_403(
    images: None, registry_stack: EmbeddedStack, http: aiohttp.ClientSession
) -> None:
    for headers in (basic("me", "wrong"), auth("wrong"), {"Authorization": "Digest whatever"}):
        async with http.get("/v2/team/tools/manifests/latest", headers=headers) as response:
            status, code, message = await error_of(response)
            assert (status, code) == (401, "UNAUTHORIZED")
            assert "valid envstore token" in message
            assert response.headers["WWW-Authenticate"].startswith('Bearer realm="')

    # The reader may read team/*, not private/*.
    async with http.get("/v2/team/tools/manifests/latest", headers=basic("reader", READER_TOKEN)) as response:
        assert response.status == 200
    async with http.get("/v2/private/secrets/manifests/latest", headers=basic("reader", READER_TOKEN)) as response:
        assert await error_of(response) == (403, "DENIED", "requested access to the resource is denied")
    async with http.head("/v2/private/secrets/manifests/latest", headers=auth(READER_TOKEN)) as response:
        assert response.status == 403
    async with http.get("/v2/private/secrets/tags/list", headers=auth(READER_TOKEN)) as response:
        assert response.status == 403

    # Anonymous callers may not read private/*: 401 with the challenge, so a client logs in.
    async with http.get("/v2/private/secrets/manifests/latest") as response:
        status, code, _ = await error_of(response)
        assert (status, code) == (401, "UNAUTHORIZED") and "WWW-Authenticate" in response.headers
    # Permission is checked before existence: nothing is learnt about names one may not read.
    async with http.get("/v2/private/does-not-exist/manifests/latest", headers=auth(READER_TOKEN)) as response:
        assert response.status == 403
    async with http.get(
        "/v2/team/does-not-exist/manifests/latest", headers=auth(registry_stack.admin_token)
    ) as response:
        assert (await error_of(response))[:2] == (404, "NAME_UNKNOWN")


async def test_skopeo_with_and_without_valid_credentials(
    images: None, registry: Registry, tmp_path: Path
) -> None:
    allowed = skopeo_inspect(registry.reference("team/tools"), f"reader:{READER_TOKEN}")
    assert allowed.returncode == 0, allowed.stderr
    wrong = skopeo_copy(registry.reference("team/tools"), f"oci:{tmp_path / 'wrong'}:tools", "reader:wrong-token")
    assert wrong.returncode != 0 and "unauthorized" in wrong.stderr
    denied = skopeo_copy(registry.reference("private/secrets"), f"oci:{tmp_path / 'denied'}:s", f"reader:{READER_TOKEN}")
    assert denied.returncode != 0 and "denied" in denied.stderr


async def test_catalog_lists_only_readable_repositories(
    images: None, registry_stack: EmbeddedStack, http: aiohttp.ClientSession
) -> None:
    async with http.get("/v2/_catalog", headers=auth(READER_TOKEN)) as response:
        repositories = (await response.json())["repositories"]
    assert "team/tools" in repositories and "private/secrets" not in repositories
    async with http.get("/v2/_catalog", headers=auth(registry_stack.admin_token)) as response:
        assert {"team/tools", "private/secrets"} <= set((await response.json())["repositories"])


async def test_skopeo_pulls_through_a_tls_proxy_getting_its_token_from_the_realm(
    images: None, registry_stack: EmbeddedStack, proxy: NginxProxy, tmp_path: Path
) -> None:
    certificates = tmp_path / "certificates"  # skopeo trusts the *.crt files of this folder
    certificates.mkdir()
    shutil.copyfile(proxy.certificate, certificates / "proxy.crt")
    reference = f"docker://127.0.0.1:{proxy.port}/team/tools:latest"

    copied = subprocess.run(
        ["skopeo", "copy", f"--src-cert-dir={certificates}", f"--src-creds=reader:{READER_TOKEN}",
         reference, f"oci:{tmp_path / 'image'}:tools"],
        capture_output=True, text=True, timeout=120, check=False,
    )

    assert copied.returncode == 0, copied.stderr
    assert json.loads((tmp_path / "image" / "index.json").read_text())["manifests"]
    # The challenge sent skopeo to the realm under the prefix, through the proxy, with its credentials.
    requests = (proxy.directory / "access.log").read_text()
    assert re.search(r'"GET /conda-store/registry/token\?[^"]*scope=repository%3Ateam%2Ftools%3Apull[^"]*" 200', requests), requests
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as http:
        async with http.get(f"{proxy.url}/v2/") as response:
            assert response.headers["WWW-Authenticate"].startswith(f'Bearer realm="{proxy.url}/conda-store/registry/token"')
