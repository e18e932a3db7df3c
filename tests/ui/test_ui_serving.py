"""How the API serves conda-store's UI: the page and its settings for every client route, 404 for
the UI's not-found route, the built files, ``/`` to the UI, and the login form's redirects."""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from envstore.api.routes import ui
from envstore.api.routes.paths import Routes
from envstore.api.context import SETTINGS
from envstore.api.ui_shell import shell_config, shell_page
from envstore.common.settings import EnvstoreSettings
from envstore.launcher.stack import EmbeddedStack
from tests.ui.conftest import PASSWORD

CONFIG = re.compile(r"window\.condaStoreConfig = (\{.*?\});", re.DOTALL)


def page_config(page: str) -> dict[str, str]:
    match = CONFIG.search(page)
    assert match, page
    return json.loads(match.group(1))


async def test_root_and_bare_ui_path_lead_to_the_ui(stack: EmbeddedStack) -> None:
    async with aiohttp.ClientSession(stack.api_url) as http:
        for path in ("/", "/ui"):
            async with http.get(path, allow_redirects=False) as response:
                assert response.status == 302
                assert response.headers["Location"] == "/ui/"


async def test_every_client_route_gets_the_page_with_its_settings(stack: EmbeddedStack, ui_files: Path) -> None:
    async with aiohttp.ClientSession(stack.api_url) as http:
        for path in ("/ui/", "/ui/some-namespace/some-environment", "/ui/some-namespace/new-environment"):
            async with http.get(path) as response:
                assert response.status == 200, path
                assert response.content_type == "text/html"
                assert response.headers["Cache-Control"] == "no-store"
                page = await response.text()
            assert '<script defer src="/static/conda-store-ui/main.js"></script>' in page
            assert page_config(page) == {
                "REACT_APP_API_URL": f"{stack.api_url}/",
                "REACT_APP_AUTH_METHOD": "cookie",
                "REACT_APP_AUTH_TOKEN": "",
                # Absolute: the UI would put its API URL in front of a relative one.
                "REACT_APP_LOGIN_PAGE_URL": f"{stack.api_url}/login/?next=",
                "REACT_APP_LOGOUT_PAGE_URL": f"{stack.api_url}/logout/?next=/ui/",
                "REACT_APP_URL_BASENAME": "/ui",
                "REACT_APP_ROUTER_TYPE": "browser",
                "REACT_APP_STYLE_TYPE": "green-accent",
                "REACT_APP_SHOW_AUTH_BUTTON": "true",
            }


async def test_pages_allow_only_their_own_scripts_and_no_framing(stack: EmbeddedStack, ui_files: Path) -> None:
    """The UI page runs its bundle and its one inline script (by a nonce new on every answer);
    the login form runs nothing; no page may be framed or have its type sniffed. (That the UI
    still works under this policy is shown in Chromium by test_environment_journey, where a
    refused script or style would be a console error.)"""
    async with aiohttp.ClientSession(stack.api_url) as http:
        nonces = set()
        for _ in range(2):
            async with http.get("/ui/") as response:
                policy = response.headers["Content-Security-Policy"]
                page = await response.text()
            nonce = re.search(r"'nonce-([^']+)'", policy)
            assert nonce and f'<script nonce="{nonce.group(1)}">' in page
            nonces.add(nonce.group(1))
            directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
            assert directives["script-src"] == f"'self' 'nonce-{nonce.group(1)}'"  # no 'unsafe-inline', no eval
            assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["X-Frame-Options"] == "DENY"
        assert len(nonces) == 2
        async with http.get("/login/") as response:
            policy = response.headers["Content-Security-Policy"]
            assert "script-src" not in policy and "default-src 'none'" in policy
            assert "frame-ancestors 'none'" in policy and "form-action 'self'" in policy
            assert re.search(r"<style nonce=\"[^\"]+\">", await response.text())
            assert response.headers["X-Frame-Options"] == "DENY"
        for path in ("/api/v1/", "/api/v1/build/999999/", "/static/conda-store-ui/main.js"):
            async with http.get(path) as response:
                assert response.headers["X-Content-Type-Options"] == "nosniff", path
                assert response.headers["Content-Security-Policy"].startswith("default-src 'none'"), path


async def test_the_uis_not_found_route_answers_404_with_the_page(stack: EmbeddedStack, ui_files: Path) -> None:
    async with aiohttp.ClientSession(stack.api_url) as http:
        for path in ("/ui/not-found", "/ui/not-found/", "/ui/a/b/not-found"):
            async with http.get(path) as response:
                assert response.status == 404, path
                assert "window.condaStoreConfig" in await response.text()


