"""The registry's token realm (the Docker Registry token authentication flow), shared by the API,
which serves the realm, and the registry, which points clients at it.

A pull starts with the registry answering 401 and ``WWW-Authenticate: Bearer realm=<API
base>/registry/token,service=…,scope=…``. The client fetches a token from that realm, with its
credentials (``docker login -u <anything> -p <envstore token>``: Basic, any user, the token as
password) or none, then repeats the request with ``Authorization: Bearer <token>``. The realm
hands back the caller's own envstore token, whose rights the registry checks on every request, or
``ANONYMOUS_REGISTRY_TOKEN`` for a caller without credentials, which the registry reads as no
credentials at all. Clients may also skip the realm and send Basic or Bearer credentials at once.
"""

from __future__ import annotations

import base64
import binascii

from aiohttp import web

REGISTRY_TOKEN_PATH = "/registry/token"  # under the API's URL prefix
REGISTRY_SERVICE = "envstore-registry"
ANONYMOUS_REGISTRY_TOKEN = "anonymous"
# A token without an expiry of its own (admin, predefined tokens) is fetched again after this.
TOKEN_LIFETIME_SECONDS = 3600


def presented_token(request: web.Request) -> tuple[bool, str | None]:
    """(whether credentials were sent, the token in them). Empty credentials (``Basic Og==``,
    which anonymous clients such as skopeo send after a Basic challenge) and the anonymous token
    from the realm are no credentials."""
    header = request.headers.get("Authorization", "").strip()
    if not header:
        return False, None
    scheme, _, credential = header.partition(" ")
    credential = credential.strip()
    if scheme.lower() == "bearer":
        if credential == ANONYMOUS_REGISTRY_TOKEN:
            return False, None
        return bool(credential), credential or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credential, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return True, None
        user, _, password = decoded.partition(":")
        return bool(user or password), password or None
    return True, None


def bearer_challenge(realm: str, scope: str | None = None) -> str:
    """The ``WWW-Authenticate`` value that sends a client to ``realm`` for a token."""
    challenge = f'Bearer realm="{realm}",service="{REGISTRY_SERVICE}"'
    return challenge + (f',scope="{scope}"' if scope else "")
