"""One webhook's deliveries: its own durable JetStream consumer, from the event after its
registration, each event POSTed (several at once), every attempt published as
``webhook.delivery_attempted``, a failure retried with doubling delays (the message is nak'ed
with a delay) until it succeeds or attempts run out.

The message is acknowledged only after the attempt's outcome is published, so a delivering process
killed mid-POST loses nothing: JetStream hands the event out again after ``ack_wait``. A receiver
may then see an event twice; ``X-Envstore-Event-Id`` tells it so.

The consumer also reads the webhooks' changes and deletions, in stream order with the events, so
an event is first sent as the webhook was when it happened (its filters, URL and secret); a retry
goes as the webhook is now, and a deleted webhook gets nothing more."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import msgspec
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from envstore.api.subscriptions.event_filter import SUBSCRIBABLE_SUBJECTS
from envstore.api.subscriptions.stream_item import StreamItems
from envstore.api.webhooks.registry import Webhook, WebhookRegistry
from envstore.api.webhooks.sender import Post, PostOutcome, WebhookSender
from envstore.common.bus import EventBus
from envstore.common.events import UnknownEvent, WebhookDeleted, WebhookDeliveryAttempted, WebhookUpdated
from envstore.common.settings import EnvstoreSettings

log = logging.getLogger(__name__)

FETCH_WAIT_SECONDS = 5.0
WEBHOOK_CHANGES = (WebhookUpdated.SUBJECT, WebhookDeleted.SUBJECT)


@dataclass(frozen=True)
class DeliveryPolicy:
    timeout_seconds: float
    max_attempts: int
    retry_base_seconds: float
    retry_max_seconds: float
    ack_wait_seconds: float
    max_in_flight: int

    @classmethod
    def from_settings(cls, settings: EnvstoreSettings) -> DeliveryPolicy:
        return cls(
            timeout_seconds=settings.webhook_timeout_seconds,
            max_attempts=settings.webhook_max_attempts,
            retry_base_seconds=settings.webhook_retry_base_seconds,
            retry_max_seconds=settings.webhook_retry_max_seconds,
            ack_wait_seconds=settings.webhook_ack_wait_seconds,
            max_in_flight=settings.webhook_max_in_flight,
        )

    def retry_delay(self, failed_attempt: int) -> float:
        return min(self.retry_base_seconds * 2 ** (failed_attempt - 1), self.retry_max_seconds)


def consumer_name(webhook_id: int) -> str:
    return f"webhook-{webhook_id}"


def consumer_config(webhook_id: int, policy: DeliveryPolicy) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=consumer_name(webhook_id),
        # The events (not the webhooks' own: an attempt must not cause attempts), and the changes.
        filter_subjects=[*SUBSCRIBABLE_SUBJECTS, *WEBHOOK_CHANGES],
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=webhook_id + 1,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=policy.ack_wait_seconds,
        max_ack_pending=policy.max_in_flight,
        max_deliver=-1,  # this worker decides when to give up, and records it
    )


async def _keep_alive(message: Msg, interval_seconds: float) -> None:
    while True:
        await asyncio.sleep(interval_seconds)
        with contextlib.suppress(Exception):
            await message.in_progress()


class WebhookDeliveryWorker:
    def __init__(
        self,
        webhook_id: int,
        registry: WebhookRegistry,
        bus: EventBus,
        sender: WebhookSender,
        items: StreamItems,
        policy: DeliveryPolicy,
    ) -> None:
        self.webhook_id = webhook_id
        self.registry = registry
        self.bus = bus
        self.sender = sender
        self.items = items
        self.policy = policy

    async def ensure_consumer(self) -> None:
        try:
            await self.bus.jetstream.add_consumer(self.bus.stream_name, consumer_config(self.webhook_id, self.policy))
        except Exception:
            # An existing consumer whose settings cannot change in place still delivers.
            log.warning("consumer %s kept as it is", consumer_name(self.webhook_id), exc_info=True)

    async def run(self) -> None:
        """Deliver until cancelled (the webhook was deleted, or the process stops)."""
        subscription = await self.bus.jetstream.pull_subscribe_bind(
            durable=consumer_name(self.webhook_id), stream=self.bus.stream_name
        )
        slots = asyncio.Semaphore(self.policy.max_in_flight)
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                await slots.acquire()
                try:
                    messages = await subscription.fetch(1, timeout=FETCH_WAIT_SECONDS)
                except NatsTimeoutError:
                    slots.release()
                    continue
                except Exception:
                    slots.release()
                    if self.bus.client.is_closed:
                        raise
                    log.exception("fetching webhook %s's events failed; retrying", self.webhook_id)
                    await asyncio.sleep(0.5)
                    continue
                for message in messages:
                    if message.subject in WEBHOOK_CHANGES:
                        await self._apply_change(message)
                        slots.release()
                        continue
                    task = asyncio.create_task(self._deliver(message, self._webhook_for(message)))
                    running.add(task)
                    task.add_done_callback(running.discard)
                    task.add_done_callback(lambda _task: slots.release())
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    def _webhook_for(self, message: Msg) -> Webhook | None:
        current = self.registry.live.get(self.webhook_id)
        if current is None or message.metadata.num_delivered > 1:
            return current
        return self.registry.as_of(self.webhook_id, message.metadata.sequence.stream)

    async def _apply_change(self, message: Msg) -> None:
        try:
            self.registry.apply(self.bus.codec.decode(message.subject, message.data), message.metadata.sequence.stream)
        except (UnknownEvent, msgspec.DecodeError):
            log.warning("webhook change #%s cannot be read; skipped", message.metadata.sequence.stream)
        await message.ack()

    async def _deliver(self, message: Msg, webhook: Webhook | None) -> None:
        try:
            await self._deliver_once(message, webhook)
        except asyncio.CancelledError:
            # Stopping: hand the event back at once rather than after ack_wait.
            with contextlib.suppress(Exception):
                await message.nak()
            raise
        except Exception:
            attempt = message.metadata.num_delivered
            log.exception(
                "delivering event #%s to webhook %s failed", message.metadata.sequence.stream, self.webhook_id
            )
            with contextlib.suppress(Exception):
                await message.nak(delay=self.policy.retry_delay(attempt))

    async def _deliver_once(self, message: Msg, webhook: Webhook | None) -> None:
        sequence = message.metadata.sequence.stream
        attempt = message.metadata.num_delivered
        if webhook is None:  # deleted
            await message.ack()
            return
        item = await self.items.item_for(message)
        if item is None or not webhook.event_filter.accepts(item.event_type, item.scope):
            await message.ack()
            return
        post = Post(webhook.id, webhook.url, webhook.secret or "", sequence, item.event_type, attempt, item.envelope)
        outcome = await self._attempt(webhook, post, message)
        final = outcome.succeeded or attempt >= self.policy.max_attempts
        retry_in = None if final else self.policy.retry_delay(attempt)
        await self.bus.publish(
            WebhookDeliveryAttempted(
                webhook_id=webhook.id,
                event_id=sequence,
                event_type=item.event_type,
                attempt=attempt,
                succeeded=outcome.succeeded,
                status_code=outcome.status_code,
                error=outcome.error,
                duration_seconds=round(outcome.duration_seconds, 6),
                final=final,
                retry_in_seconds=retry_in,
            ),
            message_id=f"webhook-attempt:{webhook.id}:{sequence}:{attempt}",
        )
        if final:
            await message.ack()
        else:
            await message.nak(delay=retry_in)

    async def _attempt(self, webhook: Webhook, post: Post, message: Msg) -> PostOutcome:
        if post.attempt > self.policy.max_attempts:
            # The earlier attempts ended without an outcome: the delivering process stopped.
            return PostOutcome(False, None, f"gave up: {post.attempt - 1} attempts ended without an answer", 0.0)
        if webhook.secret is None:
            return PostOutcome(False, None, webhook.secret_problem, 0.0)
        heartbeat = asyncio.create_task(_keep_alive(message, self.policy.ack_wait_seconds / 3))
        try:
            return await self.sender.send(post)
        finally:
            heartbeat.cancel()
