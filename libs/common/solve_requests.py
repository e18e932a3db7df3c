"""The remote solve (``GET /api/v1/specification/``): a NATS request to the solver service and its
answer. Not an event: nothing changes, so nothing goes on the stream."""

from __future__ import annotations

import msgspec

from envstore.common.events import InstalledPackage

# Outside the stream's "envstore.>" subjects: JetStream would store the request and answer it.
SOLVE_SUBJECT = "envstore-rpc.solve"


class RemoteSolveRequest(msgspec.Struct, frozen=True, kw_only=True):
    specs: list[str]
    channel_urls: list[str]
    pip: list[str] = []
    platform: str | None = None


class RemoteSolveAnswer(msgspec.Struct, frozen=True, kw_only=True):
    packages: list[InstalledPackage] = []
    error: str | None = None
