"""The event log's transport: one JetStream stream holding every event, and publishing to it.

Publishing carries a de-duplication id (``Nats-Msg-Id``) and, where a decision was taken against
a known state, an ``Expectation``: the last sequence of the aggregate's subjects the decision saw.
JetStream refuses the event if another landed in between (``Conflict``), so two concurrent
commands cannot both pass a check against one state. A once-only event (a build's solve, its
outcome …) is published with "nothing on its filter yet", which makes it unique for ever, past the
de-duplication window.

Transient failures of the bus (a leader election, a reconnect) are retried with tenacity; the
de-duplication id makes a retried publish land once. Every publish carries the W3C trace context
of its span (``traceparent``).

Ids (builds, webhooks) come from a JetStream counter stream (``allocate_id``), not from stream
sequences, so a log that is mirrored, re-created or imported keeps them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import PubAck, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from tenacity import AsyncRetrying, RetryError, retry_if_exception_type, stop_after_delay, wait_exponential

from envstore.common.arrivals import Arrivals, subscribe_in_order
from envstore.common.bus_connection import BusAccessRefused, connect_to_bus, inbox_prefix
from envstore.common.events import (
    STREAM_SUBJECTS,
    BuildSubmitted,
    Event,
    EventCodec,
    UndecodableEvent,
    build_id_of,
    submission_subject,
)
from envstore.common.telemetry import Telemetry

log = logging.getLogger(__name__)

WRONG_LAST_SEQUENCE = 10071
# Set on events an import (``envstore import``) republishes: history, whose effects (blobs,
# artifacts) came with it. Workers and webhooks do not act on them; the read model applies them.
IMPORTED_HEADER = "Envstore-Imported"
IDS_STREAM_SUFFIX = "_IDS"
IDS_SUBJECT_ROOT = "envstore-ids"
# How long a publish keeps retrying through an outage of the bus (a leader election takes seconds).
PUBLISH_RETRY_SECONDS = 30.0
# How long a service waits at start for the API to create the stream.
STREAM_WAIT_SECONDS = 120.0
TRANSIENT_ERRORS = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
)


@dataclass(frozen=True)
class Expectation:
    """Publish only if the last event on ``subjects`` (a subject filter) is still at ``sequence``
    (0: no event there yet)."""

    subjects: str
    sequence: int

    def headers(self) -> dict[str, str]:
        return {
            "Nats-Expected-Last-Subject-Sequence": str(self.sequence),
            "Nats-Expected-Last-Subject-Sequence-Subject": self.subjects,
        }


class StreamMissing(Exception):
    """The event stream does not exist (the API creates it)."""


class Conflict(Exception):
    """Another event landed on the expected subjects since the state a decision was taken on."""

    def __init__(self, expectation: Expectation, detail: str) -> None:
        super().__init__(f"{expectation.subjects} moved past sequence {expectation.sequence}: {detail}")
        self.expectation = expectation


@dataclass(frozen=True)
class StoredMessage:
    sequence: int
    subject: str
    data: bytes
    headers: dict[str, str]


def _transient_retries() -> AsyncRetrying:
    return AsyncRetrying(
        retry=retry_if_exception_type(TRANSIENT_ERRORS),
        wait=wait_exponential(multiplier=0.1, max=2.0),
        stop=stop_after_delay(PUBLISH_RETRY_SECONDS),
        reraise=True,
    )


class EventBus:
    """The stream of events (``stream_name``), its id counters, and publishing to them."""

    def __init__(
        self, client: NatsClient, stream_name: str, telemetry: Telemetry | None = None, principal: str = ""
    ) -> None:
        self.client = client
        self.jetstream: JetStreamContext = client.jetstream()
        self.stream_name = stream_name
        self.codec = EventCodec()
        self.telemetry = telemetry or Telemetry.disabled()
        # Who this connection publishes as, unless the publish names the principal it authenticated.
        self.principal = principal

    @classmethod
    async def connect(
        cls,
        servers: str | Sequence[str],
        stream_name: str = "ENVSTORE",
        name: str = "envstore",
        telemetry: Telemetry | None = None,
        *,
        seed: str | None = None,
        tls: ssl.SSLContext | None = None,
        **options: Any,
    ) -> EventBus:
        """The bus as the identity ``name`` (``bus_connection.connect_to_bus``)."""
        client = await connect_to_bus(servers, name, seed=seed, tls=tls, **options)
        return cls(client, stream_name, telemetry, principal=f"service:{name}")

    async def close(self) -> None:
        if not self.client.is_closed:
            await self.client.drain()

    # --- streams -----------------------------------------------------------------------------------

    @property
    def ids_stream_name(self) -> str:
        return f"{self.stream_name}{IDS_STREAM_SUFFIX}"

    async def ensure_stream(self, replicas: int = 1, duplicate_window_seconds: float = 600.0) -> None:
        """The event stream and the id counters, created or brought to this configuration (a new
        cluster answers 'no meta leader' for a second or so: retried)."""
        config = StreamConfig(
            name=self.stream_name,
            subjects=[STREAM_SUBJECTS],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=replicas,
            duplicate_window=duplicate_window_seconds,
            max_age=0,
        )
        async for attempt in _transient_retries():
            with attempt:
                await self._create_or_update(config)
                await self._ensure_ids_stream(replicas)

    async def wait_for_stream(self, timeout_seconds: float = STREAM_WAIT_SECONDS) -> None:
        """Until the event stream exists: only the API creates and configures it (no other
        identity may), so the other services wait for it at start."""
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type((NotFoundError, *TRANSIENT_ERRORS)),
                wait=wait_exponential(multiplier=0.1, max=2.0),
                stop=stop_after_delay(timeout_seconds),
            ):
                with attempt:
                    await self.jetstream.stream_info(self.stream_name)
        except RetryError:
            raise StreamMissing(
                f"the event stream {self.stream_name} did not appear within {timeout_seconds:.0f} s; "
                "the API creates it: start the API"
            ) from None

    async def _create_or_update(self, config: StreamConfig) -> None:
        try:
            await self.jetstream.stream_info(config.name)  # type: ignore[arg-type]
        except NotFoundError:
            await self.jetstream.add_stream(config)
        else:
            await self.jetstream.update_stream(config)

    async def _ensure_ids_stream(self, replicas: int) -> None:
        # nats-py has no field for counters (nats-server 2.12): create it with the raw API.
        config = {
            "name": self.ids_stream_name,
            "subjects": [f"{IDS_SUBJECT_ROOT}.{self.stream_name}.>"],
            "storage": "file",
            "num_replicas": replicas,
            "allow_msg_counter": True,
            "max_msgs_per_subject": 1,
        }
        try:
            await self.jetstream.stream_info(self.ids_stream_name)
        except NotFoundError:
            verb = "CREATE"
        else:
            verb = "UPDATE"
        reply = await self.client.request(
            f"$JS.API.STREAM.{verb}.{self.ids_stream_name}", json.dumps(config).encode(), timeout=10
        )
        answer = json.loads(reply.data)
        if "error" in answer and answer["error"].get("err_code") != 10058:  # 10058: exists already
            raise nats.js.errors.APIError.from_error(answer["error"])

    async def allocate_id(self, kind: str, at_least: int = 0) -> int:
        """A new id for ``kind`` (``build``, ``webhook``), never given out before. ``at_least``:
        the smallest id acceptable (ids taken before the counter existed stay below it)."""
        subject = f"{IDS_SUBJECT_ROOT}.{self.stream_name}.{kind}"
        value = await self._increment(subject, 1)
        if value < at_least:
            value = await self._increment(subject, at_least - value)
        return value

    async def _increment(self, subject: str, by: int) -> int:
        async for attempt in _transient_retries():
            with attempt:
                reply = await self.client.request(subject, b"", headers={"Nats-Incr": f"+{by}"}, timeout=5)
        answer = json.loads(reply.data)
        if "error" in answer:
            raise nats.js.errors.APIError.from_error(answer["error"])
        return int(answer["val"])

    # --- publishing ----------------------------------------------------------------------------------

    def _stamped(self, event: Event, principal: str | None) -> Event:
        """Whoever built the event, its principal is the one this publisher vouches for: the
        caller it authenticated (the API's commands), else this connection's identity."""
        return msgspec.structs.replace(event, principal=principal or self.principal)

    async def publish(
        self,
        event: Event,
        message_id: str,
        *,
        expect: Expectation | None = None,
        principal: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> PubAck:
        """Publish once: a repeated ``message_id`` inside the window returns the first ack. With
        ``expect``, raise ``Conflict`` if the expected subjects moved (unless what moved them is
        this very message, published by an earlier try whose answer was lost)."""
        event = self._stamped(event, principal)
        subject = event.subject
        with self.telemetry.producer_span(event.tag(), subject, message_id) as span:
            all_headers = {"Nats-Msg-Id": message_id, **self.telemetry.trace_headers(), **(headers or {})}
            if expect is not None:
                all_headers.update(expect.headers())
            payload = self.codec.encode(event)
            try:
                async for attempt in _transient_retries():
                    with attempt:
                        acknowledgement = await self.jetstream.publish(
                            subject, payload, stream=self.stream_name, headers=all_headers
                        )
            except nats.js.errors.APIError as error:
                if expect is None or error.err_code != WRONG_LAST_SEQUENCE:
                    raise
                earlier = await self.last_message_on(expect.subjects)
                if earlier is None or earlier.headers.get("Nats-Msg-Id") != message_id:
                    raise Conflict(expect, error.description or "wrong last sequence") from None
                acknowledgement = PubAck(stream=self.stream_name, seq=earlier.sequence, duplicate=True)
            span.set_attribute("envstore.stream_sequence", acknowledgement.seq)
            build_id = build_id_of(event)
            if build_id is not None:
                span.set_attribute("envstore.build_id", build_id)
            return acknowledgement

    async def publish_once(self, event: Event, message_id: str, principal: str | None = None) -> PubAck | None:
        """Publish a once-only event (``event.once_filter()``); None when its slot holds an event
        already (a redelivery of work that was done, however long ago)."""
        once = event.once_filter()
        if once is None:
            raise ValueError(f"{event.tag()} is not a once-only event")
        try:
            return await self.publish(event, message_id, expect=Expectation(once, 0), principal=principal)
        except Conflict:
            log.info("%s not published: %s holds an event already", event.tag(), once)
            return None

    async def has_event_on(self, subjects: str) -> bool:
        return await self.last_message_on(subjects) is not None

    async def last_message_on(self, subjects: str) -> StoredMessage | None:
        """The last message on a subject filter (wildcards allowed), or None."""
        try:
            async for attempt in _transient_retries():
                with attempt:
                    message = await self.jetstream.get_last_msg(self.stream_name, subjects)
        except NotFoundError:
            return None
        return StoredMessage(message.seq or 0, message.subject or "", message.data or b"", dict(message.headers or {}))

    # --- reading -------------------------------------------------------------------------------------

    async def event_at(self, sequence: int) -> Event:
        """The event stored at ``sequence`` (decoded and upcast)."""
        async for attempt in _transient_retries():
            with attempt:
                message = await self.jetstream.get_msg(self.stream_name, seq=sequence)
        return self.codec.decode(message.subject or "", message.data or b"", sequence)

    async def submission_of(self, build_id: int) -> tuple[int, BuildSubmitted] | None:
        """A build's ``build.submitted`` and its stream sequence, found by the build's id (in release
        0.1.0's log, the id was that sequence); None if there is no such build."""
        message = await self.last_message_on(submission_subject(build_id))
        if message is not None:
            event = self.codec.decode(message.subject, message.data, message.sequence)
            assert isinstance(event, BuildSubmitted)
            return message.sequence, event
        try:
            legacy = await self.event_at(build_id)
        except (NotFoundError, UndecodableEvent):
            return None
        if isinstance(legacy, BuildSubmitted) and legacy.build_id == build_id:
            return build_id, legacy
        return None

    async def last_sequence(self) -> int:
        async for attempt in _transient_retries():
            with attempt:
                info = await self.jetstream.stream_info(self.stream_name)
        return info.state.last_seq

    async def report_every_consumer_lag(self) -> None:
        """Every durable consumer's lag on the stream, into this process's metrics (the API
        reports them all, so a consumer whose workers are all down still shows its lag)."""
        infos = await self.jetstream.consumers_info(self.stream_name)
        self.telemetry.metrics.forget_consumers()
        for info in infos:
            if info.config.durable_name:
                self.telemetry.metrics.set_consumer_lag(
                    info.config.durable_name, info.num_pending or 0, info.num_ack_pending or 0
                )

    async def replay(
        self, start_sequence: int, subjects: str = STREAM_SUBJECTS, arrivals: Arrivals | None = None
    ) -> Any:
        """An ordered, unacknowledged subscription from ``start_sequence`` onwards (for readers
        that must see every event in stream order, like the projector); into ``arrivals`` when
        given (then read in batches), else read with ``next_msg``."""
        return await subscribe_in_order(
            self.jetstream, self.stream_name, subjects, start_sequence, arrivals.receive if arrivals else None
        )
