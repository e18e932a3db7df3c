"""Channel names → URLs, the way conda resolves them (``conda-forge`` →
``<channel_alias>/conda-forge``; URLs and ``file://`` paths stay as they are); which channels a
specification may use (the allow-list) and which hosts may be fetched from (``ChannelGuard``)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from envstore.common.network_targets import AddressGuard, TargetRefused, internal_endpoints
from envstore.common.settings import EnvstoreSettings


def channel_url(channel: str, channel_alias: str) -> str:
    text = channel.strip().rstrip("/")
    if "://" in text:
        return text
    if text.startswith("/"):
        return Path(text).as_uri()
    return f"{channel_alias.rstrip('/')}/{text}"


def allowed_channels(settings: EnvstoreSettings) -> list[str]:
    """The allow-list in force: ``conda_allowed_channels`` and the default channels, which the
    same settings chose (empty: every channel, as conda-store)."""
    if not settings.conda_allowed_channels:
        return []
    allowed = list(settings.conda_allowed_channels)
    return allowed + [channel for channel in settings.conda_default_channels if channel not in allowed]


def disallowed_channels(channels: list[str], allowed: list[str], channel_alias: str) -> list[str]:
    """The channels not in ``allowed`` (an empty allow-list allows every channel)."""
    if not allowed:
        return []
    allowed_urls = {channel_url(channel, channel_alias) for channel in allowed}
    return [channel for channel in channels if channel_url(channel, channel_alias) not in allowed_urls]


def channel_refusal(channels: list[str], allowed: list[str], channel_alias: str) -> str | None:
    """conda-store's message for the first channel not allowed, or None when all are."""
    rejected = disallowed_channels(channels, allowed, channel_alias)
    if not rejected:
        return None
    allowed_urls = [channel_url(channel, channel_alias) for channel in allowed]
    return f"Conda channel {channel_url(rejected[0], channel_alias)} not allowed in {allowed_urls}"


CHANNEL_HOSTS_SETTING = "ENVSTORE_CHANNEL_ALLOWED_HOSTS"


class ChannelGuard:
    """Where the solver and the builder may fetch from on a submitter's behalf.

    Channels this deployment names itself (``CONDA_ALLOWED_CHANNELS`` and
    ``CONDA_DEFAULT_CHANNELS`` from its environment, not the settings API's overrides, which
    namespace admins can change) are trusted wherever they point, ``file://`` ones included. Any
    other channel must be http(s) on a public host, or one ``ENVSTORE_CHANNEL_ALLOWED_HOSTS``
    names, and never one of envstore's own listeners: otherwise a submission could make the
    server fetch its own API, a metadata endpoint or a private network's hosts, or probe its
    files, and read the answer in the build's failure. The reasons given say nothing about what
    the host resolved to."""

    def __init__(self, trusted_urls: set[str], addresses: AddressGuard) -> None:
        self.trusted_urls = trusted_urls
        self.addresses = addresses

    @classmethod
    def from_settings(cls, settings: EnvstoreSettings) -> ChannelGuard:
        named = [*settings.conda_allowed_channels, *settings.conda_default_channels]
        return cls(
            {channel_url(channel, settings.conda_channel_alias) for channel in named},
            AddressGuard(
                settings.channel_allowed_hosts,
                purpose="channels",
                allow_setting=CHANNEL_HOSTS_SETTING,
                internal_endpoints=internal_endpoints(settings),
            ),
        )

    def _is_trusted(self, url: str) -> bool:
        """``url`` is a trusted channel or lies inside one (a package of a lockfile)."""
        url = url.rstrip("/")
        try:
            segments = unquote(urlsplit(url).path).split("/")
        except ValueError:
            return False
        if "." in segments or ".." in segments:  # would step out of the trusted channel
            return False
        return any(url == trusted or url.startswith(trusted + "/") for trusted in self.trusted_urls)

    async def refusal(self, urls: list[str], what: str = "channel") -> str | None:
        """Why the first of ``urls`` (channels, or a lockfile's package URLs: ``what``) may not
        be fetched, or None when all may."""
        checked: set[tuple[str, int]] = set()
        for url in urls:
            if self._is_trusted(url):
                continue
            try:
                parts = urlsplit(url)
                scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
            except ValueError:
                return f"{what} {url!r} is not a valid URL"
            if scheme == "file":
                return (
                    f"{what} {url} is not allowed: file:// URLs are allowed only inside channels the "
                    "deployment names in ENVSTORE_CONDA_ALLOWED_CHANNELS"
                )
            if scheme not in ("http", "https") or not host:
                return f"{what} {url} is not allowed: envstore fetches http:// and https:// URLs only"
            target = (host.lower().rstrip("."), port or (443 if scheme == "https" else 80))
            if target in checked:
                continue
            try:
                await self.addresses.check_host(*target)
            except TargetRefused:
                return (
                    f"{what} {url} is not allowed: its host does not resolve to a public address "
                    f"(an administrator can allow other hosts with {CHANNEL_HOSTS_SETTING})"
                )
            checked.add(target)
        return None
