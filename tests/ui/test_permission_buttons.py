"""The UI's "New" and "Edit" buttons follow the user's roles, namespace by namespace, with the UI
in token mode (an API replica serving it with ``ENVSTORE_UI_AUTH_METHOD=token``).

conda-store-ui enables "New" for a namespace when ``entity_permissions["<ns>/*"]`` holds
``namespace::create`` and "Edit" when it holds ``environment::update``; any ``"*/*"`` key enables
both everywhere. The user here is an admin of one namespace, a developer of another and a viewer
of every namespace (``"*/*": ["viewer"]``, which conda-store would answer as a "*/*" key)."""

from __future__ import annotations

import signal

from playwright.async_api import Browser, Request, expect

from envstore.launcher.stack import EmbeddedStack
from tests.api_client import ApiClient, environment_yaml
from tests.ui.conftest import mint_token, start_api_replica
from tests.ui.watched_browser import WatchedPage

OWN, TEAM, VIEW, OTHER = "perm-own", "perm-team", "perm-view", "perm-other"
BINDINGS = {"*/*": ["viewer"], f"{OWN}/*": ["admin"], f"{TEAM}/*": ["developer"], f"{VIEW}/*": ["viewer"]}
# (New enabled, Edit enabled) per namespace.
EXPECTED_BUTTONS = {OWN: (True, True), TEAM: (False, True), VIEW: (False, False), OTHER: (False, False)}


async def seed(admin: ApiClient) -> None:
    builds = [
        await admin.submit(environment_yaml("tools", ["hello"]), namespace=namespace)
        for namespace in (OWN, TEAM, VIEW, OTHER)
    ]
    for build_id in builds:
        assert (await admin.wait_for_build(build_id, 120))["status"] == "COMPLETED"


async def test_entity_permissions_answer_what_the_uis_buttons_read(stack: EmbeddedStack, admin: ApiClient) -> None:
    await seed(admin)
    token = await mint_token(admin, OWN, BINDINGS)
    async with ApiClient(stack.api_url, token=token) as user:
        status, body = await user.get("/api/v1/permission/")
    assert status == 200
    permissions = body["data"]["entity_permissions"]
    # A "*/*" that grants neither button's right is left out: the UI would enable both everywhere.
    assert "*/*" not in permissions
    assert body["data"]["entity_roles"]["*/*"] == ["viewer"]
    for namespace, (can_create, can_update) in EXPECTED_BUTTONS.items():
        held = permissions[f"{namespace}/*"]
        assert ("namespace::create" in held) is can_create, namespace
        assert ("environment::update" in held) is can_update, namespace
    # With "*/*" as a viewer, every namespace is listed, each with what is held there.
    assert permissions[f"{OTHER}/*"] == ["environment::read", "namespace-role-mapping::read", "namespace::read"]


async def test_new_and_edit_buttons_follow_the_roles_in_token_mode(
    browser: Browser, stack: EmbeddedStack, admin: ApiClient
) -> None:
    await seed(admin)
    token = await mint_token(admin, OWN, BINDINGS)
    replica = await start_api_replica(
        stack, "api-ui-token-mode", {"ENVSTORE_UI_AUTH_METHOD": "token", "ENVSTORE_UI_AUTH_TOKEN": token}
    )
    watched = await WatchedPage.open(browser, "test_permission_buttons")
    page = watched.page
    api_requests: list[Request] = []
    page.on("request", lambda request: api_requests.append(request) if "/api/v1/" in request.url else None)
    try:
        await page.goto(f"{replica.url}/ui/")
        await expect(page.get_by_text("Shared Environments")).to_be_visible()
        # Token mode: no login button, and every API call carries the token.
        await expect(page.get_by_role("button", name="Log in")).to_have_count(0)
        await expect(page.get_by_role("button", name="Log out")).to_have_count(0)
        for namespace, (can_create, _) in EXPECTED_BUTTONS.items():
            new = page.locator(f'a[href="/ui/{namespace}/new-environment"]')
            await expect(new).to_have_attribute("aria-disabled", "false" if can_create else "true")
            await page.get_by_text(namespace, exact=True).click()  # accordions start collapsed
        await watched.snap("sidebar-new-buttons")

        for namespace, (_, can_update) in EXPECTED_BUTTONS.items():
            await page.locator(f'a[href="/ui/{namespace}/tools"]').click()
            await page.wait_for_url(f"**/ui/{namespace}/tools")
            await expect(page.get_by_text("Installed Packages")).to_be_visible()
            edit = page.get_by_role("button", name="Edit", exact=True)
            if can_update:
                await expect(edit).to_be_enabled()
            else:
                await expect(edit).to_be_disabled()
            await watched.snap(f"edit-button-{namespace}")

        assert api_requests
        assert all(request.headers.get("authorization") == f"Bearer {token}" for request in api_requests)
        watched.assert_clean()
    finally:
        await watched.close()
        await replica.process.stop(signal.SIGTERM)
