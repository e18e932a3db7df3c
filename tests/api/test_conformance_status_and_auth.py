"""conda-store-api.md §6.1 cases 1–6 (deprecation headers, version, permissions, usage) and the
authentication rules of §0.5, §1.2 and §4.1 (login, logout, cookie before header, Bearer and
Basic, predefined tokens, invalid tokens are anonymous), against the §6.1 world."""

from __future__ import annotations

import base64
import datetime

import jwt
import pytest

from tests.api.conftest import PASSWORD, PREDEFINED_TOKEN, USERNAME, World, logged_in, mint
from tests.api.permission_strings import ADMIN, VIEWER
from tests.api_client import ApiClient

# The same tests at the root, under /conda-store, and behind a TLS-terminating proxy.
pytestmark = pytest.mark.every_deployment

SUNSET = "Mon, 17 Mar 2025 00:00:00 UTC"


async def test_deprecation_warning(anonymous: ApiClient, user: ApiClient, world: World) -> None:
    """Case 1. conda-store's test wraps a throwaway handler; the routes it deprecates are the v1
    environment list and ``/build/{id}/docker/`` (§7.3), whose headers must be there even when the
    answer is an error (conda-store's decorator adds them to any response)."""
    async with anonymous.raw("GET", "/api/v1/environment/") as response:
        assert response.status == 200
        assert response.headers["Deprecation"] == "True"
        assert response.headers["Sunset"] == SUNSET
    async with user.raw("GET", f"/api/v1/build/{world.builds['name1']}/docker/") as response:
        # No build here has an image: conda-store's 400, still deprecated.
        assert response.status == 400
        assert await response.json() == {
            "status": "error",
            "message": f"Build {world.builds['name1']} doesn't have a docker manifest",
        }
        assert response.headers["Deprecation"] == "True"
        assert response.headers["Sunset"] == SUNSET
    async with anonymous.raw("GET", "/api/v2/environment/") as response:
        assert "Deprecation" not in response.headers


async def test_api_version_unauth(anonymous: ApiClient) -> None:
    """Case 2."""
    for path in ("/api/v1/", "/api/v1"):
        status, body = await anonymous.get(path)
        assert status == 200
        assert body == {"status": "ok", "data": {"version": "2025.2.3-dev"}, "message": None}


async def test_api_permissions_unauth(anonymous: ApiClient) -> None:
    """Case 3."""
    status, body = await anonymous.get("/api/v1/permission/")
    assert status == 200
    data = body["data"]
    assert data["authenticated"] is False
    assert data["primary_namespace"] == "default"
    assert data["entity_permissions"] == {"default/*": VIEWER}
    assert data["entity_roles"] == {"default/*": ["viewer"]}
    assert data["expiration"] is None


async def test_api_permissions_auth(user: ApiClient) -> None:
    """Case 4."""
    status, body = await user.get("/api/v1/permission/")
    assert status == 200
    data = body["data"]
    assert data["authenticated"] is True
    assert data["primary_namespace"] == USERNAME
    assert data["entity_permissions"] == {"*/*": ADMIN, "default/*": VIEWER, "filesystem/*": VIEWER}
    assert data["entity_roles"]["*/*"] == ["admin"]
    expiration = datetime.datetime.fromisoformat(data["expiration"].replace("Z", "+00:00"))
    # conda-store: a login token lives one day.
    remaining = expiration - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(hours=23) < remaining <= datetime.timedelta(days=1)


async def test_get_usage_unauth(anonymous: ApiClient) -> None:
    """Case 5: rows only for namespaces the caller can see."""
    status, body = await anonymous.get("/api/v1/usage/")
    assert status == 200
    assert body["status"] == "ok" and body["message"] is None
    assert set(body["data"]) == {"default"}
    assert body["data"]["default"]["num_environments"] == 2
    assert body["data"]["default"]["num_builds"] == 2
    assert body["data"]["default"]["storage"] > 0


