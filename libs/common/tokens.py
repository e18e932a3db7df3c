"""Tokens → principals, shared by every service that authenticates callers (API, registry).

Accepted: the admin service token (``ENVSTORE_ADMIN_TOKEN``); anything else is anonymous.
(conda-store's JWTs and predefined tokens are added with the full auth model.)
"""

from __future__ import annotations

import hmac

from envstore.common.permissions import Principal, administrator, anonymous
from envstore.common.settings import EnvstoreSettings


def principal_for_token(token: str | None, settings: EnvstoreSettings) -> Principal:
    if token and settings.admin_token and hmac.compare_digest(token, settings.admin_token):
        return administrator(settings.default_namespace)
    return anonymous(settings.default_namespace)
