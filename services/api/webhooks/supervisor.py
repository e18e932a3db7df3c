"""Follows the webhooks' lifecycle events from the stream and keeps one delivery worker (and one
durable consumer) per live webhook: started when it is registered, stopped and its consumer removed
when it is deleted. On start it reads the lifecycle from the beginning, then starts the workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from envstore.api.subscriptions.stream_item import StreamItems
from envstore.api.webhooks.delivery_worker import (
    DeliveryPolicy,
    WebhookDeliveryWorker,
    consumer_name,
)
from envstore.api.webhooks.registry import WebhookRegistry
from envstore.api.webhooks.sender import WebhookSender
from envstore.common.task_cancellation import cancel_and_wait
from envstore.common.transport import EventBus
from envstore.common.events import WEBHOOK_LIFECYCLE_EVENTS, UndecodableEvent

log = logging.getLogger(__name__)

RESTART_DELAY_SECONDS = 1.0


class DeliverySupervisor:
    def __init__(self, bus: EventBus, registry: WebhookRegistry, sender: WebhookSender, policy: DeliveryPolicy) -> None:
        self.bus = bus
        self.registry = registry
        self.sender = sender
        self.policy = policy
        self.items = StreamItems(bus)
        self._workers: dict[int, asyncio.Task[None]] = {}
        self._removed: set[int] = set()

    async def run(self) -> None:
        subjects = [
            subject
            for event_type in WEBHOOK_LIFECYCLE_EVENTS
            for subject in (event_type.subject_pattern(), event_type.legacy_subject())
        ]
        subscription = await self.bus.jetstream.subscribe(
            subjects[0],
            stream=self.bus.stream_name,
            ordered_consumer=True,
            config=ConsumerConfig(filter_subjects=subjects, deliver_policy=DeliverPolicy.ALL),
        )
        try:
            async for message in subscription.messages:
                sequence = message.metadata.sequence.stream
                try:
                    self.registry.apply(self.bus.codec.decode(message.subject, message.data, sequence), sequence)
                except UndecodableEvent as error:
                    log.error("%s; this webhook change is not applied", error)
                if message.metadata.num_pending == 0:  # caught up with the lifecycle
                    await self.reconcile()
        finally:
            await cancel_and_wait(*self._workers.values())
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def reconcile(self) -> None:
        for webhook_id in self.registry.live:
            if webhook_id not in self._workers:
                self._workers[webhook_id] = asyncio.create_task(
                    self._deliver_while_live(webhook_id), name=f"webhook-{webhook_id}"
                )
        for webhook_id in self.registry.deleted - self._removed:
            worker = self._workers.pop(webhook_id, None)
            if worker is not None:
                await cancel_and_wait(worker)
            with contextlib.suppress(NotFoundError):
                await self.bus.jetstream.delete_consumer(self.bus.stream_name, consumer_name(webhook_id))
            self._removed.add(webhook_id)

    async def _deliver_while_live(self, webhook_id: int) -> None:
        worker = WebhookDeliveryWorker(webhook_id, self.registry, self.bus, self.sender, self.items, self.policy)
        while webhook_id in self.registry.live:
            try:
                await worker.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook %s's deliveries stopped; restarting them", webhook_id)
                await asyncio.sleep(RESTART_DELAY_SECONDS)