async def test_get_usage_auth(user: ApiClient) -> None:
    """Case 6."""
    status, body = await user.get("/api/v1/usage/")
    assert status == 200
    assert set(body["data"]) == {"default", "namespace1", "namespace2"}
    assert {name: row["num_environments"] for name, row in body["data"].items()} == {
        "default": 2,
        "namespace1": 1,
        "namespace2": 1,
    }


# --- §1.2 login / logout and §4.1 token sources --------------------------------------------------


async def test_login_with_the_wrong_password_is_refused(world: World) -> None:
    async with ApiClient(world.url) as client:
        status, body = await client.request("POST", "/login/", json={"username": USERNAME, "password": "wrong"})
        assert status == 403
        assert body == {"status": "error", "message": "Invalid authentication credentials"}
        status, body = await client.get("/api/v1/permission/")
        assert body["data"]["authenticated"] is False


async def test_login_sets_conda_store_cookie_and_logout_clears_it(world: World) -> None:
    async with ApiClient(world.url) as client:
        somewhere = client.path("/ui/somewhere")
        async with client.raw(
            "POST", f"/login/?next={somewhere}", json={"username": USERNAME, "password": PASSWORD}
        ) as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok", "data": {"redirect_url": somewhere}, "message": None}
            cookie = response.cookies["conda-store-auth"]
            assert cookie["httponly"]
            assert cookie["samesite"].lower() == "strict"
            assert 23 * 3600 < int(cookie["max-age"]) <= 24 * 3600
        status, body = await client.get("/api/v1/namespace/namespace1/")
        assert status == 200
        bye = client.path("/ui/bye")
        async with client.raw("POST", f"/logout/?next={bye}", allow_redirects=False) as response:
            assert response.status == 303
            assert response.headers["Location"] == bye
        assert "conda-store-auth" not in {cookie.key for cookie in client.session.cookie_jar}
        status, body = await client.get("/api/v1/namespace/namespace1/")
        assert status == 403


async def test_login_form_is_served(anonymous: ApiClient) -> None:
    async with anonymous.raw("GET", "/login/?next=/ui/") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        assert "password" in await response.text()


async def test_cookie_is_read_before_the_authorization_header(world: World) -> None:
    """§0.5: when the cookie is present the header is ignored."""
    viewer_of_namespace2 = await mint(world.stack, {"namespace2/*": ["viewer"]})
    async with logged_in(world.url) as client:
        status, body = await client.get(
            "/api/v1/permission/", headers={"Authorization": f"Bearer {viewer_of_namespace2}"}
        )
        assert body["data"]["primary_namespace"] == USERNAME
        assert "*/*" in body["data"]["entity_roles"]


async def test_bearer_and_basic_carry_the_same_token(world: World) -> None:
    token = await mint(world.stack, {"namespace2/*": ["viewer"]}, primary_namespace="namespace2")
    basic = base64.b64encode(f"anyone:{token}".encode()).decode()
    async with ApiClient(world.url) as client:
        for header in (f"Bearer {token}", f"Basic {basic}"):
            status, body = await client.get("/api/v1/namespace/namespace2/", headers={"Authorization": header})
            assert status == 200, header
            status, body = await client.get("/api/v1/namespace/namespace1/", headers={"Authorization": header})
            assert status == 403, header


async def test_predefined_token_is_accepted_as_bearer_basic_and_cookie(world: World) -> None:
    """§4.1: a raw predefined token works without JWT decoding, in every place a token goes."""
    basic = base64.b64encode(f"service:{PREDEFINED_TOKEN}".encode()).decode()
    async with ApiClient(world.url) as client:
        for options in (
            {"headers": {"Authorization": f"Bearer {PREDEFINED_TOKEN}"}},
            {"headers": {"Authorization": f"Basic {basic}"}},
            {"cookies": {"conda-store-auth": PREDEFINED_TOKEN}},
        ):
            status, body = await client.get("/api/v1/permission/", **options)
            assert status == 200
            assert body["data"]["authenticated"] is True, options
            assert body["data"]["primary_namespace"] == "namespace1"
            assert body["data"]["entity_roles"]["namespace1/*"] == ["viewer"]
            # exp defaults to a day from now on each request.
            assert body["data"]["expiration"] is not None
            status, _ = await client.get("/api/v1/environment/namespace1/name3/", **options)
            assert status == 200
            status, _ = await client.get("/api/v1/environment/namespace2/name4/", **options)
            assert status == 403


