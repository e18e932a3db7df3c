"""Webhook secrets inside the event stream: encrypted (Fernet: AES-128-CBC with HMAC-SHA256) with
one deployment key, so the stream holds no usable secret while the delivering process can still
sign with it, and a replay of the stream restores every webhook.

The key is ``ENVSTORE_WEBHOOK_SECRET_KEY`` (any text; its SHA-256 is the key material), else one
generated once into ``<data_dir>/webhook-secret-key``, shared by every local process."""

from __future__ import annotations

import base64
import hashlib
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from envstore.common.local_secrets import read_or_create_secret
from envstore.common.settings import EnvstoreSettings

KEY_FILE = "webhook-secret-key"


class SecretUnreadable(Exception):
    """A secret encrypted with another key (the key changed): the webhook needs a new secret."""


class SecretBox:
    def __init__(self, key_text: str) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(key_text.encode()).digest()))

    @classmethod
    def from_settings(cls, settings: EnvstoreSettings) -> SecretBox:
        configured = settings.webhook_secret_key
        return cls(configured.get_secret_value() if configured else read_or_create_secret(Path(settings.data_dir).resolve() / KEY_FILE))

    def encrypt(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def decrypt(self, encrypted: str) -> str:
        try:
            return self._fernet.decrypt(encrypted.encode()).decode()
        except InvalidToken:
            raise SecretUnreadable(
                "the webhook's secret was encrypted with another ENVSTORE_WEBHOOK_SECRET_KEY; "
                "set a new secret for it (PUT with 'secret' or 'rotate_secret')"
            ) from None


def new_secret() -> str:
    return secrets.token_urlsafe(32)
