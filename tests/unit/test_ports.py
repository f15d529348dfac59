"""Ports for our servers come from outside the range the kernel hands out on its own."""

from __future__ import annotations

import socket
from pathlib import Path

from storage.server import free_port


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    # Where the kernel leaves no room below its range, free_port falls back to it.
    assert low <= 11_000 or all(port < low for port in ports)
    for port in ports[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
