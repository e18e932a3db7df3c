"""One webhook POST: the event's JSON, signed, to the webhook's URL, within the time limit, no
redirects followed, through a resolver that refuses internal addresses. The outcome says what a
person reading the delivery log needs: the status code, or what went wrong."""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import TracebackType

import aiohttp

from envstore.api.webhooks.signature import (
    ATTEMPT_HEADER,
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WEBHOOK_ID_HEADER,
    signature,
)
from envstore.api.webhooks.target_urls import TargetGuard, TargetRefused

USER_AGENT = "envstore-webhooks/1"
ERROR_EXCERPT_CHARACTERS = 300


@dataclass(frozen=True)
class Post:
    """What to send: one event to one webhook, on one attempt."""

    webhook_id: int
    url: str
    secret: str
    event_id: int
    event_type: str
    attempt: int
    body: bytes


@dataclass(frozen=True)
class PostOutcome:
    succeeded: bool
    status_code: int | None
    error: str
    duration_seconds: float


def _printable(text: str) -> str:
    """What a receiver or the network said, safe to store and show (no control characters)."""
    return "".join(character if character >= " " or character in "\t\n" else "?" for character in text)


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return _printable(f"{type(error).__name__}: {text}"[:ERROR_EXCERPT_CHARACTERS])


class WebhookSender:
    """One HTTP client for every delivery of this process."""

    def __init__(self, guard: TargetGuard, timeout_seconds: float, connections: int = 256) -> None:
        self.guard = guard
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self.connections = connections
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> WebhookSender:
        connector = aiohttp.TCPConnector(resolver=self.guard.resolver(), limit=self.connections)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self.timeout, headers={"User-Agent": USER_AGENT}
        )
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, post: Post) -> PostOutcome:
        assert self._session is not None, "use WebhookSender as an async context manager"
        started = time.monotonic()
        try:
            self.guard.check_literal(self.guard.parse(post.url))
        except TargetRefused as refused:
            return PostOutcome(False, None, f"refused: {refused}", 0.0)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(post.secret, timestamp, post.body),
            TIMESTAMP_HEADER: str(timestamp),
            EVENT_ID_HEADER: str(post.event_id),
            EVENT_TYPE_HEADER: post.event_type,
            WEBHOOK_ID_HEADER: str(post.webhook_id),
            ATTEMPT_HEADER: str(post.attempt),
        }
        try:
            async with self._session.post(post.url, data=post.body, headers=headers, allow_redirects=False) as response:
                excerpt = (
                    ""
                    if response.status < 300
                    else (await response.content.read(ERROR_EXCERPT_CHARACTERS)).decode(errors="replace")
                )
        except TimeoutError:
            return PostOutcome(False, None, f"timed out after {self.timeout.total:g} s", time.monotonic() - started)
        except (aiohttp.ClientError, OSError) as error:
            return PostOutcome(False, None, _describe(error), time.monotonic() - started)
        elapsed = time.monotonic() - started
        if 200 <= response.status < 300:
            return PostOutcome(True, response.status, "", elapsed)
        reason = f"HTTP {response.status} {response.reason or ''}".strip()
        return PostOutcome(False, response.status, _printable(f"{reason}: {excerpt}" if excerpt else reason), elapsed)
