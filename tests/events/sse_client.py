"""Reading ``GET /api/v1/events/`` as a Server-Sent Events client does (aiohttp, line by line)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass(frozen=True)
class ServerSentEvent:
    id: int
    data: dict[str, Any]

    @property
    def type(self) -> str:
        return self.data["type"]

    @property
    def build_id(self) -> int | None:
        return self.data["build_id"]


class EventStream:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next_event(self) -> ServerSentEvent:
        """The next event; comments (keep-alives) and fields without data are skipped."""
        fields: dict[str, str] = {}
        while True:
            raw = await self.response.content.readline()
            if not raw:
                raise ConnectionError("the server ended the stream")
            line = raw.decode().rstrip("\r\n")
            if line == "":
                if "data" in fields:
                    return ServerSentEvent(int(fields["id"]), json.loads(fields["data"]))
                fields = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")

    async def next_keepalive(self) -> None:
        """Wait for the next keep-alive comment (the stream is open and quiet)."""
        while True:
            raw = await self.response.content.readline()
            if not raw:
                raise ConnectionError("the server ended the stream")
            if raw.startswith(b": keep-alive"):
                return

    async def read_until(
        self, last: Callable[[ServerSentEvent], bool], timeout_seconds: float = 60
    ) -> list[ServerSentEvent]:
        """Every event up to and including the first for which ``last`` is true (bounded wait)."""
        events: list[ServerSentEvent] = []
        deadline = time.monotonic() + timeout_seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no closing event within {timeout_seconds} s; got {[e.type for e in events]}")
            try:
                event = await asyncio.wait_for(self.next_event(), remaining)
            except TimeoutError:
                raise AssertionError(
                    f"no closing event within {timeout_seconds} s; got {[e.type for e in events]}"
                ) from None
            events.append(event)
            if last(event):
                return events


@contextlib.asynccontextmanager
async def live_events(
    api_url: str,
    token: str | None = None,
    resume_after: int | None = None,
    **query: str | int,
) -> AsyncIterator[EventStream]:
    """An open stream (``resume_after`` is sent as ``Last-Event-ID``; ``query`` holds the filters);
    the server has subscribed once this yields, so events published afterwards are on it."""
    headers = {"Accept": "text/event-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if resume_after is not None:
        headers["Last-Event-ID"] = str(resume_after)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    # A reverse proxy's HTTPS in tests has a certificate the test made itself (not checked here).
    connector = aiohttp.TCPConnector(ssl=False) if api_url.startswith("https:") else None
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        params = {name: str(value) for name, value in query.items()}
        async with session.get(f"{api_url}/api/v1/events/", headers=headers, params=params) as response:
            assert response.status == 200, await response.text()
            assert response.headers["Content-Type"].startswith("text/event-stream")
            yield EventStream(response)
