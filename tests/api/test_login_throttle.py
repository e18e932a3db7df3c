"""The login throttle's window and its memory bound, on a clock the test moves (the whole flow
against a running API is in test_login)."""

from __future__ import annotations

from envstore.api.login_throttle import LoginThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_leave_the_window_one_by_one() -> None:
    clock = Clock()
    throttle = LoginThrottle(failures_per_user=3, failures_per_address=100, window_seconds=60, clock=clock)
    for step in range(3):
        assert throttle.retry_after("mallory", "10.0.0.1") is None
        throttle.record_failure("mallory", "10.0.0.1")
        clock.now += 10
    # Failures at 1000, 1010, 1020; now 1030: the first leaves the window at 1060.
    assert throttle.retry_after("mallory", "10.0.0.9") == 30
    clock.now = 1059.5
    assert throttle.retry_after("mallory", "10.0.0.9") == 1
    clock.now = 1060
    assert throttle.retry_after("mallory", "10.0.0.9") is None
    throttle.record_failure("mallory", "10.0.0.1")  # three in the window again
    assert throttle.retry_after("mallory", "10.0.0.1") == 10


def test_a_success_clears_the_name_but_not_the_address() -> None:
    clock = Clock()
    throttle = LoginThrottle(failures_per_user=2, failures_per_address=3, window_seconds=60, clock=clock)
    throttle.record_failure("alice", "10.0.0.1")
    throttle.record_failure("alice", "10.0.0.1")
    assert throttle.retry_after("alice", "10.0.0.2") is not None
    throttle.record_success("alice")
    assert throttle.retry_after("alice", "10.0.0.2") is None
    throttle.record_failure("bob", "10.0.0.1")
    assert throttle.retry_after("carol", "10.0.0.1") == 60  # the address guessed three times


def test_memory_stays_bounded_whatever_names_are_tried() -> None:
    clock = Clock()
    throttle = LoginThrottle(failures_per_user=5, failures_per_address=5, window_seconds=60, clock=clock, max_tracked_keys=50)
    for index in range(1000):
        throttle.record_failure(f"name-{index}-" + "x" * 10_000, f"10.0.{index // 250}.{index % 250}")
        clock.now += 0.01
    assert len(throttle._failures) <= 50
    assert max(len(key[1]) for key in throttle._failures) <= 256
    # The most recent failures are the ones kept.
    assert throttle.retry_after("name-999-" + "x" * 10_000, "10.9.9.9") is None
    throttle.record_failure("name-999-" + "x" * 10_000, "10.9.9.9")
    assert len(throttle._failures) <= 50
