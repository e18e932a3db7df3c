"""Debian's headless Chromium driven by Playwright (its Python package runs no browser of its own:
``executable_path`` points at /usr/bin/chromium), kept on loopback, with every console error,
page error and failed API call recorded, and a screenshot saved for each step."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from playwright.async_api import TimeoutError as PlaywrightTimeoutError
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, Request, Response, Route
from yarl import URL

CHROMIUM = "/usr/bin/chromium"
# What this machine needs (root, no GPU, closed network): no sandbox as root, and none of the
# background connections Chromium makes on its own. Host names other than loopback resolve to
# nothing, so a request that escapes the route filter below still cannot leave the machine.
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
SCREENSHOTS = Path(__file__).resolve().parents[1] / "screenshots"

# conda-store-ui 2024.11.1's own harmless console errors: MUI icons sized "inherit" and a
# "transform" attribute of "0.5" (bugs of the UI, shown on every page).
HARMLESS_CONSOLE_ERRORS = frozenset(
    {
        'Error: <svg> attribute width: Expected length, "inherit".',
        'Error: <svg> attribute height: Expected length, "inherit".',
        'Error: <svg> attribute transform: Expected transform function, "0.5".',
    }
)
# main.css loads the Inter font from Google's font host; the tests block it (the browser falls
# back to a local font), and Chromium reports each blocked font as a failed resource.
BLOCKED_BUT_HARMLESS_HOSTS = frozenset({"fonts.gstatic.com", "fonts.googleapis.com"})


# No finite animation or CSS transition is running (a spinner runs for ever and is left out).
SETTLED = """() => document.getAnimations().every(
    animation => animation.playState !== "running" || animation.effect?.getComputedTiming().iterations === Infinity)"""
SETTLE_MILLISECONDS = 5_000


@dataclass
class WatchedPage:
    """One browser context and its first page; ``problems`` collects what a test must not see."""

    context: BrowserContext
    page: Page
    screenshot_directory: Path
    problems: list[str] = field(default_factory=list)
    blocked_urls: list[str] = field(default_factory=list)
    expected_statuses: list[tuple[re.Pattern[str], int]] = field(default_factory=list)
    step: int = 0

    @classmethod
    async def open(cls, browser: Browser, test_name: str, **context_options: object) -> WatchedPage:
        context = await browser.new_context(
            viewport={"width": 1280, "height": 860}, accept_downloads=True, **context_options
        )
        directory = SCREENSHOTS / test_name
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("*.png"):
            old.unlink()
        watched = cls(context, await context.new_page(), directory)
        await context.route("**/*", watched._only_loopback)
        context.on("console", watched._console)
        context.on("weberror", lambda error: watched.problems.append(f"page error: {error.error}"))
        context.on("response", watched._response)
        context.on("requestfailed", watched._request_failed)
        context.set_default_timeout(30_000)
        return watched

    async def close(self) -> None:
        await self.context.close()

    def expect_status(self, url_pattern: str, status: int) -> None:
        """A response with this status is part of the test (not a problem) for matching URLs."""
        self.expected_statuses.append((re.compile(url_pattern), status))

    async def snap(self, name: str, page: Page | None = None) -> Path:
        """A screenshot once the page's transitions (MUI's collapses, fades) have ended."""
        self.step += 1
        path = self.screenshot_directory / f"{self.step:02d}-{name}.png"
        shown = page or self.page
        with contextlib.suppress(PlaywrightTimeoutError):  # a picture mid-transition is still a picture
            await shown.wait_for_function(SETTLED, timeout=SETTLE_MILLISECONDS)
        await shown.screenshot(path=str(path))
        return path

    def assert_clean(self) -> None:
        assert not self.problems, "the browser reported:\n" + "\n".join(self.problems)

    # --- listeners --------------------------------------------------------------------------

    async def _only_loopback(self, route: Route) -> None:
        if URL(route.request.url).host in LOOPBACK_HOSTS:
            await route.continue_()
            return
        self.blocked_urls.append(route.request.url)
        if URL(route.request.url).host not in BLOCKED_BUT_HARMLESS_HOSTS:
            self.problems.append(f"request to the outside blocked: {route.request.url}")
        await route.abort()

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error" or message.text in HARMLESS_CONSOLE_ERRORS:
            return
        source = message.location.get("url", "")
        if message.text.startswith("Failed to load resource") and (
            URL(source).host in BLOCKED_BUT_HARMLESS_HOSTS or self._is_expected(source, message.text)
        ):
            return
        self.problems.append(f"console error: {message.text} ({source})")

    def _response(self, response: Response) -> None:
        if response.status >= 400 and not self._is_expected(response.url, str(response.status)):
            self.problems.append(f"HTTP {response.status} for {response.request.method} {response.url}")

    def _request_failed(self, request: Request) -> None:
        if URL(request.url).host in LOOPBACK_HOSTS and request.failure != "net::ERR_ABORTED":
            self.problems.append(f"request failed: {request.method} {request.url}: {request.failure}")

    def _is_expected(self, url: str, status_text: str) -> bool:
        return any(pattern.search(url) and str(status) in status_text for pattern, status in self.expected_statuses)
