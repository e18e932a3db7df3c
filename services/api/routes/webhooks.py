"""Webhooks: register, list, read, change and delete them, and read their delivery log.

A webhook is scoped by its filters: managing one needs ``namespace::update`` (and reading its
events ``environment::read``) on its namespace/environment; a webhook for every namespace needs
them on every namespace. Its secret is returned once: in the answer that created (or rotated) it."""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from envstore.api.context import SETTINGS, actor_of, context_of, principal_of
from envstore.api.envelopes import ApiError, ack, ok
from envstore.api.pagination import is_whole_number, page_of, page_response
from envstore.api.routes.paths import Routes
from envstore.api.routes.specifications import read_json_object
from envstore.api.subscriptions.event_filter import (
    SUBSCRIBABLE_EVENT_TYPES,
    EventFilter,
    FilterError,
)
from envstore.api.subscriptions.event_scope import EventScope
from envstore.api.webhooks.read_model import (
    WebhookReadModel,
    attempt_document,
    webhook_document,
)
from envstore.api.webhooks.requests import (
    RequestInvalid,
    WebhookChange,
    WebhookRegistration,
    parsed,
)
from envstore.api.webhooks.secret_box import SecretBox, new_secret
from envstore.api.webhooks.target_urls import TargetGuard, TargetRefused
from envstore.common.events import WebhookDeleted, WebhookRegistered, WebhookUpdated
from envstore.common.settings import EnvstoreSettings

MANAGE_WEBHOOKS = ("environment::read", "namespace::update")
WEBHOOK_MISSING = "webhook does not exist"
FILTER_FIELDS = ("namespace", "environment", "build_id", "event_types")


@dataclass
class WebhookAdministration:
    settings: EnvstoreSettings

    @functools.cached_property
    def guard(self) -> TargetGuard:
        return TargetGuard.from_settings(self.settings)

    @functools.cached_property
    def secret_box(self) -> SecretBox:
        # Made on first use: it may create the key file in the data directory.
        return SecretBox.from_settings(self.settings)


WEBHOOK_ADMINISTRATION = web.AppKey("webhook_administration", WebhookAdministration)


def _administration(request: web.Request) -> WebhookAdministration:
    return request.app[WEBHOOK_ADMINISTRATION]


def _read_model(request: web.Request) -> WebhookReadModel:
    return WebhookReadModel(context_of(request).read_model.pool)


def _webhook_id(request: web.Request) -> int:
    text = request.match_info["webhook_id"]
    if not is_whole_number(text, most_digits=18):
        raise ApiError(404, WEBHOOK_MISSING)
    return int(text)


def _scope_arn(namespace: str | None, environment: str | None) -> str:
    return EventScope(namespace, environment if namespace else None).arn


def _require_manage(request: web.Request, namespace: str | None, environment: str | None) -> None:
    arn = _scope_arn(namespace, environment)
    if not principal_of(request).is_allowed(arn, *MANAGE_WEBHOOKS):
        where = arn or "every namespace"
        raise ApiError(403, f"Unauthorized to manage webhooks of {where} (needs the admin role there)")


@dataclass(frozen=True)
class WebhookTarget:
    """A validated URL and filters, ready for an event."""

    url: str
    namespace: str | None
    environment: str | None
    build_id: int | None
    event_types: list[str]


