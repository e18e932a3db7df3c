"""The one worker runtime every consuming process uses (solver, builder, packager, the webhook
deliverer): a durable JetStream pull consumer shared by the replicas, each message handled in
its own task with explicit acks.

- A message is acknowledged only after its handler returns, so its effects (the events the
  handler published) happen before JetStream forgets it; a worker that dies hands it back after
  ``ack_wait``, which a heartbeat (``in_progress``) extends while the handler runs.
- A handler that raises ``Redeliver`` (or any error) gets the message again after a delay
  (``nak``), doubling per delivery up to a cap.
- Stopping drains: fetching stops, running handlers get ``drain_seconds`` to finish, and what is
  still running is interrupted and handed back at once (``nak``) for another replica.
- Fetch errors (a reconnect, a leader election) are retried with tenacity's backoff.

What a delivery means for a build (attempts, time limits, cancellation) is ``build_policy``'s
job, not this module's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from tenacity import AsyncRetrying, retry_if_exception, wait_exponential

from envstore.common.events import Event, UndecodableEvent, build_id_of
from envstore.common.task_cancellation import cancel_and_wait
from envstore.common.transport import EventBus

log = logging.getLogger(__name__)

FETCH_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class Delivery:
    """One event handed to a worker, with its place in the stream."""

    event: Event
    subject: str
    stream_sequence: int
    attempt: int  # 1 for the first delivery
    headers: dict[str, str]
    payload: bytes = b""  # the message as stored

    @property
    def build_id(self) -> int | None:
        return build_id_of(self.event)

    @property
    def event_type(self) -> str:
        return self.event.tag()


Handler = Callable[[Delivery], Awaitable[None]]


class Redeliver(Exception):
    """Hand the message back; it comes again after ``delay_seconds`` (None: the backoff's)."""

    def __init__(self, reason: str, delay_seconds: float | None = None) -> None:
        super().__init__(reason)
        self.delay_seconds = delay_seconds


@dataclass(frozen=True)
class ConsumerSettings:
    durable: str
    subjects: Sequence[str]
    concurrency: int = 2
    ack_wait_seconds: float = 30.0
    # Where a new consumer starts (None: the stream's first event).
    start_sequence: int | None = None
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 30.0
    drain_seconds: float = 10.0
    max_ack_pending: int | None = None

    def retry_delay(self, attempt: int) -> float:
        return min(self.retry_base_seconds * 2 ** max(attempt - 1, 0), self.retry_max_seconds)

    def consumer_config(self) -> ConsumerConfig:
        config = ConsumerConfig(
            durable_name=self.durable,
            filter_subjects=list(self.subjects),
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_seconds,
            max_ack_pending=self.max_ack_pending or max(self.concurrency * 4, 16),
            max_deliver=-1,  # the handler's policy decides when to give up, and records it
            deliver_policy=DeliverPolicy.ALL,
        )
        if self.start_sequence is not None:
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = max(self.start_sequence, 1)
        return config


@dataclass
class _Running:
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    messages: dict[asyncio.Task[None], Msg] = field(default_factory=dict)


def _fetch_failed_transiently(error: BaseException) -> bool:
    return not isinstance(error, asyncio.CancelledError)


class Worker:
    """Runs ``handler`` for every event on a durable consumer until cancelled."""

    def __init__(self, bus: EventBus, consumer: ConsumerSettings, handler: Handler) -> None:
        self.bus = bus
        self.consumer = consumer
        self.handler = bus.telemetry.observed_handler(consumer.durable, handler)

    async def ensure_consumer(self) -> None:
        try:
            await self.bus.jetstream.add_consumer(self.bus.stream_name, self.consumer.consumer_config())
        except Exception:
            # A consumer whose settings cannot change in place (its start) still delivers.
            log.warning("consumer %s kept as it is", self.consumer.durable, exc_info=True)

    async def run(self) -> None:
        await self.ensure_consumer()
        subscription = await self.bus.jetstream.pull_subscribe_bind(
            durable=self.consumer.durable, stream=self.bus.stream_name
        )
        stop_reporting_lag = self.bus.telemetry.metrics.on_scrape(self._report_lag)
        slots = asyncio.Semaphore(self.consumer.concurrency)
        running = _Running()
        try:
            while True:
                await slots.acquire()
                try:
                    messages = await self._fetch(subscription)
                except BaseException:
                    slots.release()
                    raise
                if not messages:
                    slots.release()
                    continue
                for message in messages:
                    task = asyncio.create_task(self._handle(message))
                    running.tasks.add(task)
                    running.messages[task] = message
                    task.add_done_callback(running.tasks.discard)
                    task.add_done_callback(lambda done: running.messages.pop(done, None))
                    task.add_done_callback(lambda _task: slots.release())
        finally:
            stop_reporting_lag()
            await self._drain(running)
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _fetch(self, subscription) -> list[Msg]:  # type: ignore[no-untyped-def]
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_fetch_failed_transiently),
            wait=wait_exponential(multiplier=0.2, max=5.0),
            reraise=True,
        ):
            with attempt:
                if self.bus.client.is_closed:
                    raise asyncio.CancelledError("the connection to the bus is closed")
                try:
                    return await subscription.fetch(1, timeout=FETCH_WAIT_SECONDS)
                except NatsTimeoutError:
                    return []
                except Exception:
                    log.warning("fetch from %s failed; retrying", self.consumer.durable, exc_info=True)
                    raise
        return []

    async def _drain(self, running: _Running) -> None:
        """Let running handlers finish (bounded), then hand back what is left."""
        if running.tasks:
            _, still_running = await asyncio.wait(set(running.tasks), timeout=self.consumer.drain_seconds)
            # Handed back (not acknowledged, so redelivered); cancelled again while one runs on.
            await cancel_and_wait(*still_running)

    async def _report_lag(self) -> None:
        info = await self.bus.jetstream.consumer_info(self.bus.stream_name, self.consumer.durable)
        self.bus.telemetry.metrics.set_consumer_lag(
            self.consumer.durable, info.num_pending or 0, info.num_ack_pending or 0
        )

    async def _handle(self, message: Msg) -> None:
        metadata = message.metadata
        try:
            event = self.bus.codec.decode(message.subject, message.data, metadata.sequence.stream)
        except UndecodableEvent as error:
            # Nothing this worker can do with it, now or later; the projector stalls on it loudly.
            log.error("%s: skipped by worker %s", error, self.consumer.durable)
            await message.ack()
            return
        delivery = Delivery(
            event=event,
            subject=message.subject,
            stream_sequence=metadata.sequence.stream,
            attempt=metadata.num_delivered,
            headers=dict(message.headers or {}),
            payload=message.data,
        )
        with self.bus.telemetry.consumer_span(delivery):
            heartbeat = asyncio.create_task(_keep_alive(message, self.consumer.ack_wait_seconds / 3))
            try:
                await self.handler(delivery)
            except asyncio.CancelledError:
                # Stopping: hand the event back at once rather than after ack_wait.
                with contextlib.suppress(Exception):
                    await message.nak()
                raise
            except Redeliver as redeliver:
                delay = redeliver.delay_seconds
                log.info("event %s handed back: %s", delivery.stream_sequence, redeliver)
                await message.nak(delay=delay if delay is not None else self.consumer.retry_delay(delivery.attempt))
                return
            except Exception:
                log.exception("handling %s #%s failed", delivery.event_type, delivery.stream_sequence)
                await message.nak(delay=self.consumer.retry_delay(delivery.attempt))
                return
            finally:
                heartbeat.cancel()
            await message.ack()


async def _keep_alive(message: Msg, interval_seconds: float) -> None:
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            await message.in_progress()
        except Exception:
            log.debug("in_progress heartbeat failed", exc_info=True)
