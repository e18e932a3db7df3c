"""What request handlers share: settings, the bus, the read model, storage, the projector, tokens,
the login password and its throttle, artifact links, where channels may be fetched from, readiness
checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import nats.errors
from aiohttp import web

from envstore.api.artifact_links import ArtifactLinks
from envstore.api.envelopes import ApiError
from envstore.api.login_throttle import LoginThrottle
from envstore.api.projector import Projector
from envstore.api.read_model import ReadModel
from envstore.common.bus import EventBus
from envstore.common.channels import ChannelGuard
from envstore.common.events import Event
from envstore.common.permissions import Principal
from envstore.common.readiness import Readiness
from envstore.common.settings import GLOBAL_ONLY_SETTINGS, EnvstoreSettings
from envstore.common.storage import Storage
from envstore.common.tokens import TokenAuthority


@dataclass
class ApiContext:
    settings: EnvstoreSettings
    bus: EventBus
    read_model: ReadModel
    storage: Storage
    projector: Projector
    tokens: TokenAuthority
    login_password: str
    login_throttle: LoginThrottle
    artifact_links: ArtifactLinks
    channel_guard: ChannelGuard
    # What /readyz checks (the database, the bus): add a check here for anything else the API
    # needs before it may take traffic.
    readiness: Readiness

    async def publish_and_wait(self, event: Event, message_id: str) -> int:
        """Publish a command's event; answer once the read model shows it (bounded wait; after
        that the event is still accepted and will appear)."""
        try:
            acknowledgement = await self.bus.publish(event, message_id)
        except nats.errors.MaxPayloadError:
            raise ApiError(
                413,
                f"the request is too large to record: as an event it is over the event log's limit of "
                f"{self.bus.client.max_payload} bytes; send a smaller specification",
            ) from None
        await self.projector.wait_for(acknowledgement.seq, self.settings.projection_wait_seconds)
        return acknowledgement.seq

    async def effective_settings(self, namespace: str | None = None, environment: str | None = None) -> EnvstoreSettings:
        """Deployment settings, overridden by stored global, namespace and environment values
        (global-only keys are taken from the global level only; lists replace, not merge)."""
        scopes = [""]
        if namespace:
            scopes.append(namespace)
            if environment:
                scopes.append(f"{namespace}/{environment}")
        overrides: dict[str, Any] = {}
        for scope, values in zip(scopes, await self.read_model.setting_overrides(scopes)):
            for key, value in values.items():
                if scope and key in GLOBAL_ONLY_SETTINGS:
                    continue
                overrides[key] = value
        if not overrides:
            return self.settings
        return self.settings.model_validate({**self.settings.model_dump(), **overrides})

    async def principal_for(self, token: str | None) -> Principal:
        principal = self.tokens.principal_for(token)
        if not principal.authenticated:
            return principal
        bindings = await self.read_model.database_bindings(
            principal.primary_namespace, self.settings.role_mappings_version
        )
        return principal.with_database_bindings(bindings) if bindings else principal


CONTEXT = web.AppKey("context", ApiContext)
SETTINGS = web.AppKey("settings", EnvstoreSettings)


def context_of(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]


def principal_of(request: web.Request) -> Principal:
    return request["principal"]


def require(request: web.Request, arn: str, *permissions: str, message: str = "Unauthorized") -> None:
    if not principal_of(request).is_allowed(arn, *permissions):
        raise ApiError(403, message)