async def _validated_target(request: web.Request, fields: dict[str, Any]) -> WebhookTarget:
    try:
        event_filter = EventFilter.of(
            fields["namespace"], fields["environment"], fields["build_id"], fields["event_types"]
        )
    except FilterError as error:
        raise ApiError(400, str(error)) from None
    namespace, environment = event_filter.namespace, event_filter.environment
    if event_filter.build_id is not None:
        # A build belongs to one environment: that is the webhook's scope.
        build = await context_of(request).read_model.build_row(event_filter.build_id)
        if build is None:
            raise ApiError(404, "build id does not exist")
        if namespace not in (None, build["namespace_name"]) or environment not in (None, build["environment_name"]):
            raise ApiError(400, f"build {event_filter.build_id} is not in {_scope_arn(namespace, environment)}")
        namespace, environment = build["namespace_name"], build["environment_name"]
    # Permission before the URL: only those who may manage the webhook learn where a host resolves.
    _require_manage(request, namespace, environment)
    try:
        target = await _administration(request).guard.check(fields["url"])
    except TargetRefused as error:
        raise ApiError(400, str(error)) from None
    return WebhookTarget(target.url, namespace, environment, event_filter.build_id, sorted(event_filter.event_types))


def _message_id(request: web.Request, kind: str) -> str:
    key = request.headers.get("Idempotency-Key")
    return f"{kind}:{key}" if key else f"{kind}:{uuid.uuid4()}"


async def _body(request: web.Request, model: type[WebhookRegistration] | type[WebhookChange]) -> Any:
    try:
        return parsed(model, await read_json_object(request))
    except RequestInvalid as error:
        raise ApiError(400, str(error)) from None


async def _published(request: web.Request, event: Any, message_id: str) -> tuple[int, bool]:
    """Publish and wait until the read model shows it; the webhook's id and whether an earlier
    request with the same Idempotency-Key published it already (then: that request's webhook)."""
    context = context_of(request)
    acknowledgement = await context.publish_and_wait(event, message_id, actor_of(request))
    if acknowledgement.duplicate:
        event = await context.bus.event_at(acknowledgement.seq)
    return event.webhook_id, bool(acknowledgement.duplicate)


async def _document(request: web.Request, webhook_id: int) -> dict[str, Any]:
    row = await _read_model(request).webhook(webhook_id)
    if row is None:
        raise ApiError(404, WEBHOOK_MISSING)
    return webhook_document(row)


async def register_webhook(request: web.Request) -> web.Response:
    registration: WebhookRegistration = await _body(request, WebhookRegistration)
    target = await _validated_target(request, registration.model_dump())
    secret = registration.secret or new_secret()
    event = WebhookRegistered(
        webhook_id=await context_of(request).webhook_ids.next(),
        url=target.url,
        namespace=target.namespace,
        environment=target.environment,
        build_id=target.build_id,
        event_types=target.event_types,
        description=registration.description,
        encrypted_secret=_administration(request).secret_box.encrypt(secret),
        registered_by=principal_of(request).primary_namespace,
    )
    webhook_id, repeated = await _published(request, event, _message_id(request, "webhook-registered"))
    document = await _document(request, webhook_id)
    if repeated:
        return ok(document, message="already registered by an earlier request with this Idempotency-Key")
    if registration.secret is None:
        document["secret"] = secret
    return ok(
        document,
        message="webhook registered"
        + ("; keep its secret: it is not shown again" if registration.secret is None else ""),
    )


async def list_webhooks(request: web.Request) -> web.Response:
    principal = principal_of(request)
    visible = [
        webhook_document(row)
        for row in await _read_model(request).webhooks()
        if principal.is_allowed(_scope_arn(row["namespace"], row["environment"]), *MANAGE_WEBHOOKS)
    ]
    page = page_of(request)
    ordered = list(reversed(visible)) if page.descending else visible
    return page_response(ordered[page.offset : page.offset + page.size], page, len(visible))


async def _managed_webhook(request: web.Request) -> dict[str, Any]:
    document = await _document(request, _webhook_id(request))
    _require_manage(request, document["namespace"], document["environment"])
    return document


async def get_webhook(request: web.Request) -> web.Response:
    return ok(await _managed_webhook(request))


