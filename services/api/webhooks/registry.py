"""The webhooks the delivering process knows, as the stream's lifecycle events define them.

Two readers apply lifecycle events here: the supervisor (every webhook's, in stream order) and
each webhook's delivery worker (the changes, in stream order with its events, so the versions
before an event are known when the event is sent). Each is applied once; an older one never undoes
a newer. Every version is kept, so an event is sent as the webhook was when it happened."""

from __future__ import annotations

from dataclasses import dataclass

from envstore.api.subscriptions.event_filter import EventFilter
from envstore.api.webhooks.secret_box import SecretBox, SecretUnreadable
from envstore.common.events import (
    Event,
    WebhookDeleted,
    WebhookRegistered,
    WebhookUpdated,
)


@dataclass(frozen=True)
class Webhook:
    id: int
    registered_sequence: int  # the stream sequence of its webhook.registered event
    url: str
    event_filter: EventFilter
    secret: str | None  # None: unreadable with this deployment's key
    secret_problem: str = ""


class WebhookRegistry:
    def __init__(self, secret_box: SecretBox) -> None:
        self.secret_box = secret_box
        self.live: dict[int, Webhook] = {}
        self.deleted: set[int] = set()
        self._applied: dict[int, int] = {}  # webhook id → sequence of its last lifecycle event applied
        self._versions: dict[int, list[tuple[int, Webhook]]] = {}  # webhook id → (sequence, version)

    def _secret(self, encrypted: str) -> tuple[str | None, str]:
        try:
            return self.secret_box.decrypt(encrypted), ""
        except SecretUnreadable as unreadable:
            return None, str(unreadable)

    @staticmethod
    def _filter(event: WebhookRegistered | WebhookUpdated) -> EventFilter:
        # Not validated again: the API did. A type unknown to this version matches nothing.
        return EventFilter(event.namespace, event.environment, event.build_id, frozenset(event.event_types))

    def apply(self, event: Event, sequence: int) -> None:
        webhook_id = getattr(event, "webhook_id", None)
        if webhook_id is None or sequence <= self._applied.get(webhook_id, 0) or webhook_id in self.deleted:
            return
        self._applied[webhook_id] = sequence
        if isinstance(event, WebhookRegistered):
            secret, problem = self._secret(event.encrypted_secret)
            self._set(webhook_id, sequence, Webhook(webhook_id, sequence, event.url, self._filter(event), secret, problem))
        elif isinstance(event, WebhookUpdated):
            current = self.live.get(webhook_id)
            if current is None:
                return
            secret, problem = (
                self._secret(event.encrypted_secret)
                if event.encrypted_secret is not None
                else (current.secret, current.secret_problem)
            )
            self._set(
                webhook_id,
                sequence,
                Webhook(webhook_id, current.registered_sequence, event.url, self._filter(event), secret, problem),
            )
        elif isinstance(event, WebhookDeleted):
            self.live.pop(webhook_id, None)
            self.deleted.add(webhook_id)

    def _set(self, webhook_id: int, sequence: int, webhook: Webhook) -> None:
        self.live[webhook_id] = webhook
        self._versions.setdefault(webhook_id, []).append((sequence, webhook))

    def as_of(self, webhook_id: int, sequence: int) -> Webhook | None:
        """The webhook as it was just before the event at ``sequence``."""
        chosen = None
        for version_sequence, webhook in self._versions.get(webhook_id, []):
            if version_sequence >= sequence:
                break
            chosen = webhook
        return chosen
