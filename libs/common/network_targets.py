"""Which network addresses envstore may be made to connect to on a user's behalf (webhook targets,
conda channels): public addresses only, and never envstore's own listeners.

Loopback, private, link-local and other non-public addresses are refused (a user must not aim the
server at the API, NATS, PostgreSQL or a cloud metadata endpoint from inside the network) unless
the deployment's allow-list names the host, the address or its network. Envstore's own listeners
are refused even then. Host names are checked on every address they resolve to."""

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


class TargetRefused(Exception):
    """An address envstore will not connect to; the message says why and what to do."""


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


def is_public(address: IPAddress) -> bool:
    return address.is_global and not address.is_multicast


def _endpoint_of(what: str, url: str, default_port: int) -> InternalEndpoint | None:
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or default_port
    except ValueError:
        return None
    return InternalEndpoint(what, host.lower(), port) if host else None


def internal_endpoints(settings: EnvstoreSettings) -> tuple[InternalEndpoint, ...]:
    endpoints = [
        InternalEndpoint("API", settings.api_host.lower(), settings.api_port),
        InternalEndpoint("registry", settings.registry_host.lower(), settings.registry_port),
        _endpoint_of("NATS server", settings.nats_url, 4222),
        _endpoint_of("database", settings.database_url, 5432),
    ]
    return tuple(endpoint for endpoint in endpoints if endpoint is not None)


class AddressGuard:
    """``purpose`` names who connects in messages ("webhooks"); ``allow_setting`` is the
    variable an administrator sets to allow a non-public host."""

    def __init__(
        self,
        allowed_hosts: list[str],
        *,
        purpose: str,
        allow_setting: str,
        only_allowed_hosts: bool = False,
        internal_endpoints: tuple[InternalEndpoint, ...] = (),
    ) -> None:
        self.purpose = purpose
        self.allow_setting = allow_setting
        self.only_allowed_hosts = only_allowed_hosts
        self.internal_endpoints = internal_endpoints
        self.allowed_networks: list[IPNetwork] = []
        self.allowed_names: list[str] = []
        for entry in allowed_hosts:
            try:
                self.allowed_networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                self.allowed_names.append(entry.lower().rstrip("."))

    def _name_is_allowed(self, host: str) -> bool:
        return any(host == pattern or fnmatch.fnmatchcase(host, pattern) for pattern in self.allowed_names)

    def check_address(self, host: str, address: IPAddress, port: int) -> None:
        """Refuse ``host`` (a name or an address) connecting to ``address``:``port``."""
        address = _normalized(address)
        for endpoint in self.internal_endpoints:
            if endpoint.is_reached_by(host, address, port):
                raise TargetRefused(f"{host}:{port} is envstore's own {endpoint.what}; {self.purpose} cannot target it")
        allowed = self._name_is_allowed(host) or any(address in network for network in self.allowed_networks)
        if self.only_allowed_hosts and not allowed:
            raise TargetRefused(f"{host} is not one of the hosts {self.purpose} may target ({self.allow_setting})")
        if not allowed and not is_public(address):
            raise TargetRefused(
                f"{host} is {'' if host == str(address) else f'at {address}, '}a loopback, private or link-local "
                f"address; {self.purpose} may target it only if {self.allow_setting} allows it"
            )

    async def check_host(self, host: str, port: int, named_as: str = "the host") -> None:
        """Check ``host`` (a name or an address) on every address it resolves to now;
        ``named_as`` starts the message when it does not resolve."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            self.check_address(host, address, port)
            return
        try:
            answers = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError, ValueError):
            raise TargetRefused(f"{named_as} {host!r} does not resolve; check the URL") from None
        for *_, socket_address in answers:
            self.check_address(host, ipaddress.ip_address(socket_address[0].partition("%")[0]), port)

    def resolver(self) -> GuardedResolver:
        return GuardedResolver(self)


class GuardedResolver(AbstractResolver):
    """An HTTP client's resolver: a name that resolves to a refused address fails to connect
    (checked at connection time, so DNS answers cannot change in between)."""

    def __init__(self, guard: AddressGuard) -> None:
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
