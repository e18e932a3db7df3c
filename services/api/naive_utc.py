"""Event times as the read model stores them: naive UTC, as conda-store stores and answers times."""

from __future__ import annotations

import datetime

_EPOCH = datetime.datetime(1970, 1, 1)


def utc(timestamp: float) -> datetime.datetime:
    """The same value as ``fromtimestamp(timestamp, UTC)`` without its time-zone arithmetic
    (a replay calls this for nearly every event)."""
    return _EPOCH + datetime.timedelta(seconds=timestamp)
