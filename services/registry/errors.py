"""The distribution spec's errors: a code, an HTTP status and a JSON body
``{"errors": [{"code", "message", "detail"}]}`` that docker, podman and skopeo show to users."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

API_VERSION_HEADERS = {"Docker-Distribution-Api-Version": "registry/2.0"}


class RegistryError(Exception):
    def __init__(
        self, status: int, code: str, message: str, detail: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.headers = dict(headers or {})

    def response(self, with_body: bool = True) -> web.Response:
        body = {"errors": [{"code": self.code, "message": self.message, "detail": self.detail}]}
        headers = {**API_VERSION_HEADERS, **self.headers}
        if not with_body:  # HEAD: the status and headers say it all
            return web.Response(status=self.status, headers=headers)
        return web.Response(
            status=self.status, text=json.dumps(body), content_type="application/json", headers=headers
        )


def name_invalid(name: str, why: str) -> RegistryError:
    return RegistryError(400, "NAME_INVALID", f"invalid repository name {name!r}: {why}", {"name": name})


def name_unknown(name: str, why: str = "repository name not known to registry") -> RegistryError:
    return RegistryError(404, "NAME_UNKNOWN", why, {"name": name})


def manifest_unknown(name: str, reference: str, why: str = "manifest unknown") -> RegistryError:
    return RegistryError(404, "MANIFEST_UNKNOWN", why, {"name": name, "reference": reference})


def blob_unknown(name: str, digest: str) -> RegistryError:
    return RegistryError(404, "BLOB_UNKNOWN", "blob unknown to registry", {"name": name, "digest": digest})


def digest_invalid(digest: str) -> RegistryError:
    return RegistryError(
        400, "DIGEST_INVALID", "provided digest did not match uploaded content", {"digest": digest, "expected": "sha256:<64 hex>"}
    )


def tag_invalid(name: str, reference: str) -> RegistryError:
    return RegistryError(
        400, "TAG_INVALID", "manifest tag did not match URI", {"name": name, "reference": reference}
    )


def unsupported(method: str) -> RegistryError:
    return RegistryError(
        405,
        "UNSUPPORTED",
        "The operation is unsupported",
        {"method": method, "why": "envstore serves images read-only; build environments through its API"},
    )


def denied(name: str) -> RegistryError:
    return RegistryError(403, "DENIED", "requested access to the resource is denied", {"name": name})


def unauthorized(challenge: str, why: str = "authentication required", detail: Any = None) -> RegistryError:
    return RegistryError(401, "UNAUTHORIZED", why, detail, headers={"WWW-Authenticate": challenge})


def pagination_invalid(why: str) -> RegistryError:
    return RegistryError(400, "PAGINATION_NUMBER_INVALID", why)