async def test_the_built_files_are_served_compressed_and_revalidated(stack: EmbeddedStack, ui_files: Path) -> None:
    size = (ui_files / "main.js").stat().st_size
    async with aiohttp.ClientSession(stack.api_url, auto_decompress=False) as http:
        async with http.get("/static/conda-store-ui/main.js", headers={"Accept-Encoding": "gzip"}) as response:
            assert response.status == 200
            assert response.content_type in ("application/javascript", "text/javascript")
            assert response.headers["Content-Encoding"] == "gzip"
            assert int(response.headers["Content-Length"]) < size / 2
            assert response.headers["Cache-Control"] == "no-cache"
            etag = response.headers["ETag"]
        async with http.get("/static/conda-store-ui/main.js", headers={"If-None-Match": etag}) as response:
            assert response.status == 304
        async with http.get("/static/conda-store-ui/main.css") as response:
            assert response.status == 200 and response.content_type == "text/css"
        async with http.get("/static/conda-store-ui/LICENSE") as response:
            assert "BSD 3-Clause License" in await response.text()
        for name in ("main.js.map", "..%2F..%2Fapp.py", "VERSIONS"):
            async with http.get(f"/static/conda-store-ui/{name}") as response:
                assert response.status == 404, name


async def test_the_login_form_sends_a_browser_on_to_next_on_this_server(stack: EmbeddedStack) -> None:
    form = {"username": "form-user", "password": PASSWORD}
    # unsafe: keep cookies of a server named by IP address.
    async with aiohttp.ClientSession(stack.api_url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post("/login/?next=/ui/form-user/env", data=form, allow_redirects=False) as response:
            assert response.status == 303
            assert response.headers["Location"] == "/ui/form-user/env"
            assert "conda-store-auth" in response.cookies
        async with http.get("/api/v1/permission/") as response:
            assert (await response.json())["data"]["primary_namespace"] == "form-user"
        own = f"{stack.api_url}/ui/form-user/env"
        for wanted, expected in (
            (own, own),
            ("https://elsewhere.example/", "/"),
            ("//elsewhere.example/x", "/"),
            ("/\\elsewhere.example", "/"),
        ):
            async with http.post("/login/", params={"next": wanted}, data=form, allow_redirects=False) as response:
                assert response.headers.get("Location") == expected, (wanted, response.status, await response.text())
    async with aiohttp.ClientSession(stack.api_url) as http:
        wrong = {**form, "password": "wrong"}
        async with http.post("/login/?next=/ui/", data=wrong, allow_redirects=False) as response:
            assert response.status == 403
            assert response.content_type == "text/html"
            assert "Invalid authentication credentials" in await response.text()
            assert "conda-store-auth" not in response.cookies


def test_token_mode_puts_the_token_in_the_page_and_hides_the_login_button() -> None:
    settings = EnvstoreSettings(ui_auth_method="token", ui_auth_token="secret</script>", ui_style="grayscale")
    config = shell_config(settings, "https://example.org/conda-store", "/conda-store")
    assert config["REACT_APP_AUTH_METHOD"] == "token"
    assert config["REACT_APP_AUTH_TOKEN"] == "secret</script>"
    assert config["REACT_APP_SHOW_AUTH_BUTTON"] == "false"
    assert config["REACT_APP_API_URL"] == "https://example.org/conda-store/"
    assert config["REACT_APP_URL_BASENAME"] == "/conda-store/ui"
    assert config["REACT_APP_STYLE_TYPE"] == "grayscale"
    page = shell_page(config, "/conda-store/static/conda-store-ui", "a-nonce")
    # No value can end the script element early.
    assert page.count("</script>") == 2
    assert page_config(page)["REACT_APP_AUTH_TOKEN"] == "secret</script>"
    cookie_mode = shell_config(EnvstoreSettings(ui_auth_token="unused"), "http://h", "")
    assert cookie_mode["REACT_APP_AUTH_TOKEN"] == ""


async def test_without_the_ui_files_the_page_says_how_to_get_them(tmp_path: Path) -> None:
    app = web.Application()
    app[SETTINGS] = EnvstoreSettings(ui_directory=tmp_path)
    ui.register(Routes(app, "/conda-store"))
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/conda-store/ui/ns/env")
        assert response.status == 503
        assert "scripts/fetch-ui.sh" in await response.text()
        response = await client.get("/conda-store/", allow_redirects=False)
        assert response.headers["Location"] == "/conda-store/ui/"
