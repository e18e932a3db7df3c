"""Who may read an event: ``environment::read`` on its namespace/environment (``setting::read``
for settings changes). An event whose namespace cannot be found is checked on the global ARN,
which only bindings for every namespace (``*/…``) cover. Webhook bookkeeping is never readable
here (the webhook API shows it to those who manage the webhook)."""

from __future__ import annotations

from envstore.api.subscriptions.event_scope import EventScope
from envstore.common.events import WEBHOOK_EVENTS, Event, SettingsChanged
from envstore.common.permissions import Principal

READ_EVENTS = "environment::read"
READ_SETTINGS = "setting::read"


def permission_to_read(event: Event) -> str:
    return READ_SETTINGS if isinstance(event, SettingsChanged) else READ_EVENTS


class ReadableEvents:
    """One caller's reading rights, with the answers per ARN remembered (a stream asks often)."""

    def __init__(self, principal: Principal) -> None:
        self.principal = principal
        self._answers: dict[tuple[str, str], bool] = {}

    def may_read_scope(self, arn: str, permission: str = READ_EVENTS) -> bool:
        key = (arn, permission)
        answer = self._answers.get(key)
        if answer is None:
            answer = self._answers[key] = self.principal.is_allowed(arn, permission)
        return answer

    def may_read(self, event: Event, scope: EventScope) -> bool:
        if isinstance(event, WEBHOOK_EVENTS):
            return False
        return self.may_read_scope(scope.arn, permission_to_read(event))