async def test_invalid_or_expired_token_is_anonymous_not_401(world: World) -> None:
    """§0.5: bad credentials do not error; the caller is anonymous (403 on protected routes)."""
    async with ApiClient(world.url, token=world.stack.admin_token) as admin:
        status, body = await admin.request("POST", "/api/v1/token/", json={"expiration": "2001-01-01T00:00:00Z"})
        assert status == 200
        expired = body["data"]["token"]
    # Right claims, signed with another key.
    forged = jwt.encode(
        {"exp": 4102444800, "primary_namespace": "namespace1", "role_bindings": {"*/*": ["admin"]}},
        "not-the-server-secret",
        algorithm="HS256",
    )
    async with ApiClient(world.url) as client:
        for token in (expired, forged, "not-a-token"):
            status, body = await client.get("/api/v1/permission/", headers={"Authorization": f"Bearer {token}"})
            assert status == 200
            assert body["data"]["authenticated"] is False, token
            status, body = await client.get(
                "/api/v1/namespace/namespace1/", headers={"Authorization": f"Bearer {token}"}
            )
            assert status == 403
            assert body["status"] == "error"


async def test_every_route_answers_both_slash_forms(user: ApiClient, world: World) -> None:
    """§0.1: both forms answered directly, not through a redirect that would drop credentials."""
    build_id = world.builds["name3"]
    for path in (
        "/api/v1/permission",
        "/api/v1/namespace",
        "/api/v1/namespace/namespace1",
        "/api/v1/environment/namespace1/name3",
        "/api/v2/environment",
        f"/api/v1/build/{build_id}",
        f"/api/v1/build/{build_id}/packages",
        "/api/v1/channel",
        "/api/v1/package",
        "/api/v1/setting",
        "/api/v1/usage",
        "/metrics",
    ):
        for form in (path, path + "/"):
            async with user.raw("GET", form, allow_redirects=False) as response:
                assert response.status == 200, form
    for form in ("/api/v1/namespace/namespace1/roles", "/api/v1/namespace/namespace1/roles/"):
        status, body = await user.get(form)
        assert status == 200 and body["data"] == [], form


async def test_metrics_has_conda_store_lines(anonymous: ApiClient, world: World) -> None:
    """§1.10: one ``conda_store_<key> <value>`` line per key, no auth."""
    status, text = await anonymous.get("/metrics")
    assert status == 200
    values = dict(line.split(" ", 1) for line in text.splitlines() if line.startswith("conda_store_"))
    assert {"conda_store_disk_free", "conda_store_disk_total", "conda_store_disk_usage"} <= set(values)
    assert values["conda_store_environments"] == "4"
    assert values["conda_store_build_completed"] == "4"
    for state in ("queued", "building", "failed", "canceled"):
        assert values[f"conda_store_build_{state}"] == "0"


async def test_openapi_document_describes_the_routes(anonymous: ApiClient) -> None:
    status, document = await anonymous.get("/openapi.json")
    assert status == 200
    assert document["openapi"].startswith("3.")
    assert {"get", "post"} <= set(document["paths"]["/api/v1/specification/"])
    assert "/api/v2/environment/" in document["paths"]
    # The installer is envstore's own; the artifact type keeps conda-store's name.
    installer = document["paths"]["/api/v1/build/{build_id}/installer/"]["get"]["summary"]
    assert "self-extracting shell script" in installer and "CONSTRUCTOR_INSTALLER" in installer
    assert "not made by conda constructor" in installer
