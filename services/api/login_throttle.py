"""Failed logins counted per user name and per client address over a sliding window: past the
limit, every attempt (even with the right password, so guessing learns nothing) is refused until
the oldest failure leaves the window.

One API process counts its own attempts; with several replicas an attacker gets each replica's
allowance (docs/SECURITY.md)."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

# Bounds the memory a flood of made-up user names can take: past this many tracked names and
# addresses, those whose failures have all left the window are forgotten, then the oldest.
MAX_TRACKED_KEYS = 100_000
# User names are counted by their first characters only, so long made-up names cost no memory
# (names sharing such a prefix share a count, which only holds guessing back sooner).
COUNTED_NAME_CHARACTERS = 256


@dataclass
class LoginThrottle:
    failures_per_user: int
    failures_per_address: int
    window_seconds: float
    clock: Callable[[], float] = time.monotonic
    max_tracked_keys: int = MAX_TRACKED_KEYS
    _failures: dict[tuple[str, str], deque[float]] = field(default_factory=dict)

    def retry_after(self, user: str, address: str) -> int | None:
        """Whole seconds until this user and address may try again, or None if they may now."""
        now = self.clock()
        waits = [
            self._wait(_user_key(user), self.failures_per_user, now),
            self._wait(("address", address), self.failures_per_address, now),
        ]
        longest = max((wait for wait in waits if wait is not None), default=None)
        return None if longest is None else max(1, math.ceil(longest))

    def record_failure(self, user: str, address: str) -> None:
        now = self.clock()
        for key in (_user_key(user), ("address", address)):
            self._recent(key, now).append(now)
        if len(self._failures) > self.max_tracked_keys:
            self._forget_old(now)

    def record_success(self, user: str) -> None:
        """A user who got in starts afresh; their address keeps its count (it may be guessing
        other names)."""
        self._failures.pop(_user_key(user), None)

    def _wait(self, key: tuple[str, str], limit: int, now: float) -> float | None:
        failures = self._recent(key, now)
        if len(failures) < limit:
            return None
        # Allowed again once enough failures have left the window to bring the count under the limit.
        return failures[len(failures) - limit] + self.window_seconds - now

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        failures = self._failures.setdefault(key, deque())
        while failures and failures[0] <= now - self.window_seconds:
            failures.popleft()
        return failures

    def _forget_old(self, now: float) -> None:
        for key in [key for key, failures in self._failures.items() if not failures or failures[-1] <= now - self.window_seconds]:
            del self._failures[key]
        while len(self._failures) > self.max_tracked_keys:
            del self._failures[next(iter(self._failures))]


def _user_key(user: str) -> tuple[str, str]:
    return ("user", user[:COUNTED_NAME_CHARACTERS])
