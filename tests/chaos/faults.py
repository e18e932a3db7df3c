"""Faults on a running stack, as the chaos test and the burst benchmark cause them: a SIGKILL of a
random service replica every few seconds (the supervisor restarts it), and in the first rounds,
one per round: one NATS node killed and brought back 3 s later, PostgreSQL restarted, the S3 server
restarted."""

from __future__ import annotations

import asyncio
import random
import time

from envstore.launcher.stack import REPLICATED_SERVICES, EmbeddedStack

KILL_EVERY_SECONDS = 2.0


async def chaos(stack: EmbeddedStack, stop: asyncio.Event, log: list[str], seed: int = 2026) -> None:
    """Until ``stop`` is set; each fault is appended to ``log``. The NATS fault needs 3 nodes, the S3
    one the local S3 server: each is skipped when the stack has no such thing."""
    rng = random.Random(seed)
    once = ["postgres"]
    if len(stack.replicas("nats")) >= 3:
        once.append("nats")
    if stack.s3 is not None:
        once.append("s3")
    rng.shuffle(once)
    started = time.monotonic()
    returning: list[asyncio.Task[None]] = []

    async def bring_back(node: int) -> None:
        await asyncio.sleep(3)
        await stack.start_nats_node(node)
        log.append(f"{time.monotonic() - started:6.1f} s  nats/{node} back")

    try:
        while not stop.is_set():
            name = rng.choice([*REPLICATED_SERVICES, "api.webhooks"])
            replica = rng.randrange(len(stack.replicas(name)))
            await stack.kill_service(name, replica)  # the supervisor restarts it
            log.append(f"{time.monotonic() - started:6.1f} s  SIGKILL {name}/{replica}")
            # One infrastructure fault per round until each happened: early, while builds run.
            if once:
                fault = once.pop()
                if fault == "nats":
                    node = rng.randrange(3)
                    await stack.kill_nats_node(node)
                    log.append(f"{time.monotonic() - started:6.1f} s  SIGKILL nats/{node}")
                    returning.append(asyncio.create_task(bring_back(node)))
                elif fault == "postgres":
                    await stack.restart_postgres()
                    log.append(f"{time.monotonic() - started:6.1f} s  PostgreSQL restarted")
                else:
                    await stack.restart_s3()
                    log.append(f"{time.monotonic() - started:6.1f} s  S3 restarted")
            try:
                await asyncio.wait_for(stop.wait(), KILL_EVERY_SECONDS)
            except TimeoutError:
                pass
    finally:
        await asyncio.gather(*returning)


def every_fault_caused(stack: EmbeddedStack, log: list[str]) -> bool:
    """Whether ``chaos`` has caused each of its once-only faults this stack can have."""
    wanted = ["PostgreSQL restarted"]
    if len(stack.replicas("nats")) >= 3:
        wanted.append(" back")
    if stack.s3 is not None:
        wanted.append("S3 restarted")
    return all(any(line.endswith(fault) for line in log) for fault in wanted)
