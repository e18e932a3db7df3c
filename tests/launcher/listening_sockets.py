"""Which TCP addresses a tree of processes listens on, read from /proc (Linux): each process's
socket inodes, matched against the kernel's tables of listening sockets."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from envstore.launcher.child_process import child_pids

LISTEN = "0A"


def _descendants(pid: int) -> set[int]:
    found, waiting = {pid}, [pid]
    while waiting:
        for child in child_pids(waiting.pop()):
            if child not in found:
                found.add(child)
                waiting.append(child)
    return found


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:  # gone, or not ours to read
        return inodes
    for descriptor in descriptors:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{descriptor}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _address(hex_address: str) -> tuple[str, int]:
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    # The kernel prints each 32-bit word in host (little-endian) order.
    words = b"".join(raw[index : index + 4][::-1] for index in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words)), int(port, 16)


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """Every (address, port) a process or any of its descendants listens on over TCP."""
    inodes = set().union(*(_socket_inodes(process) for process in _descendants(pid)))
    listening = set()
    for table in ("tcp", "tcp6"):
        lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == LISTEN and inode in inodes:
                listening.add(_address(local))
    return listening
