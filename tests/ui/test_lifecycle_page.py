"""envstore's lifecycle page in Chromium: an environment's builds with their archive state and use,
and links to each build's SBOM and lock diff that a person follows."""

from __future__ import annotations

import uuid
from pathlib import Path

from playwright.async_api import Browser

from envstore.launcher.stack import EmbeddedStack
from tests.api_client import ApiClient, environment_yaml

SCREENSHOTS = Path(__file__).resolve().parents[1] / "screenshots"


async def test_lifecycle_page_shows_builds_states_use_and_links(
    browser: Browser, stack: EmbeddedStack, admin: ApiClient
) -> None:
    namespace = f"page-{uuid.uuid4().hex[:6]}"
    builds = []
    for packages in (["hello 1.0.*"], ["hello 2.1.*", "tinyjson"]):
        build = await admin.wait_for_build(await admin.submit(environment_yaml("tools", packages), namespace), timeout_seconds=120)
        assert build["status"] == "COMPLETED", build["status_info"]
        builds.append(build["id"])
    status, body = await admin.request("POST", f"/api/v1/build/{builds[0]}/archive/")
    assert status == 200, body

    context = await browser.new_context(extra_http_headers={"Authorization": f"Bearer {stack.admin_token}"})
    try:
        page = await context.new_page()
        response = await page.goto(f"{stack.api_url}/lifecycle/{namespace}/tools/")
        assert response is not None and response.status == 200
        await page.wait_for_selector("table")
        rows = await page.locator("tbody tr").all_inner_texts()
        assert [row.split("\t")[0] for row in rows] == [str(build_id) for build_id in builds]
        assert any(state in rows[0] for state in ("ARCHIVING", "ARCHIVED"))
        assert "AVAILABLE" in rows[1] and await page.locator("tr.current").inner_text() == rows[1]
        SCREENSHOTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / "lifecycle-page.png"), full_page=True)

        await page.get_by_role("link", name=f"diff from {builds[0]}").click()
        diff = await page.locator("body").inner_text()
        assert diff.startswith(f"--- build {builds[0]}\n+++ build {builds[1]}")
        assert "~ hello 1.0" in diff
        await page.go_back()
        await page.locator("tbody tr").nth(1).get_by_role("link", name="SBOM").click()
        assert '"bomFormat"' in await page.content() or "CycloneDX" in await page.content()
    finally:
        await context.close()
