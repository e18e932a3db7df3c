"""The supervisor's back-off: doubling from the first delay, never past the cap."""

from __future__ import annotations

from envstore.launcher.supervisor import RestartPolicy


def test_restart_delays_double_up_to_the_cap() -> None:
    policy = RestartPolicy(first_delay_seconds=0.5, max_delay_seconds=30)
    assert [policy.delay(failures) for failures in range(1, 10)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
