"""Connecting to the bus (NATS) as an identity: its nkey seed, its own inboxes, TLS, reconnecting
for ever, and refused credentials said at once instead of retried for ever.

Lean on purpose (nats-py alone): the projector's log reader process imports it and starts fast.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence
from typing import Any

import nats
from nats.aio.client import Client as NatsClient

log = logging.getLogger(__name__)


def inbox_prefix(identity: str) -> str:
    """Where an identity's answers arrive: its own inboxes, which no other identity may read."""
    return f"_INBOX.{identity}"


def tls_context_of(certificate_authority: str | None) -> ssl.SSLContext | None:
    """TLS to NATS, the servers' certificates verified by this CA certificate (PEM); None: no TLS."""
    if not certificate_authority:
        return None
    return ssl.create_default_context(cadata=certificate_authority)


class BusAccessRefused(Exception):
    """The bus refused this process's credentials (or it has none)."""


async def connect_to_bus(
    servers: str | Sequence[str],
    name: str,
    *,
    seed: str | None = None,
    tls: ssl.SSLContext | None = None,
    **options: Any,
) -> NatsClient:
    """Connect to every server of the cluster (a comma-separated string or a list) as the
    identity ``name``, authenticated by its nkey ``seed``; the client reconnects to any of them
    for ever. ``tls``: verify the servers' certificates with this context."""
    urls = [url.strip() for url in servers.split(",")] if isinstance(servers, str) else list(servers)
    if seed is not None:
        options["nkeys_seed_str"] = seed
    if tls is not None:
        options["tls"] = tls
    refused: asyncio.Future[Exception] = asyncio.get_running_loop().create_future()

    async def on_error(error: Exception) -> None:
        # The client would retry refused credentials for ever: stop and say so instead.
        if "authorization violation" in str(error).lower() and not refused.done():
            refused.set_result(error)
        # A permission violation means this identity's grant misses what the code does.
        log.error("NATS (as %s): %s", name, error)

    connecting = asyncio.create_task(
        nats.connect(
            urls,
            name=name,
            inbox_prefix=inbox_prefix(name),
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=5,
            error_cb=on_error,
            **options,
        )
    )
    await asyncio.wait({connecting, refused}, return_when=asyncio.FIRST_COMPLETED)
    if not connecting.done():
        connecting.cancel()
        await asyncio.gather(connecting, return_exceptions=True)
        held = "its nkey seed" if seed else "no credentials"
        raise BusAccessRefused(
            f"NATS at {', '.join(urls)} refused {name!r} ({held}): {refused.result()}; give the process "
            f"the seed generated for {name!r} (ENVSTORE_NATS_CREDENTIALS_FILE=<file>)"
        )
    return connecting.result()
