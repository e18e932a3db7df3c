"""Ports picked for child servers: outside the kernel's ephemeral range, never handed out twice."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from envstore.launcher.free_ports import CLAIM_SECONDS, claim, ephemeral_range_start, pick_free_port

HOST = "127.0.0.1"


def test_picks_are_distinct_bindable_and_below_the_range_outgoing_connections_use():
    picks = [pick_free_port(HOST) for _ in range(60)]

    assert len(set(picks)) == len(picks)
    assert all(port < ephemeral_range_start() for port in picks)
    for port in picks:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
            server.bind((HOST, port))


def test_a_port_claimed_moments_ago_is_refused_and_a_stale_claim_is_taken_over(tmp_path: Path):
    claim_file = tmp_path / "23456"

    assert claim(claim_file)
    assert not claim(claim_file)

    long_ago = time.time() - CLAIM_SECONDS - 1
    os.utime(claim_file, (long_ago, long_ago))
    assert claim(claim_file)
    assert not claim(claim_file)
