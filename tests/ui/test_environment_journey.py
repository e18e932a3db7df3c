"""A user's whole day in conda-store's web UI, served by envstore, in headless Chromium: log in,
find namespaces and environments, create an environment and watch it build, read its installed
packages, open every artifact, edit it (a new build), switch back to the first build, delete it,
log out. Each step leaves a screenshot in tests/screenshots/test_environment_journey/."""

from __future__ import annotations

import json
import re
import tarfile

from playwright.async_api import Browser, Page, expect

from envstore.launcher.stack import EmbeddedStack
from tests.api_client import ApiClient, environment_yaml
from tests.ui.conftest import PASSWORD
from tests.ui.watched_browser import WatchedPage

USER = "ui-alice"  # the password backend makes the user's name their primary namespace
SHARED = "ui-shared"
ENVIRONMENT = "analysis"
EVERY_ARTIFACT = ["LOCKFILE", "YAML", "LOGS", "CONDA_PACK", "DOCKER_MANIFEST"]
BUILD_SECONDS = 120


async def seed(admin: ApiClient) -> None:
    """Another team's environment to find, and every artifact kind for the user's builds."""
    build_id = await admin.submit(environment_yaml("tools", ["hello"]), namespace=SHARED)
    assert (await admin.wait_for_build(build_id, BUILD_SECONDS))["status"] == "COMPLETED"
    status, body = await admin.request("PUT", f"/api/v1/setting/{USER}/", json={"build_artifacts": EVERY_ARTIFACT})
    assert status == 200, body
    # The other team lets the user read its namespace (a v1 role mapping: held by every token
    # whose primary namespace is the user's); a login alone reaches only the user's own and default.
    assert (await admin.request("POST", f"/api/v1/namespace/{USER}/"))[0] in (200, 409)
    status, body = await admin.request("PUT", f"/api/v1/namespace/{USER}/", json={"role_mappings": {f"{SHARED}/*": ["viewer"]}})
    assert status == 200, body

# conda-store-ui copies the environment name field into its form state 300 ms after the last key.
NAME_DEBOUNCE_MILLISECONDS = 300


async def wait_until_built(page: Page, build_id: int) -> list[str]:
    """The build-status line until it says Completed (the UI polls every 5 s); what it showed."""
    status = page.get_by_test_id("build-status")
    seen: list[str] = []
    for _ in range(BUILD_SECONDS * 10):
        text = (await status.inner_text()) if await status.count() else ""
        if text and (not seen or seen[-1] != text):
            seen.append(text)
        if "Completed" in text and await page.get_by_text(f"Show Conda environment {build_id} log").count():
            return seen
        assert "Failed" not in text, seen
        await page.wait_for_timeout(100)
    raise AssertionError(f"build {build_id} not shown as Completed with its artifacts; the UI showed {seen}")


async def open_artifact(watched: WatchedPage, link_name: str, step: str) -> str:
    """Click an artifact link (it opens a new tab, through the API's redirect to storage)."""
    async with watched.page.expect_popup() as opened:
        await watched.page.get_by_role("link", name=link_name).click()
    tab = await opened.value
    await tab.wait_for_load_state()
    text = await tab.locator("body").inner_text()
    await watched.snap(step, tab)
    await tab.close()
    return text


