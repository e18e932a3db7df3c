"""The password backend's rules: the one password (configured, or generated into the data
directory on first use), which user names may log in, and what a login token may do.

A logged-in user owns their namespace (``<user>/*`` admin) and holds the authenticated role
bindings (conda-store's ``default/*`` and ``filesystem/*`` viewer) on top; only the user names in
``ENVSTORE_AUTH_ADMIN_USERS`` get ``*/*`` admin."""

from __future__ import annotations

import hmac
from pathlib import Path

from envstore.common.local_secrets import read_or_create_secret
from envstore.common.settings import EnvstoreSettings
from envstore.common.specification import DYNAMIC_NAMESPACE

PASSWORD_FILE = "auth-password"


def password_file(settings: EnvstoreSettings) -> Path:
    return Path(settings.data_dir).resolve() / PASSWORD_FILE


def login_password(settings: EnvstoreSettings) -> str:
    """The configured password, else the one generated once into the data directory."""
    configured = settings.auth_password.get_secret_value() if settings.auth_password else ""
    return configured or read_or_create_secret(password_file(settings))


def password_matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def is_admin_user(settings: EnvstoreSettings, username: str) -> bool:
    return username in settings.auth_admin_users


def reserved_name_refusal(settings: EnvstoreSettings, username: str) -> str | None:
    """Why ``username`` may not log in, when it names a namespace everyone shares (its owner
    would administer what every user reads)."""
    shared = {settings.default_namespace, settings.filesystem_namespace, DYNAMIC_NAMESPACE}
    if username in shared and not is_admin_user(settings, username):
        return f"the user name {username!r} is reserved: it names a shared namespace; log in with your own name"
    return None


def login_role_bindings(settings: EnvstoreSettings, username: str) -> dict[str, list[str]]:
    """The login token's own bindings (the authenticated defaults are added when it is read)."""
    if is_admin_user(settings, username):
        return {"*/*": ["admin"]}
    return {f"{username}/*": ["admin"]}
