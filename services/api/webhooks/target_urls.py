"""Where webhooks may point: http or https, and never at envstore's own internals.

Loopback, private, link-local and other non-public addresses are refused unless
``ENVSTORE_WEBHOOK_ALLOWED_HOSTS`` names the host, the address or its network;
``ENVSTORE_WEBHOOK_ONLY_ALLOWED_HOSTS`` limits targets to that list. Envstore's own listeners
(API, registry, NATS, PostgreSQL) are refused even then (``envstore.common.network_targets``).

Host names are checked on every address they resolve to, when a webhook is registered and again
at each delivery (by the HTTP client's resolver, so the address checked is the one connected to)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from envstore.common.network_targets import (
    AddressGuard,
    GuardedResolver,
    InternalEndpoint,
    IPAddress,
    TargetRefused,
    internal_endpoints,
)
from envstore.common.settings import EnvstoreSettings

__all__ = ["ALLOW_SETTING", "MAX_URL_LENGTH", "GuardedResolver", "Target", "TargetGuard", "TargetRefused"]

MAX_URL_LENGTH = 2048
ALLOW_SETTING = "ENVSTORE_WEBHOOK_ALLOWED_HOSTS"


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str  # lower case, IPv6 without brackets
    port: int

    @property
    def address(self) -> IPAddress | None:
        """The host as an address, when the URL names one."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None


class TargetGuard(AddressGuard):
    def __init__(
        self,
        allowed_hosts: list[str],
        only_allowed_hosts: bool = False,
        internal_endpoints: tuple[InternalEndpoint, ...] = (),
    ) -> None:
        super().__init__(
            allowed_hosts,
            purpose="webhooks",
            allow_setting=ALLOW_SETTING,
            only_allowed_hosts=only_allowed_hosts,
            internal_endpoints=internal_endpoints,
        )

    @classmethod
    def from_settings(cls, settings: EnvstoreSettings) -> TargetGuard:
        return cls(settings.webhook_allowed_hosts, settings.webhook_only_allowed_hosts, internal_endpoints(settings))

    def parse(self, url: str) -> Target:
        if len(url) > MAX_URL_LENGTH:
            raise TargetRefused(f"the webhook URL is longer than {MAX_URL_LENGTH} characters")
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as error:
            raise TargetRefused(f"the webhook URL {url!r} is not a valid URL ({error})") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise TargetRefused(f"the webhook URL must start with http:// or https://, got {url!r}")
        if not parts.hostname:
            raise TargetRefused(f"the webhook URL {url!r} names no host")
        if parts.username is not None or parts.password is not None:
            raise TargetRefused("the webhook URL must not carry credentials; the receiver checks the signature instead")
        return Target(
            url.strip(), scheme, parts.hostname.lower().rstrip("."), port or (443 if scheme == "https" else 80)
        )

    def check_literal(self, target: Target) -> None:
        """Check a URL that names an address (host names are checked as they resolve)."""
        address = target.address
        if address is not None:
            self.check_address(target.host, address, target.port)

    async def check(self, url: str) -> Target:
        """Parse ``url`` and check every address it leads to now."""
        target = self.parse(url)
        await self.check_host(target.host, target.port, named_as="the webhook host")
        return target
