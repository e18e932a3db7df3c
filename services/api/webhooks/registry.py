"""The webhooks the delivering process knows, as the stream's lifecycle events define them."""

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
    id: int  # the stream sequence of its webhook.registered event
    url: str
    event_filter: EventFilter
    secret: str | None  # None: unreadable with this deployment's key
    secret_problem: str = ""


class WebhookRegistry:
    def __init__(self, secret_box: SecretBox) -> None:
        self.secret_box = secret_box
        self.live: dict[int, Webhook] = {}
        self.deleted: set[int] = set()

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
        if isinstance(event, WebhookRegistered):
            if sequence in self.deleted:
                return
            secret, problem = self._secret(event.encrypted_secret)
            self.live[sequence] = Webhook(sequence, event.url, self._filter(event), secret, problem)
        elif isinstance(event, WebhookUpdated):
            current = self.live.get(event.webhook_id)
            if current is None:
                return
            secret, problem = (
                self._secret(event.encrypted_secret)
                if event.encrypted_secret is not None
                else (current.secret, current.secret_problem)
            )
            self.live[event.webhook_id] = Webhook(event.webhook_id, event.url, self._filter(event), secret, problem)
        elif isinstance(event, WebhookDeleted):
            self.live.pop(event.webhook_id, None)
            self.deleted.add(event.webhook_id)