async def test_environment_journey(browser: Browser, stack: EmbeddedStack, admin: ApiClient) -> None:
    await seed(admin)
    watched = await WatchedPage.open(browser, "test_environment_journey")
    page = watched.page
    # The page's timers run on a clock the test can move on (time still flows as usual).
    await page.clock.install()
    try:
        # --- log in with the UI's own button and conda-store's password form ---------------
        await page.goto(f"{stack.api_url}/")
        await expect(page).to_have_url(f"{stack.api_url}/ui/")
        await expect(page.get_by_role("button", name="Log in")).to_be_visible()
        await watched.snap("anonymous")
        await page.get_by_role("button", name="Log in").click()
        await page.wait_for_url("**/login/**")
        await page.get_by_label("username").fill(USER)
        await page.get_by_label("password").fill(PASSWORD)
        await watched.snap("login-form")
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(re.compile(r"/ui/?$"))
        await expect(page.get_by_role("button", name="Log out")).to_be_visible()

        # --- namespaces and environments -------------------------------------------------------
        await expect(page.get_by_text("Shared Environments")).to_be_visible()
        await page.get_by_text(SHARED, exact=True).click()  # accordions start collapsed
        await expect(page.get_by_role("link", name="tools")).to_be_visible()
        await expect(page.get_by_text(USER, exact=True)).to_be_visible()
        await watched.snap("namespaces-and-environments")

        # --- create an environment in the user's namespace ----------------------------------
        new = page.locator(f'a[href="/ui/{USER}/new-environment"]')
        assert await new.get_attribute("aria-disabled") == "false"
        await new.click()
        await page.get_by_text("+ Add Package").click()
        await page.get_by_label("Enter package").fill("hello")
        await page.get_by_role("option", name="hello", exact=True).click()  # from /api/v1/package/
        # A refused request shows the server's message (the error envelope's "message").
        watched.expect_status(r"/api/v1/specification/$", 400)
        await page.get_by_label("Environment name").fill("no spaces")
        await page.clock.run_for(NAME_DEBOUNCE_MILLISECONDS)  # the name reaches the form's state
        await page.get_by_role("button", name="Create", exact=True).click()
        await expect(page.get_by_role("alert")).to_contain_text("environment name 'no spaces' may only contain")
        await watched.snap("create-refused")
        await page.get_by_label("Environment name").fill(ENVIRONMENT)
        await page.clock.run_for(NAME_DEBOUNCE_MILLISECONDS)
        await watched.snap("create-form")
        async with page.expect_response(lambda r: r.url.endswith("/api/v1/specification/")) as created:
            await page.get_by_role("button", name="Create", exact=True).click()
        first_build = (await (await created.value).json())["data"]["build_id"]
        await page.wait_for_url(f"**/ui/{USER}/{ENVIRONMENT}")
        await watched.snap("building")
        seen = await wait_until_built(page, first_build)
        assert "Completed" in seen[-1], seen
        await watched.snap("build-completed")

        # --- installed packages ----------------------------------------------------------------
        status, body = await admin.get(f"/api/v1/build/{first_build}/packages/")
        installed = sorted(package["name"] for package in body["data"])
        assert {"hello", "libhello"} <= set(installed), installed
        await expect(page.get_by_text("Installed Packages")).to_be_visible()
        for name in installed:
            await expect(page.get_by_text(name, exact=True).last).to_be_visible()
        await page.get_by_text("Logs and Artifacts").scroll_into_view_if_needed()
        await watched.snap("installed-packages-and-artifacts")

        # --- every artifact link opens the real artifact ----------------------------------------
        lockfile = json.loads(await open_artifact(watched, "Show lockfile", "artifact-lockfile"))
        assert lockfile["version"] == 1
        assert {"hello", "libhello"} <= {package["name"] for package in lockfile["package"]}
        pinned = await open_artifact(watched, "Show yml file", "artifact-yaml")
        assert f"name: {ENVIRONMENT}" in pinned and "hello=" in pinned
        log = await open_artifact(watched, f"Show Conda environment {first_build} log", "artifact-log")
        assert "solve" in log and "install" in log, log
        image = await open_artifact(watched, "Show Docker image", "artifact-docker-image")
        assert re.fullmatch(rf"\S+/{USER}/{ENVIRONMENT}:\S+", image.strip()), image
        async with page.expect_download() as downloading:
            await page.get_by_role("link", name="Download archive").click()
        archive = await (await downloading.value).path()
        with tarfile.open(archive, "r:gz") as packed:
            assert any(name.startswith("conda-meta/") for name in packed.getnames())

        # --- edit: one more package, a new build --------------------------------------------------
        await page.get_by_role("button", name="Edit", exact=True).click()
        await page.get_by_text("+ Add Package").click()
        await page.get_by_label("Enter package").fill("tinyjson")
        await page.get_by_label("Enter package").press("Enter")
        await watched.snap("edit-add-package")
        async with page.expect_response(lambda r: r.url.endswith("/api/v1/specification/")) as saved:
            await page.get_by_role("button", name="Save", exact=True).click()
        second_build = (await (await saved.value).json())["data"]["build_id"]
        assert second_build != first_build
        await wait_until_built(page, second_build)
        await expect(page.get_by_text("tinyjson", exact=True).last).to_be_visible()
        await watched.snap("edited-new-build-completed")
        status, body = await admin.get(f"/api/v1/environment/{USER}/{ENVIRONMENT}/")
        assert body["data"]["current_build_id"] == second_build

        # --- roll back: make the first build the active one again ---------------------------
        # Coming back later: the UI keeps the environment it loaded, whose current build was the
        # first until the second completed; a fresh load shows the server's current build.
        await page.reload()
        builds = page.get_by_role("combobox").filter(has_text=re.compile(r" - Active$"))
        await expect(builds).to_be_visible()
        await expect(page.get_by_text("tinyjson", exact=True).last).to_be_visible()
        for namespace in (USER, SHARED):
            await page.get_by_text(namespace, exact=True).click()
        await expect(page.get_by_role("link", name=ENVIRONMENT)).to_be_visible()
        await watched.snap("environment-with-two-builds")  # docs/ui-environment.png
        await page.get_by_role("button", name="Edit", exact=True).click()
        await expect(page.get_by_text("Change active environment version:")).to_be_visible()
        await builds.click()
        options = page.get_by_role("option")
        await expect(options).to_have_count(2)
        await expect(options.last).to_be_visible()
        await watched.snap("rollback-choose-build")
        await options.filter(has_text=re.compile(r" - Available$")).click()
        async with page.expect_response(
            lambda r: r.request.method == "PUT" and f"/api/v1/environment/{USER}/{ENVIRONMENT}/" in r.url
        ) as switched:
            await page.get_by_role("button", name="Change environment version").click()
        assert (await switched.value).status == 200
        status, body = await admin.get(f"/api/v1/environment/{USER}/{ENVIRONMENT}/")
        assert body["data"]["current_build_id"] == first_build
        await page.get_by_role("button", name="Cancel", exact=True).click()
        await expect(page.get_by_text("tinyjson", exact=True)).to_have_count(0)
        await expect(page.get_by_text(f"Show Conda environment {first_build} log")).to_be_visible()
        await page.get_by_text("Environment Metadata").scroll_into_view_if_needed()
        await expect(builds).to_be_visible()
        await watched.snap("rolled-back")

        # --- delete ----------------------------------------------------------------------------------
        await page.get_by_role("button", name="Edit", exact=True).click()
        await page.get_by_text("Delete environment").click()
        await expect(page.get_by_role("heading", name="Delete Environment")).to_be_visible()
        await watched.snap("delete-confirm")
        async with page.expect_response(lambda r: r.request.method == "DELETE") as deleted:
            await page.get_by_role("button", name="Delete", exact=True).click()
        assert (await deleted.value).status == 200
        await expect(page.get_by_text("Select an environment")).to_be_visible()
        await expect(page.get_by_role("link", name=ENVIRONMENT)).to_have_count(0)
        status, body = await admin.get(f"/api/v1/environment/{USER}/{ENVIRONMENT}/")
        assert status == 404, body
        await watched.snap("deleted")

        # --- log out -------------------------------------------------------------------------------
        await page.get_by_role("button", name="Log out").click()
        await expect(page.get_by_role("button", name="Log in")).to_be_visible()
        await watched.snap("logged-out")
        watched.assert_clean()
    finally:
        await watched.close()
