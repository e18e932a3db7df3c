"""``/healthz`` and ``/readyz`` of a process.

``/healthz`` answers 200 while the process serves HTTP at all (a liveness probe: restart it when
this fails). ``/readyz`` answers 200 only when every readiness check passes, else 503 with one line
per failing check saying why (a readiness probe: send it no work yet). Checks are added where the
resource they watch is opened (the event bus, the database …); each is bounded in time, so a hung
dependency makes the probe fail instead of hang.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

# A check answers None when ready, else a short reason ("the event bus is disconnected").
ReadinessCheck = Callable[[], Awaitable[str | None]]
CHECK_TIMEOUT_SECONDS = 2.0


@dataclass
class Readiness:
    checks: list[tuple[str, ReadinessCheck]] = field(default_factory=list)

    def add(self, name: str, check: ReadinessCheck) -> None:
        self.checks.append((name, check))

    async def problems(self) -> list[str]:
        if not self.checks:
            # Checks come with the resources a process opens: none yet means it is still starting.
            return ["starting: nothing opened yet"]
        async def run(name: str, check: ReadinessCheck) -> str | None:
            try:
                async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                    reason = await check()
            except TimeoutError:
                reason = f"no answer within {CHECK_TIMEOUT_SECONDS:g} s"
            except Exception as error:  # a failing check means not ready, whatever it raised
                reason = f"{type(error).__name__}: {error}"
            return None if reason is None else f"{name}: {reason}"

        results = await asyncio.gather(*(run(name, check) for name, check in self.checks))
        return [problem for problem in results if problem is not None]

    async def handle_healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n", headers={"Cache-Control": "no-store"})

    async def handle_readyz(self, request: web.Request) -> web.Response:
        problems = await self.problems()
        if problems:
            text = "not ready\n" + "".join(f"{problem}\n" for problem in problems)
            return web.Response(status=503, text=text, headers={"Cache-Control": "no-store"})
        return web.Response(text="ready\n", headers={"Cache-Control": "no-store"})

    def add_routes(self, router: web.UrlDispatcher, prefixes: tuple[str, ...] = ("",)) -> None:
        """``/healthz`` and ``/readyz`` under each prefix (``""``: at the root)."""
        for prefix in dict.fromkeys(prefixes):
            router.add_get(f"{prefix}/healthz", self.handle_healthz)
            router.add_get(f"{prefix}/readyz", self.handle_readyz)
