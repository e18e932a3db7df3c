"""Where webhooks may point: http or https, and never at envstore's own internals.

Loopback, private, link-local and other non-public addresses are refused (a webhook must not be
aimed at the API, NATS, PostgreSQL or a cloud metadata endpoint from inside the network) unless
``ENVSTORE_WEBHOOK_ALLOWED_HOSTS`` names the host, the address or its network;
``ENVSTORE_WEBHOOK_ONLY_ALLOWED_HOSTS`` limits targets to that list. Envstore's own listeners
(API, registry, NATS, PostgreSQL) are refused even then.

Host names are checked on every address they resolve to, when a webhook is registered and again
at each delivery (by the HTTP client's resolver, so the address checked is the one connected to)."""

from __future__ import annotations

import asyncio
import fnmatch
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from envstore.common.settings import EnvstoreSettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_URL_LENGTH = 2048
ALLOW_SETTING = "ENVSTORE_WEBHOOK_ALLOWED_HOSTS"


class TargetRefused(Exception):
    """A webhook URL envstore will not call; the message says why and what to do."""


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


@dataclass(frozen=True)
class InternalEndpoint:
    """One of envstore's own listeners."""

    what: str
    host: str
    port: int

    def is_reached_by(self, host: str, address: IPAddress, port: int) -> bool:
        if port != self.port:
            return False
        if host == self.host:
            return True
        try:
            own = ipaddress.ip_address(self.host)
        except ValueError:
            return self.host == "localhost" and address.is_loopback
        return address == own or (own.is_unspecified and (address.is_loopback or address.is_unspecified))


def _normalized(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_public(address: IPAddress) -> bool:
    return address.is_global and not address.is_multicast


def _endpoint_of(what: str, url: str, default_port: int) -> InternalEndpoint | None:
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or default_port
    except ValueError:
        return None
    return InternalEndpoint(what, host.lower(), port) if host else None


class TargetGuard:
    def __init__(
        self,
        allowed_hosts: list[str],
        only_allowed_hosts: bool = False,
        internal_endpoints: tuple[InternalEndpoint, ...] = (),
    ) -> None:
        self.only_allowed_hosts = only_allowed_hosts
        self.internal_endpoints = internal_endpoints
        self.allowed_networks: list[IPNetwork] = []
        self.allowed_names: list[str] = []
        for entry in allowed_hosts:
            try:
                self.allowed_networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                self.allowed_names.append(entry.lower().rstrip("."))

    @classmethod
    def from_settings(cls, settings: EnvstoreSettings) -> TargetGuard:
        endpoints = [
            InternalEndpoint("API", settings.api_host.lower(), settings.api_port),
            InternalEndpoint("registry", settings.registry_host.lower(), settings.registry_port),
            _endpoint_of("NATS server", settings.nats_url, 4222),
            _endpoint_of("database", settings.database_url, 5432),
        ]
        return cls(
            settings.webhook_allowed_hosts,
            settings.webhook_only_allowed_hosts,
            tuple(endpoint for endpoint in endpoints if endpoint is not None),
        )

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

    def _name_is_allowed(self, host: str) -> bool:
        return any(host == pattern or fnmatch.fnmatchcase(host, pattern) for pattern in self.allowed_names)

    def check_address(self, host: str, address: IPAddress, port: int) -> None:
        """Refuse ``host`` (a name or an address) connecting to ``address``:``port``."""
        address = _normalized(address)
        for endpoint in self.internal_endpoints:
            if endpoint.is_reached_by(host, address, port):
                raise TargetRefused(f"{host}:{port} is envstore's own {endpoint.what}; webhooks cannot target it")
        allowed = self._name_is_allowed(host) or any(address in network for network in self.allowed_networks)
        if self.only_allowed_hosts and not allowed:
            raise TargetRefused(f"{host} is not one of the hosts webhooks may target ({ALLOW_SETTING})")
        if not allowed and not _is_public(address):
            raise TargetRefused(
                f"{host} is {'' if host == str(address) else f'at {address}, '}a loopback, private or link-local "
                f"address; webhooks may target it only if {ALLOW_SETTING} allows it"
            )

    def check_literal(self, target: Target) -> None:
        """Check a URL that names an address (host names are checked as they resolve)."""
        address = target.address
        if address is not None:
            self.check_address(target.host, address, target.port)

    async def check(self, url: str) -> Target:
        """Parse ``url`` and check every address it leads to now."""
        target = self.parse(url)
        if target.address is not None:
            self.check_address(target.host, target.address, target.port)
            return target
        try:
            answers = await asyncio.get_running_loop().getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError, ValueError):
            raise TargetRefused(f"the webhook host {target.host!r} does not resolve; check the URL") from None
        for *_, socket_address in answers:
            self.check_address(target.host, ipaddress.ip_address(socket_address[0].partition("%")[0]), target.port)
        return target

    def resolver(self) -> GuardedResolver:
        return GuardedResolver(self)


class GuardedResolver(AbstractResolver):
    """The HTTP client's resolver for deliveries: a name that resolves to a refused address fails
    to connect (checked at connection time, so DNS answers cannot change in between)."""

    def __init__(self, guard: TargetGuard) -> None:
        self.guard = guard
        self._resolver = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        for result in results:
            try:
                self.guard.check_address(host.lower().rstrip("."), ipaddress.ip_address(result["host"]), port)
            except TargetRefused as refused:
                raise OSError(str(refused)) from None
        return results

    async def close(self) -> None:
        await self._resolver.close()
