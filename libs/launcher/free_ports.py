"""Choosing TCP ports for child servers before they start.

A port the kernel hands out for ``bind(host, 0)`` lies in its ephemeral range — the range it also
uses for the local end of outgoing connections — so between the pick and the child's ``bind`` any
``connect()`` on the machine (a NATS client, a health check, the test's HTTP client) may take it,
and the child then fails with "address already in use". Ports are therefore picked at random
*below* that range, where the kernel never allocates on its own, and each pick is claimed by a file
in a directory shared by every launcher on the machine, so two picks made before either child has
bound (one stack's dozen ports, two test fixtures) never coincide.
"""

from __future__ import annotations

import os
import random
import socket
import tempfile
import time
from pathlib import Path

LOWEST_PICKED_PORT = 10000
# A claim outlives any child's start-up; after it, the probe bind alone decides.
CLAIM_SECONDS = 120.0
PICK_ATTEMPTS = 500
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LINUX_DEFAULT_EPHEMERAL_LOW = 32768
CLAIMS_DIRECTORY_NAME = "envstore-port-claims"


def pick_free_port(host: str) -> int:
    """A TCP port free on ``host`` now, outside the kernel's ephemeral range, not claimed recently.

    Another program may still bind it before our child does; callers that can (PostgreSQL's
    launcher) retry with a new port when the bind fails.
    """
    lowest, highest = LOWEST_PICKED_PORT, ephemeral_range_start() - 1
    claims = claims_directory()
    if highest - lowest < PICK_ATTEMPTS or claims is None:
        return kernel_chosen_port(host)
    for _ in range(PICK_ATTEMPTS):
        port = random.randint(lowest, highest)
        if claim(claims / str(port)) and bind_succeeds(host, port):
            return port
    return kernel_chosen_port(host)


def ephemeral_range_start() -> int:
    try:
        return int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return LINUX_DEFAULT_EPHEMERAL_LOW


def claims_directory() -> Path | None:
    """The machine-wide directory of port claims (sticky and world-writable, like /tmp), or None."""
    directory = Path(tempfile.gettempdir()) / CLAIMS_DIRECTORY_NAME
    try:
        directory.mkdir(exist_ok=True)
        if directory.stat().st_uid == os.getuid():
            directory.chmod(0o1777)
    except OSError:
        return None
    return directory


def claim(path: Path) -> bool:
    """Claim a port by creating its file; a claim older than ``CLAIM_SECONDS`` is taken over."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        return True
    except FileExistsError:
        pass
    except OSError:
        return False
    try:
        if time.time() - path.stat().st_mtime < CLAIM_SECONDS:
            return False
        os.utime(path)
    except OSError:
        return False
    return True


def bind_succeeds(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def kernel_chosen_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
