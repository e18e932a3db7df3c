"""What a caller sends to register or change a webhook (validated with pydantic, so a wrong field
gets a message that names it)."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from envstore.api.webhooks.target_urls import MAX_URL_LENGTH
from envstore.common.specification import NAME_PATTERN, NAME_RULE

SECRET_MIN_LENGTH = 16
LARGEST_SEQUENCE = 2**63 - 1  # build ids are stream sequences, stored as bigint
Model = TypeVar("Model", bound=BaseModel)


def _url_text(url: str | None) -> str | None:
    if url is not None and any(ord(character) <= 0x20 or ord(character) == 0x7F for character in url):
        raise ValueError("the URL must not contain spaces or control characters (percent-encode them)")
    return url


def _name(value: str | None) -> str | None:
    if value is not None and value != "" and not NAME_PATTERN.fullmatch(value):
        raise ValueError(f"{value!r} may only contain {NAME_RULE}")
    return value


def _description(value: str | None) -> str | None:
    if value is not None and any(ord(character) < 0x20 and character not in "\t\n" for character in value):
        raise ValueError("the description must not contain control characters")
    return value


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

    _checked_url = field_validator("url")(_url_text)
    _checked_names = field_validator("namespace", "environment")(_name)
    _checked_description = field_validator("description")(_description)


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

    _checked_url = field_validator("url")(_url_text)
    _checked_names = field_validator("namespace", "environment")(_name)
    _checked_description = field_validator("description")(_description)


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
