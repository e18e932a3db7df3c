"""The event bus: one JetStream stream, publishing with de-duplication ids, and durable consumers.

Workers consume with explicit acks: a message is acked only after its outcome event is published,
kept alive with ``in_progress`` while work runs, and redelivered if the worker dies. Deliveries are
bounded: past ``max_attempts`` the build fails with a reason instead of looping forever.

Every publish carries the W3C trace context of its span in the message headers (``traceparent``),
and a consumer handles each delivery in a span that continues it, so one trace follows a build.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    PubAck,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from envstore.common.events import (
    STREAM_SUBJECTS,
    BlobRef,
    BuildCanceled,
    BuildCancelRequested,
    BuildFailed,
    Event,
    PIPELINE_EVENTS,
    EventCodec,
    UnknownEvent,
    build_id_of,
)
from envstore.common.telemetry import Telemetry

log = logging.getLogger(__name__)


class BuildFailure(Exception):
    """A build cannot succeed for a reason the user should read (bad spec, unsatisfiable, …)."""

    def __init__(self, phase: str, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.phase = phase
        self.reason = reason
        self.detail = detail
        self.log: BlobRef | None = None  # the build's log so far, failure at the top


@dataclass(frozen=True)
class Delivery:
    """One event handed to a worker, with its place in the stream."""

    event: Event
    subject: str
    stream_sequence: int
    attempt: int
    headers: dict[str, str]

    @property
    def build_id(self) -> int | None:
        return build_id_of(self.event, self.stream_sequence)


Handler = Callable[[Delivery], Awaitable[None]]

CANCEL_REASON = "build {build_id} marked as CANCELED due to being canceled from the REST API"


class Cancellations:
    """Builds whose cancellation was requested, and the work running for them in this process."""

    def __init__(self) -> None:
        self.requested: set[int] = set()
        self.running: dict[int, set[asyncio.Task[None]]] = {}
        self.interrupted: set[asyncio.Task[None]] = set()

    def request(self, build_id: int) -> None:
        self.requested.add(build_id)
        for task in self.running.get(build_id, set()):
            self.interrupted.add(task)
            task.cancel()


class EventBus:
    def __init__(self, client: NatsClient, stream_name: str, telemetry: Telemetry | None = None) -> None:
        self.client = client
        self.jetstream: JetStreamContext = client.jetstream()
        self.stream_name = stream_name
        self.codec = EventCodec()
        self.telemetry = telemetry or Telemetry.disabled()

    @classmethod
    async def connect(
        cls, url: str, stream_name: str = "ENVSTORE", name: str = "envstore", telemetry: Telemetry | None = None
    ) -> EventBus:
        client = await nats.connect(
            url, name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.5, connect_timeout=5
        )
        return cls(client, stream_name, telemetry)

    async def close(self) -> None:
        if not self.client.is_closed:
            await self.client.drain()

    async def ensure_stream(self, replicas: int = 1, duplicate_window_seconds: float = 600.0) -> None:
        config = StreamConfig(
            name=self.stream_name,
            subjects=[STREAM_SUBJECTS],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=replicas,
            duplicate_window=duplicate_window_seconds,
            max_age=0,
        )
        try:
            await self.jetstream.stream_info(self.stream_name)
        except NotFoundError:
            await self.jetstream.add_stream(config)
        else:
            await self.jetstream.update_stream(config)

    async def publish(
        self, event: Event, message_id: str, headers: dict[str, str] | None = None
    ) -> PubAck:
        """Publish once: a repeated ``message_id`` inside the window returns the first ack."""
        with self.telemetry.producer_span(event.SUBJECT, message_id) as span:
            all_headers = {"Nats-Msg-Id": message_id, **self.telemetry.trace_headers(), **(headers or {})}
            acknowledgement = await self.jetstream.publish(
                event.SUBJECT, self.codec.encode(event), stream=self.stream_name, headers=all_headers
            )
            span.set_attribute("envstore.stream_sequence", acknowledgement.seq)
            build_id = build_id_of(event, acknowledgement.seq)
            if build_id is not None:
                span.set_attribute("envstore.build_id", build_id)
            return acknowledgement

    async def publish_failure(self, build_id: int, failure: BuildFailure) -> None:
        await self.publish(
            BuildFailed(
                build_id=build_id,
                phase=failure.phase,
                reason=failure.reason,
                detail=failure.detail,
                log=failure.log,
            ),
            message_id=f"failed:{build_id}",
        )

    async def event_at(self, sequence: int) -> Event:
        """The event stored at ``sequence`` (a build's submission is found by its build id)."""
        message = await self.jetstream.get_msg(self.stream_name, seq=sequence)
        return self.codec.decode(message.subject, message.data)

    async def last_sequence(self) -> int:
        info = await self.jetstream.stream_info(self.stream_name)
        return info.state.last_seq

    async def consume(
        self,
        durable: str,
        subjects: Sequence[str],
        handler: Handler,
        *,
        concurrency: int = 2,
        ack_wait_seconds: float = 30.0,
        max_attempts: int = 3,
        phase_timeout_seconds: float = 3600.0,
    ) -> None:
        """Run ``handler`` for every event on ``subjects`` until cancelled.

        Replicas calling this with the same ``durable`` share the work. A build whose cancellation
        is requested is not started, or its running handler is interrupted; either way the build
        ends with ``build.canceled``.
        """
        cancellations = Cancellations()
        handler = self.telemetry.observed_handler(durable, handler)
        watcher = await self._watch_cancellations(cancellations)
        await self.jetstream.add_consumer(
            self.stream_name,
            ConsumerConfig(
                durable_name=durable,
                filter_subjects=list(subjects),
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=ack_wait_seconds,
                max_ack_pending=max(concurrency * 4, 16),
                deliver_policy=DeliverPolicy.ALL,
            ),
        )
        subscription = await self.jetstream.pull_subscribe_bind(
            durable=durable, stream=self.stream_name
        )
        slots = asyncio.Semaphore(concurrency)
        running: set[asyncio.Task[None]] = set()
        stop_reporting_lag = self.telemetry.metrics.on_scrape(lambda: self._report_lag(durable))
        try:
            while True:
                await slots.acquire()
                try:
                    messages = await subscription.fetch(1, timeout=5)
                except NatsTimeoutError:
                    slots.release()
                    continue
                except Exception:
                    slots.release()
                    if self.client.is_closed:
                        raise
                    log.exception("fetch from %s failed; retrying", durable)
                    await asyncio.sleep(0.5)
                    continue
                for message in messages:
                    task = asyncio.create_task(
                        self._handle(
                            message, handler, ack_wait_seconds, max_attempts, phase_timeout_seconds, cancellations
                        )
                    )
                    running.add(task)
                    task.add_done_callback(running.discard)
                    task.add_done_callback(lambda _task: slots.release())
        finally:
            stop_reporting_lag()
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            for closing in (subscription, watcher):
                try:
                    await closing.unsubscribe()
                except Exception:  # the connection may already be gone
                    pass

    async def _report_lag(self, durable: str) -> None:
        info = await self.jetstream.consumer_info(self.stream_name, durable)
        self.telemetry.metrics.set_consumer_lag(durable, info.num_pending or 0, info.num_ack_pending or 0)

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

    async def _watch_cancellations(self, cancellations: Cancellations) -> Any:
        async def on_cancel(message: Msg) -> None:
            try:
                event = self.codec.decode(message.subject, message.data)
            except Exception:
                return
            if isinstance(event, BuildCancelRequested):
                cancellations.request(event.build_id)

        return await self.jetstream.subscribe(
            BuildCancelRequested.SUBJECT,
            stream=self.stream_name,
            cb=on_cancel,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )

    async def publish_canceled(self, build_id: int) -> None:
        await self.publish(
            BuildCanceled(build_id=build_id, reason=CANCEL_REASON.format(build_id=build_id)),
            message_id=f"canceled:{build_id}",
        )

    async def _handle(
        self,
        message: Msg,
        handler: Handler,
        ack_wait_seconds: float,
        max_attempts: int,
        phase_timeout_seconds: float,
        cancellations: Cancellations,
    ) -> None:
        metadata = message.metadata
        try:
            event = self.codec.decode(message.subject, message.data)
        except UnknownEvent:
            await message.ack()
            return
        delivery = Delivery(
            event=event,
            subject=message.subject,
            stream_sequence=metadata.sequence.stream,
            attempt=metadata.num_delivered,
            headers=dict(message.headers or {}),
        )
        with self.telemetry.consumer_span(delivery):
            await self._handle_delivery(
                message, delivery, handler, ack_wait_seconds, max_attempts, phase_timeout_seconds, cancellations
            )

    async def _handle_delivery(
        self,
        message: Msg,
        delivery: Delivery,
        handler: Handler,
        ack_wait_seconds: float,
        max_attempts: int,
        phase_timeout_seconds: float,
        cancellations: Cancellations,
    ) -> None:
        event = delivery.event
        build_id = delivery.build_id
        cancellable = isinstance(event, PIPELINE_EVENTS)
        if cancellable and build_id is not None and build_id in cancellations.requested:
            await self.publish_canceled(build_id)
            await message.ack()
            return
        if delivery.attempt > max_attempts and build_id is not None:
            # Earlier attempts died without an answer (crash, kill): give up with a reason.
            await self.publish_failure(
                build_id,
                BuildFailure(
                    phase=message.subject.removeprefix("envstore."),
                    reason=f"the worker stopped {max_attempts} times while handling this build; "
                    "giving up",
                ),
            )
            await message.ack()
            return
        heartbeat = asyncio.create_task(_keep_alive(message, ack_wait_seconds / 3))
        this_task = asyncio.current_task()
        assert this_task is not None
        if cancellable and build_id is not None:
            cancellations.running.setdefault(build_id, set()).add(this_task)
        try:
            async with asyncio.timeout(phase_timeout_seconds):
                await handler(delivery)
        except TimeoutError:
            heartbeat.cancel()
            if build_id is not None:
                await self.publish_failure(
                    build_id,
                    BuildFailure(
                        phase=message.subject.removeprefix("envstore."),
                        reason=f"the phase did not finish within its limit of {phase_timeout_seconds:.0f} s",
                    ),
                )
            await message.ack()
            return
        except BuildFailure as failure:
            heartbeat.cancel()
            if build_id is not None:
                await self.publish_failure(build_id, failure)
            await message.ack()
            return
        except asyncio.CancelledError:
            heartbeat.cancel()
            if this_task in cancellations.interrupted and build_id is not None:
                # Canceled on request, not because this process is stopping.
                cancellations.interrupted.discard(this_task)
                this_task.uncancel()
                await self.publish_canceled(build_id)
                await message.ack()
                return
            raise
        except Exception as error:
            heartbeat.cancel()
            log.exception("handling %s #%s failed", message.subject, delivery.stream_sequence)
            if delivery.attempt >= max_attempts and build_id is not None:
                await self.publish_failure(
                    build_id,
                    BuildFailure(
                        phase=message.subject.removeprefix("envstore."),
                        reason=f"internal error after {delivery.attempt} attempts: {error}",
                    ),
                )
                await message.ack()
            else:
                await message.nak(delay=min(2.0**delivery.attempt, 30.0))
            return
        finally:
            if build_id is not None:
                tasks = cancellations.running.get(build_id, set())
                tasks.discard(this_task)
                if not tasks:
                    cancellations.running.pop(build_id, None)
        heartbeat.cancel()
        await message.ack()

    async def replay(
        self, start_sequence: int, subjects: str = STREAM_SUBJECTS
    ) -> Any:
        """An ordered, unacknowledged subscription from ``start_sequence`` onwards (for readers
        that must see every event in stream order, like the projector)."""
        return await self.jetstream.subscribe(
            subjects,
            stream=self.stream_name,
            ordered_consumer=True,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(start_sequence, 1)
            ),
        )


async def _keep_alive(message: Msg, interval_seconds: float) -> None:
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            await message.in_progress()
        except Exception:
            log.debug("in_progress heartbeat failed", exc_info=True)
