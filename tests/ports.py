"""Free TCP ports for the servers a test starts, chosen so nothing else grabs them first.

Asking the kernel for port 0 returns a port from the ephemeral range, which outgoing connections
(every HTTP and gRPC client in the suite) also draw from: between the probe and the server's bind one
of them can take it ("Address already in use"). Ports below that range are never handed out to
outgoing connections, so a port that binds now stays free until the server binds it.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_LOW, _HIGH = 20000, min(_ephemeral_low(), 32768)


def free_port() -> int:
    """A port on 127.0.0.1 that binds now, outside the ephemeral range, not returned before."""
    for _ in range(1000):
        port = random.randrange(_LOW, _HIGH)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {_LOW}-{_HIGH}")
