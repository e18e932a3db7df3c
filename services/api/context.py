"""What request handlers share: settings, the bus, the read model, storage, the projector, tokens,
the login password and its throttle, artifact links, where channels may be fetched from, readiness
checks; and how a command becomes an event (``publish_and_wait``, ``command``)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import nats.errors
from aiohttp import web
from nats.js.api import PubAck

from envstore.api.answer_cache import AnswerCache
from envstore.api.artifact_links import ArtifactLinks
from envstore.api.envelopes import ApiError
from envstore.api.login_throttle import LoginThrottle
from envstore.api.projector import Projector
from envstore.api.read_model import ReadModel
from envstore.common.admin_hooks import SpecificationCheck
from envstore.common.channels import ChannelGuard
from envstore.common.events import BuildSubmitted, Event, WebhookRegistered
from envstore.common.ids import IdAllocator
from envstore.common.transport import Conflict, EventBus, Expectation
from envstore.common.permissions import Principal
from envstore.common.read_model_rules import effective_settings, role_mapping_bindings
from envstore.common.readiness import Readiness
from envstore.common.settings import EnvstoreSettings
from envstore.common.storage import Storage
from envstore.common.tokens import TokenAuthority
from envstore.common.usage import UsageRecorder


# How often a command is decided again against fresh state when another got there first, and the
# most it waits (at random, so that contenders spread out) before deciding again.
COMMAND_ATTEMPTS = 8
COMMAND_RETRY_JITTER_SECONDS = 0.05

Decide = Callable[[], Awaitable[Event | None]]


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
    # What /readyz checks (the database, the bus, the projection): add a check here for anything
    # else the API needs before it may take traffic.
    readiness: Readiness
    # Answers of read routes and callers' principals, kept until the read model changes them.
    answers: AnswerCache
    # Counts artifact downloads and activations, published as build.used events in batches.
    usage: UsageRecorder
    # The deployment's validate_specification hook, None when it has none.
    specification_check: SpecificationCheck | None = None
    build_ids: IdAllocator = field(init=False)
    webhook_ids: IdAllocator = field(init=False)

    def __post_init__(self) -> None:
        # Release 0.1.0's ids were stream sequences: new ids start above the last one it gave.
        self.build_ids = IdAllocator(self.bus, "build", BuildSubmitted.legacy_subject())
        self.webhook_ids = IdAllocator(self.bus, "webhook", WebhookRegistered.legacy_subject())

    async def publish_and_wait(
        self, event: Event, message_id: str, principal: str | None = None, expect: Expectation | None = None
    ) -> PubAck:
        """Publish an event; answer once the read model shows it (bounded wait; after that the
        event is still accepted and will appear)."""
        try:
            acknowledgement = await self.bus.publish(event, message_id, principal=principal, expect=expect)
        except nats.errors.MaxPayloadError:
            raise ApiError(
                413,
                f"the request is too large to record: as an event it is over the event log's limit of "
                f"{self.bus.client.max_payload} bytes; send a smaller specification",
            ) from None
        await self.projector.wait_for(acknowledgement.seq, self.settings.projection_wait_seconds)
        return acknowledgement

    async def command(self, aggregate: str, decide: Decide, message_id: str, principal: str | None = None) -> PubAck | None:
        """A command on one aggregate (the subject filter ``aggregate``, e.g. an environment's
        tree): ``decide`` checks the read model and returns the event to publish (None: nothing
        to do). The event is published expecting the aggregate's position the decision was taken
        at; if another event got there first, the read model catches up and ``decide`` runs again
        on the fresh state (which may now refuse); after ``COMMAND_ATTEMPTS`` the caller gets 409."""
        for _ in range(COMMAND_ATTEMPTS):
            # The position first, then the state: a state newer than its position only makes a
            # conflict, never a decision on stale state that passes.
            position = await self.read_model.aggregate_position(aggregate)
            event = await decide()
            if event is None:
                return None
            try:
                return await self.publish_and_wait(event, message_id, principal, Expectation(aggregate, position))
            except Conflict:
                await self.projector.wait_for(await self.bus.last_sequence(), self.settings.projection_wait_seconds)
                await asyncio.sleep(random.uniform(0, COMMAND_RETRY_JITTER_SECONDS))
        raise ApiError(
            409,
            "the request conflicted with other changes of the same environment or namespace made at the "
            "same time, and nothing was changed; look at its current state and send the request again",
        )

    async def effective_settings(self, namespace: str | None = None, environment: str | None = None) -> EnvstoreSettings:
        return await effective_settings(self.read_model.pool, self.settings, namespace, environment)

    async def principal_for(self, token: str | None) -> Principal:
        """Who presents ``token``, with what role mappings grant their namespace (read from the
        read model once per namespace until access changes, not on every request)."""
        principal = self.tokens.principal_for(token)
        if not principal.authenticated:
            return principal
        bindings = self.answers.bindings(principal.primary_namespace)
        if bindings is None:
            generation = self.answers.generation
            bindings = await role_mapping_bindings(
                self.read_model.pool, principal.primary_namespace, self.settings.role_mappings_version
            )
            self.answers.keep_bindings(principal.primary_namespace, bindings, generation)
        return principal.with_database_bindings(bindings) if bindings else principal


CONTEXT = web.AppKey("context", ApiContext)
SETTINGS = web.AppKey("settings", EnvstoreSettings)


def context_of(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]


def principal_of(request: web.Request) -> Principal:
    return request["principal"]


def actor_of(request: web.Request) -> str:
    """Who a request's events are recorded as caused by (the ``principal`` of its events): the
    authenticated token's subject, never anything the request's body says."""
    principal = principal_of(request)
    if not principal.authenticated:
        return "anonymous"
    if principal.subject is not None:
        return principal.subject
    if principal.is_service_account:
        return f"service-account:{principal.primary_namespace}"
    return f"user:{principal.primary_namespace}"


def require(request: web.Request, arn: str, *permissions: str, message: str = "Unauthorized") -> None:
    if not principal_of(request).is_allowed(arn, *permissions):
        raise ApiError(403, message)
