"""One webhook's deliveries: its own durable JetStream consumer, from the event after its
registration, each event POSTed (several at once), every attempt published as
``webhook.delivery_attempted``, a failure retried with doubling delays (the message is handed back
with a delay) until it succeeds or attempts run out. It runs on the worker runtime every service
shares (``envstore.common.worker_runtime``).

The message is acknowledged only after the attempt's outcome is published, so a delivering process
killed mid-POST loses nothing: JetStream hands the event out again after ``ack_wait``. A receiver
may then see an event twice; ``X-Envstore-Event-Id`` tells it so.

The consumer also reads the webhooks' changes and deletions, in stream order with the events, so
an event is first sent as the webhook was when it happened (its filters, URL and secret); a retry
goes as the webhook is now, and a deleted webhook gets nothing more."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from envstore.api.subscriptions.event_filter import SUBSCRIBABLE_SUBJECTS
from envstore.api.subscriptions.stream_item import StreamItems
from envstore.api.webhooks.registry import Webhook, WebhookRegistry
from envstore.api.webhooks.sender import Post, PostOutcome, WebhookSender
from envstore.common.events import WebhookDeleted, WebhookDeliveryAttempted, WebhookUpdated
from envstore.common.settings import EnvstoreSettings
from envstore.common.transport import IMPORTED_HEADER, EventBus
from envstore.common.worker_runtime import ConsumerSettings, Delivery, Redeliver, Worker

log = logging.getLogger(__name__)

WEBHOOK_CHANGES = (WebhookUpdated, WebhookDeleted)
WEBHOOK_CHANGE_SUBJECTS = tuple(
    subject for change in WEBHOOK_CHANGES for subject in (change.subject_pattern(), change.legacy_subject())
)


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


def consumer_settings(webhook: Webhook, policy: DeliveryPolicy) -> ConsumerSettings:
    return ConsumerSettings(
        durable=consumer_name(webhook.id),
        # The events (not the webhooks' own: an attempt must not cause attempts), and the changes.
        subjects=[*SUBSCRIBABLE_SUBJECTS, *WEBHOOK_CHANGE_SUBJECTS],
        concurrency=policy.max_in_flight,
        ack_wait_seconds=policy.ack_wait_seconds,
        start_sequence=webhook.registered_sequence + 1,
        retry_base_seconds=policy.retry_base_seconds,
        retry_max_seconds=policy.retry_max_seconds,
        max_ack_pending=policy.max_in_flight,
    )


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

    def worker(self) -> Worker | None:
        webhook = self.registry.live.get(self.webhook_id)
        if webhook is None:
            return None
        return Worker(self.bus, consumer_settings(webhook, self.policy), self.handle)

    async def run(self) -> None:
        """Deliver until cancelled (the webhook was deleted, or the process stops)."""
        worker = self.worker()
        if worker is not None:
            await worker.run()

    async def handle(self, delivery: Delivery) -> None:
        if isinstance(delivery.event, WEBHOOK_CHANGES):
            self.registry.apply(delivery.event, delivery.stream_sequence)
            return
        if IMPORTED_HEADER in delivery.headers:
            return  # imported history is not news
        await self._deliver(delivery, self._webhook_for(delivery))

    def _webhook_for(self, delivery: Delivery) -> Webhook | None:
        current = self.registry.live.get(self.webhook_id)
        if current is None or delivery.attempt > 1:
            return current
        return self.registry.as_of(self.webhook_id, delivery.stream_sequence)

    async def _deliver(self, delivery: Delivery, webhook: Webhook | None) -> None:
        sequence = delivery.stream_sequence
        attempt = delivery.attempt
        if webhook is None:  # deleted
            return
        item = await self.items.item_of(delivery.event, delivery.subject, sequence, delivery.payload)
        if not webhook.event_filter.accepts(item.event_type, item.scope):
            return
        post = Post(webhook.id, webhook.url, webhook.secret or "", sequence, item.event_type, attempt, item.envelope)
        outcome = await self._attempt(webhook, post)
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
        if not final:
            raise Redeliver(f"attempt {attempt} of event {sequence} to webhook {webhook.id} failed", retry_in)

    async def _attempt(self, webhook: Webhook, post: Post) -> PostOutcome:
        if post.attempt > self.policy.max_attempts:
            # The earlier attempts ended without an outcome: the delivering process stopped.
            return PostOutcome(False, None, f"gave up: {post.attempt - 1} attempts ended without an answer", 0.0)
        if webhook.secret is None:
            return PostOutcome(False, None, webhook.secret_problem, 0.0)
        return await self.sender.send(post)
