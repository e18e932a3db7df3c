"""Every surface where the client reaches it, in each deployment (root, under ``/conda-store``,
behind nginx terminating TLS): the absolute URLs envstore hands out (the UI's API base and login
page, the OpenAPI server, the registry's token realm, login redirects) are the client's own; the UI's
files, live logs and live events come through under the prefix; health probes answer under the
prefix and at the root; and forwarded headers from a peer that is not a trusted proxy change nothing."""

from __future__ import annotations

import asyncio
import base64
import json
import re

import aiohttp
import pytest

from envstore.common.registry_tokens import ANONYMOUS_REGISTRY_TOKEN, REGISTRY_SERVICE
from envstore.launcher.stack import EmbeddedStack
from tests.api.conftest import USERNAME, PASSWORD, StalledChannel, World, fresh, stalled_build
from tests.api_client import ApiClient, environment_yaml
from tests.deployments import Deployment
from tests.events.sse_client import live_events

pytestmark = pytest.mark.every_deployment

CONFIG = re.compile(r"window\.condaStoreConfig = (\{.*?\});", re.DOTALL)
# Loopback, but no deployment trusts it as a proxy (the proxy deployment trusts 127.0.0.1 only).
UNTRUSTED_LOOPBACK = "127.0.0.2"


def ui_config(page: str) -> dict[str, str]:
    match = CONFIG.search(page)
    assert match, page[:500]
    return json.loads(match[1])


def client_session(url: str, **options) -> aiohttp.ClientSession:  # type: ignore[no-untyped-def]
    # The proxy's certificate is the test's own; the conda-store CLI's run checks it.
    connector = aiohttp.TCPConnector(ssl=False) if url.startswith("https:") else None
    return aiohttp.ClientSession(connector=connector, **options)


async def test_the_ui_is_pointed_at_the_url_the_client_used(anonymous: ApiClient, world: World) -> None:
    status, page = await anonymous.get("/ui/")
    assert status == 200

    config = ui_config(page)
    assert config["REACT_APP_API_URL"] == f"{world.url}/"
    assert config["REACT_APP_LOGIN_PAGE_URL"] == f"{world.url}/login/?next="
    assert config["REACT_APP_URL_BASENAME"] == anonymous.path("/ui")
    script = re.search(r'<script defer src="([^"]+)"', page)
    assert script and script[1] == anonymous.path("/static/conda-store-ui/main.js")
    async with anonymous.session.get(script[1]) as response:
        assert response.status == 200
        assert response.content_type in ("application/javascript", "text/javascript")
        assert len(await response.read()) > 100_000
    async with anonymous.raw("GET", "/", allow_redirects=False) as response:
        assert (response.status, response.headers["Location"]) == (302, anonymous.path("/ui/"))


async def test_openapi_names_the_server_the_client_used(anonymous: ApiClient, world: World) -> None:
    status, document = await anonymous.get("/openapi.json")
    assert status == 200
    assert document["servers"] == [{"url": world.url}]
    assert "/api/v1/build/{build_id}/" in document["paths"]


async def test_login_accepts_a_next_url_on_the_clients_origin_only(world: World) -> None:
    async with ApiClient(world.url) as client:
        own = f"{world.url}/ui/default/name1"
        # The second query ends in "/", which conda-store's CLI appends and envstore strips.
        for wanted, expected in ((own, own), ("https://elsewhere.example/ui/", client.path("/"))):
            async with client.raw(
                "POST", "/login/", params={"next": wanted}, json={"username": USERNAME, "password": PASSWORD}
            ) as response:
                assert response.status == 200
                assert (await response.json())["data"]["redirect_url"] == expected, wanted
                # Over HTTPS (the proxy's), the session cookie is never sent in clear text.
                assert bool(response.cookies["conda-store-auth"]["secure"]) == world.url.startswith("https:")


