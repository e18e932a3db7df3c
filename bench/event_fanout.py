"""Event fan-out: how long an event takes from publish to 100 live-stream (Server-Sent Events)
clients and to a webhook receiver.

Runs a real embedded stack (NATS, PostgreSQL, every service as its own process, webhooks allowed to
127.0.0.1), builds one environment so its events have a namespace, opens the SSE clients (each its
own connection, filtered to that namespace and ``build.progress``), registers a webhook to a
receiver in this process, then publishes ``build.progress`` notes for the build through the bus:
first at a steady rate, then in a burst. Every receive time is taken in this process, on the same
clock as the publish. Loopback only; everything bounded. Prints p50/p99; asserts nothing.

    python bench/event_fanout.py [--subscribers 100] [--events 200] [--rate 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from envstore.common.transport import EventBus
from envstore.common.demo_channel import make_channel
from envstore.common.events import BuildProgress
from envstore.launcher.stack import EmbeddedStack

NAMESPACE = "fanout"
DELIVERY_WAIT_SECONDS = 120.0


@dataclass
class Arrivals:
    """When one receiver first got each event (perf_counter), by event id."""

    times: dict[int, float] = field(default_factory=dict)

    def record(self, event_id: int) -> None:
        self.times.setdefault(event_id, time.perf_counter())


async def sse_client(
    http: aiohttp.ClientSession, url: str, token: str, arrivals: Arrivals, ready: asyncio.Event
) -> None:
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    params = {"namespace": NAMESPACE, "type": "build.progress"}
    async with http.get(f"{url}/api/v1/events/", headers=headers, params=params) as response:
        assert response.status == 200, await response.text()
        ready.set()
        event_id = None
        async for raw in response.content:
            line = raw.rstrip(b"\r\n")
            if line.startswith(b"id: "):
                event_id = int(line[4:])
            elif line == b"" and event_id is not None:
                arrivals.record(event_id)
                event_id = None


async def webhook_receiver(arrivals: Arrivals) -> tuple[web.AppRunner, str]:
    async def receive(request: web.Request) -> web.Response:
        await request.read()
        arrivals.record(int(request.headers["X-Envstore-Event-Id"]))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/hook"


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(label: str, samples: list[float]) -> str:
    milliseconds = [sample * 1000 for sample in samples]
    return (
        f"{label:<34} p50 {statistics.median(milliseconds):7.2f} ms   p99 {percentile(milliseconds, 0.99):7.2f} ms"
        f"   max {max(milliseconds):7.2f} ms   (n={len(milliseconds)})"
    )


async def run_phase(
    label: str,
    bus: EventBus,
    build_id: int,
    events: int,
    rate: float,
    sse_arrivals: list[Arrivals],
    webhook_arrivals: Arrivals,
) -> None:
    receivers = (*sse_arrivals, webhook_arrivals)
    publish_times: dict[int, float] = {}
    interval = 1.0 / rate if rate > 0 else 0.0
    started = time.perf_counter()
    for index in range(events):
        if interval:
            await asyncio.sleep(max(0.0, started + index * interval - time.perf_counter()))
        event = BuildProgress(build_id=build_id, phase="bench", state="note", message=f"{label} {index}")
        sent = time.perf_counter()
        acknowledgement = await bus.publish(event, message_id=f"bench:{label}:{index}:{time.time_ns()}")
        publish_times[acknowledgement.seq] = sent
    publishing_seconds = time.perf_counter() - started
    deadline = time.monotonic() + DELIVERY_WAIT_SECONDS
    while not all(seq in arrivals.times for arrivals in receivers for seq in publish_times):
        if time.monotonic() > deadline:
            raise RuntimeError(f"not every receiver got every event within {DELIVERY_WAIT_SECONDS} s")
        await asyncio.sleep(0.01)
    sse = [arrivals.times[seq] - publish_times[seq] for arrivals in sse_arrivals for seq in publish_times]
    webhook = [webhook_arrivals.times[seq] - publish_times[seq] for seq in publish_times]
    pace = f"{rate:g} events/s" if rate > 0 else f"burst (published at {events / publishing_seconds:.0f} events/s)"
    print(f"\n{label}: {events} events, {pace}, {len(sse_arrivals)} SSE subscribers + 1 webhook")
    print(summary("publish -> every SSE subscriber", sse))
    print(summary("publish -> webhook receiver", webhook))


async def main(subscribers: int, events: int, rate: float) -> None:
    with tempfile.TemporaryDirectory(prefix="envstore-bench-") as directory:
        channel = await make_channel(Path(directory) / "channel")
        settings = {
            "ENVSTORE_CONDA_DEFAULT_CHANNELS": channel,
            "ENVSTORE_CONDA_ALLOWED_CHANNELS": channel,
            "ENVSTORE_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
            "ENVSTORE_LOG_LEVEL": "WARNING",
        }
        async with EmbeddedStack(Path(directory) / "stack", settings=settings) as stack:
            await measure(stack, subscribers, events, rate)


async def measure(stack: EmbeddedStack, subscribers: int, events: int, rate: float) -> None:
    auth = {"Authorization": f"Bearer {stack.admin_token}"}
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with (
        aiohttp.ClientSession(stack.api_url, headers=auth) as api,
        aiohttp.ClientSession(connector=connector, timeout=timeout) as streams,
    ):
        specification = "name: fanned\ndependencies:\n  - hello\n"
        async with api.post(
            "/api/v1/specification/", json={"namespace": NAMESPACE, "specification": specification}
        ) as response:
            build_id = (await response.json())["data"]["build_id"]
        for _ in range(6000):
            async with api.get(f"/api/v1/build/{build_id}/") as response:
                if (await response.json())["data"]["status"] in ("COMPLETED", "FAILED"):
                    break
            await asyncio.sleep(0.01)

        sse_arrivals = [Arrivals() for _ in range(subscribers)]
        webhook_arrivals = Arrivals()
        runner, hook_url = await webhook_receiver(webhook_arrivals)
        body = {"url": hook_url, "namespace": NAMESPACE, "event_types": ["build.progress"]}
        async with api.post("/api/v1/webhook/", json=body) as response:
            assert response.status == 200, await response.text()
        ready = [asyncio.Event() for _ in range(subscribers)]
        clients = [
            asyncio.create_task(sse_client(streams, stack.api_url, stack.admin_token, arrivals, opened))
            for arrivals, opened in zip(sse_arrivals, ready)
        ]
        await asyncio.wait_for(asyncio.gather(*(opened.wait() for opened in ready)), 60)
        # Progress notes, as a worker publishes them (with its credentials).
        bus = await stack.connect_bus("builder")
        try:
            await run_phase("steady", bus, build_id, events, rate, sse_arrivals, webhook_arrivals)
            await run_phase("burst", bus, build_id, events, 0, sse_arrivals, webhook_arrivals)
        finally:
            await bus.close()
            for client in clients:
                client.cancel()
            await asyncio.gather(*clients, return_exceptions=True)
            await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0, help="events per second in the steady phase")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.subscribers, arguments.events, arguments.rate))