async def update_webhook(request: web.Request) -> web.Response:
    current = await _managed_webhook(request)
    change: WebhookChange = await _body(request, WebhookChange)
    given = change.model_dump(include=change.model_fields_set)
    if given.get("url", "") is None:
        raise ApiError(400, "url: a webhook needs a URL")
    merged = {name: given.get(name, current[name]) for name in ("url", *FILTER_FIELDS, "description")}
    merged["event_types"] = merged["event_types"] or []
    target = await _validated_target(request, merged)
    secret = change.secret or (new_secret() if change.rotate_secret else None)
    event = WebhookUpdated(
        webhook_id=current["id"],
        url=target.url,
        namespace=target.namespace,
        environment=target.environment,
        build_id=target.build_id,
        event_types=target.event_types,
        description=merged["description"] or "",
        encrypted_secret=_administration(request).secret_box.encrypt(secret) if secret else None,
    )
    await _published(request, event, _message_id(request, "webhook-updated"))
    document = await _document(request, current["id"])
    if change.rotate_secret and not change.secret:
        document["secret"] = secret
        return ok(document, message="webhook updated; keep its new secret: it is not shown again")
    return ok(document, message="webhook updated")


async def delete_webhook(request: web.Request) -> web.Response:
    current = await _managed_webhook(request)
    await _published(request, WebhookDeleted(webhook_id=current["id"]), _message_id(request, "webhook-deleted"))
    return ack("webhook deleted; deliveries in progress stop")


async def list_deliveries(request: web.Request) -> web.Response:
    current = await _managed_webhook(request)
    page = page_of(request)
    event_id = request.query.get("event_id", "")
    if event_id and not is_whole_number(event_id, most_digits=18):
        raise ApiError(400, f"query parameter 'event_id' must be an event id (a stream sequence), got {event_id!r}")
    rows, count = await _read_model(request).attempts(current["id"], int(event_id) if event_id else None, page)
    return page_response([attempt_document(row) for row in rows], page, count)


WEBHOOK_BODY = {
    "type": "object",
    "properties": {
        "url": {"type": "string", "format": "uri"},
        "namespace": {"type": ["string", "null"]},
        "environment": {"type": ["string", "null"]},
        "build_id": {"type": ["integer", "null"], "minimum": 1},
        "event_types": {"type": "array", "items": {"type": "string", "enum": sorted(SUBSCRIBABLE_EVENT_TYPES)}},
        "description": {"type": "string"},
        "secret": {"type": "string", "minLength": 16},
    },
}
WEBHOOK_CHANGE_BODY = {
    **WEBHOOK_BODY,
    "properties": {**WEBHOOK_BODY["properties"], "rotate_secret": {"type": "boolean"}},
}


def register(routes: Routes) -> None:
    routes.app[WEBHOOK_ADMINISTRATION] = WebhookAdministration(routes.app[SETTINGS])
    routes.add(
        "POST",
        "/api/v1/webhook/",
        register_webhook,
        "Register a webhook (its secret is returned once)",
        body={**WEBHOOK_BODY, "required": ["url"]},
        responses=(200, 400, 403, 404),
    )
    routes.add("GET", "/api/v1/webhook/", list_webhooks, "Webhooks the caller manages", query=("page", "size", "order"))
    routes.add(
        "GET",
        "/api/v1/webhook/{webhook_id}/",
        get_webhook,
        "One webhook, with its last delivery",
        responses=(200, 403, 404),
    )
    routes.add(
        "PUT",
        "/api/v1/webhook/{webhook_id}/",
        update_webhook,
        "Change a webhook's URL, filters, description or secret (fields given replace)",
        body=WEBHOOK_CHANGE_BODY,
        responses=(200, 400, 403, 404),
    )
    routes.add("DELETE", "/api/v1/webhook/{webhook_id}/", delete_webhook, "Delete a webhook", responses=(200, 403, 404))
    routes.add(
        "GET",
        "/api/v1/webhook/{webhook_id}/delivery/",
        list_deliveries,
        "A webhook's delivery attempts (status code or error of each)",
        query=("event_id", "page", "size", "order"),
        responses=(200, 403, 404),
    )
