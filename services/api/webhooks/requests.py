"""What a caller sends to register or change a webhook (validated with pydantic, so a wrong field
gets a message that names it)."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from envstore.api.webhooks.target_urls import MAX_URL_LENGTH

SECRET_MIN_LENGTH = 16
LARGEST_SEQUENCE = 2**63 - 1  # build ids are stream sequences, stored as bigint
Model = TypeVar("Model", bound=BaseModel)


class WebhookRegistration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=MAX_URL_LENGTH)
    namespace: str | None = None
    environment: str | None = None
    build_id: int | None = Field(default=None, ge=1, le=LARGEST_SEQUENCE)
    event_types: list[str] = Field(default_factory=list)  # empty: every type
    description: str = Field(default="", max_length=1000)
    # Unset: envstore generates one and returns it once, in the answer to this request.
    secret: str | None = Field(default=None, min_length=SECRET_MIN_LENGTH, max_length=256)


class WebhookChange(BaseModel):
    """A change: the fields given replace the webhook's (null clears a filter)."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=MAX_URL_LENGTH)
    namespace: str | None = None
    environment: str | None = None
    build_id: int | None = Field(default=None, ge=1, le=LARGEST_SEQUENCE)
    event_types: list[str] | None = None
    description: str | None = Field(default=None, max_length=1000)
    secret: str | None = Field(default=None, min_length=SECRET_MIN_LENGTH, max_length=256)
    rotate_secret: bool = False  # true: envstore generates a new secret and returns it once


class RequestInvalid(ValueError):
    pass


def parsed(model: type[Model], body: dict[str, Any]) -> Model:
    try:
        return model.model_validate(body)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or 'body'}: {problem['msg']}"
            for problem in error.errors()
        )
        raise RequestInvalid(problems) from None
