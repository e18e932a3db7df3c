"""Signed, expiring links to artifacts in local storage, the local counterpart of S3's presigned
URLs: ``/storage/<key>?expires=<unix time>&signature=<hex HMAC-SHA256(secret, key + "\\n" + expires)>``.

The artifact routes check the caller's permission, then redirect to such a link, so a browser or
a CLI that follows the redirect without sending its token still downloads, and a link pasted
somewhere stops working after ``ENVSTORE_STORAGE_URL_SECONDS``. The secret is
``ENVSTORE_STORAGE_URL_SECRET``, else generated once into ``<data_dir>/storage-url-secret``
(API replicas must share it)."""

from __future__ import annotations

import enum
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

from envstore.common.local_secrets import read_or_create_secret
from envstore.common.settings import EnvstoreSettings

SECRET_FILE = "storage-url-secret"


class LinkCheck(enum.Enum):
    UNSIGNED = "unsigned"
    VALID = "valid"
    EXPIRED = "expired"
    INVALID = "invalid"


@dataclass(frozen=True)
class ArtifactLinks:
    secret: bytes
    lifetime_seconds: int
    clock: Callable[[], float] = field(default=time.time)

    @classmethod
    def from_settings(cls, settings: EnvstoreSettings) -> ArtifactLinks:
        configured = settings.storage_url_secret.get_secret_value() if settings.storage_url_secret else ""
        secret = configured or read_or_create_secret(Path(settings.data_dir).resolve() / SECRET_FILE)
        return cls(secret.encode(), settings.storage_url_seconds)

    def _signature(self, key: str, expires: str) -> str:
        return hmac.new(self.secret, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def link(self, storage_prefix: str, key: str) -> str:
        """``storage_prefix`` is the URL path of the storage route (``/storage``)."""
        expires = str(int(self.clock()) + self.lifetime_seconds)
        query = urlencode({"expires": expires, "signature": self._signature(key, expires)})
        return f"{storage_prefix}/{quote(key, safe='/')}?{query}"

    def check(self, key: str, expires: str | None, signature: str | None) -> LinkCheck:
        if expires is None and signature is None:
            return LinkCheck.UNSIGNED
        if not expires or not signature or not expires.isdigit():
            return LinkCheck.INVALID
        # Constant time: the answer must not tell how much of a forged signature was right.
        if not hmac.compare_digest(signature.encode(), self._signature(key, expires).encode()):
            return LinkCheck.INVALID
        if int(expires) < self.clock():
            return LinkCheck.EXPIRED
        return LinkCheck.VALID
