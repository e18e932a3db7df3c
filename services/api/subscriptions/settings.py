"""Settings of the live event stream and of webhooks, read from ``ENVSTORE_<KEY>``.

Kept apart from the main settings model until they move into it; the keys will stay the same."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class SubscriptionSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ENVSTORE_", extra="ignore")

    # --- live stream (GET /api/v1/events/) ---
    events_keepalive_seconds: float = Field(default=15.0, gt=0)

    # --- webhook targets ---
    # Host names ("hooks.internal", "*.corp.example"), addresses or networks ("10.1.0.0/16") that
    # webhooks may target although they are loopback, private or link-local (refused otherwise).
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # True: webhooks may target only the hosts of webhook_allowed_hosts.
    webhook_only_allowed_hosts: bool = False
    # Encrypts webhook secrets inside the event stream; unset: generated once into
    # <data_dir>/webhook-secret-key, shared by the API and the delivering process.
    webhook_secret_key: SecretStr | None = None

    # --- webhook delivery ---
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_max_attempts: int = Field(default=8, ge=1)
    webhook_retry_base_seconds: float = Field(default=2.0, gt=0)  # doubles after each failure
    webhook_retry_max_seconds: float = Field(default=600.0, gt=0)
    webhook_ack_wait_seconds: float = Field(default=30.0, gt=0)  # a dead deliverer's POST is retried after this
    webhook_max_in_flight: int = Field(default=16, ge=1)  # concurrent POSTs per webhook

    @field_validator("webhook_allowed_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [item.strip() for item in text.split(",") if item.strip()]
        return value
