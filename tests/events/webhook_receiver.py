"""A webhook receiver for tests: a real aiohttp server on 127.0.0.1 that records every POST and
answers as the test asks (fail the first attempts of each event, hold the first request)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from envstore.api.webhooks.signature import (
    ATTEMPT_HEADER,
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signature_is_valid,
)

HOLD_LIMIT_SECONDS = 60


@dataclass(frozen=True)
class ReceivedPost:
    event_id: int
    attempt: int
    timestamp: str
    signature: str
    body: bytes
    answered: int  # the status this receiver answered
    received_at: float

    @property
    def document(self) -> dict[str, Any]:
        return json.loads(self.body)

    def signed_with(self, secret: str) -> bool:
        return signature_is_valid(secret, self.timestamp, self.signature, self.body, now=time.time())


@dataclass
class WebhookReceiver:
    failures_per_event: int = 0  # answer 500 to the first N requests of each event id
    hold_first_request: bool = False  # keep the first request open until released
    posts: list[ReceivedPost] = field(default_factory=list)
    first_request_held: asyncio.Event = field(default_factory=asyncio.Event)
    held_event_id: int | None = None
    release: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _runner: web.AppRunner | None = None
    url: str = ""

    async def __aenter__(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_post("/hook", self._receive)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.release.set()
        assert self._runner is not None
        await self._runner.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        event_id = int(request.headers[EVENT_ID_HEADER])
        if self.hold_first_request and not self.first_request_held.is_set():
            self.held_event_id = event_id
            self.first_request_held.set()
            # Never answered with success: the delivering process is killed meanwhile.
            try:
                await asyncio.wait_for(self.release.wait(), HOLD_LIMIT_SECONDS)
            except TimeoutError:
                pass
            return web.Response(status=503)
        earlier = sum(1 for post in self.posts if post.event_id == event_id)
        status = 500 if earlier < self.failures_per_event else 200
        post = ReceivedPost(
            event_id=event_id,
            attempt=int(request.headers[ATTEMPT_HEADER]),
            timestamp=request.headers[TIMESTAMP_HEADER],
            signature=request.headers[SIGNATURE_HEADER],
            body=body,
            answered=status,
            received_at=time.time(),
        )
        async with self._changed:
            self.posts.append(post)
            self._changed.notify_all()
        return web.Response(status=status, text="receiver says no" if status == 500 else "ok")

    def delivered_ids(self) -> set[int]:
        return {post.event_id for post in self.posts if post.answered == 200}

    async def wait_until(self, condition: Callable[[], bool], timeout_seconds: float = 60) -> None:
        async def satisfied() -> None:
            async with self._changed:
                await self._changed.wait_for(condition)

        try:
            await asyncio.wait_for(satisfied(), timeout_seconds)
        except TimeoutError:
            raise AssertionError(
                f"the receiver did not get what was expected within {timeout_seconds} s; "
                f"it got {sorted(self.delivered_ids())}"
            ) from None
