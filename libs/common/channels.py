"""Channel names → URLs, the way conda resolves them (``conda-forge`` →
``<channel_alias>/conda-forge``; URLs and ``file://`` paths stay as they are)."""

from __future__ import annotations

from pathlib import Path


def channel_url(channel: str, channel_alias: str) -> str:
    text = channel.strip().rstrip("/")
    if "://" in text:
        return text
    if text.startswith("/"):
        return Path(text).as_uri()
    return f"{channel_alias.rstrip('/')}/{text}"


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