async def test_health_probes_answer_under_the_prefix_and_at_the_root(anonymous: ApiClient, world: World) -> None:
    for path in ("/healthz", "/readyz"):
        status, text = await anonymous.get(path)
        assert status == 200, (path, text)
    assert (await anonymous.get("/readyz"))[1] == "ready\n"
    # Probes from inside (an orchestrator's) need not know the prefix.
    async with aiohttp.ClientSession() as http:
        for url in (f"{world.stack.api_origin}/readyz", f"{world.stack.registry_url}/readyz"):
            async with http.get(url) as response:
                assert (response.status, await response.text()) == (200, "ready\n"), url


async def test_the_registry_sends_clients_to_a_token_realm_they_can_reach(
    world: World, deployment: Deployment
) -> None:
    registry = deployment.registry_url(world.stack)
    async with client_session(registry) as http:
        # Anonymous callers may not read namespace1: the registry asks them to log in.
        async with http.get(f"{registry}/v2/namespace1/name3/manifests/latest") as response:
            assert response.status == 401
            challenge = response.headers["WWW-Authenticate"]
        realm = f"{world.url}/registry/token"
        scope = "repository:namespace1/name3:pull"
        assert challenge == f'Bearer realm="{realm}",service="{REGISTRY_SERVICE}",scope="{scope}"'

        async with http.get(realm, params={"service": REGISTRY_SERVICE, "scope": scope}) as response:
            assert response.status == 200
            assert (await response.json())["token"] == ANONYMOUS_REGISTRY_TOKEN
        basic = base64.b64encode(f"docker-user:{world.stack.admin_token}".encode()).decode()
        async with http.get(realm, headers={"Authorization": f"Basic {basic}"}) as response:
            assert response.status == 200
            answer = await response.json()
        assert answer["token"] == answer["access_token"] and answer["expires_in"] > 0
        async with http.get(f"{registry}/v2/", headers={"Authorization": f"Bearer {answer['token']}"}) as response:
            assert response.status == 200
        wrong = base64.b64encode(b"docker-user:not-a-token").decode()
        async with http.get(realm, headers={"Authorization": f"Basic {wrong}"}) as response:
            assert response.status == 401
            assert (await response.json())["errors"][0]["code"] == "UNAUTHORIZED"


async def test_forwarded_headers_from_an_untrusted_peer_change_nothing(world: World) -> None:
    forged = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "attacker.example", "X-Forwarded-For": "203.0.113.7"}
    direct = f"{world.stack.api_origin}{world.stack.url_prefix}"
    connector = aiohttp.TCPConnector(local_addr=(UNTRUSTED_LOOPBACK, 0))
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.get(f"{direct}/ui/", headers=forged) as response:
            assert response.status == 200
            assert ui_config(await response.text())["REACT_APP_API_URL"] == f"{direct}/"
        async with http.get(f"{world.stack.registry_url}/v2/", headers=forged) as response:
            assert f'realm="{direct}/registry/token"' in response.headers["WWW-Authenticate"]


async def test_a_running_builds_log_streams_through_as_it_is_written(
    bench_admin: ApiClient, stalled_channel: StalledChannel, channel_url: str
) -> None:
    namespace = fresh("live-log")
    build_id = await stalled_build(bench_admin, stalled_channel, channel_url, namespace, "slow")
    async with bench_admin.raw("GET", f"/api/v1/build/{build_id}/logs/") as response:
        assert response.status == 200
        # The build is still solving: this line arrives only if nothing on the way holds the stream.
        first = await asyncio.wait_for(response.content.readline(), 30)
        assert b"[solver] solve: started" in first
        stalled_channel.release()
        rest = await asyncio.wait_for(response.content.read(), 60)
    assert f"build {build_id} ended: FAILED".encode() in rest


async def test_live_events_stream_through(workbench: EmbeddedStack, bench_admin: ApiClient) -> None:
    namespace = fresh("live-events")
    async with live_events(workbench.api_url, workbench.admin_token, namespace=namespace) as stream:
        build_id = await bench_admin.submit(environment_yaml("watched", ["tinyjson"]), namespace=namespace)
        received = await stream.read_until(lambda event: event.build_id == build_id and event.type == "build.completed")
    assert received[0].type == "build.submitted" and received[0].build_id == build_id
