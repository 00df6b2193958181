"""Let Envoy finish the requests in flight before it is stopped (SIGTERM, `docker stop`).

Envoy exits at once on SIGTERM and cuts every open stream, so the supervisor first asks it, through its
admin socket, to close its listeners (no new connection is accepted) and waits until no downstream request
is active any more, for at most ``timeout`` seconds; only then does Envoy get its SIGTERM.
"""

from __future__ import annotations

import asyncio
import re
import time

from tokenvoy.runner.health import http_get

# `http.<stat prefix>.downstream_rq_active: N` of every HTTP connection manager but the admin's own.
_ACTIVE = re.compile(rb"^http\.(?!admin\.)[^.\s]+\.downstream_rq_active: (\d+)$", re.MULTILINE)


def active_requests(stats: bytes) -> int:
    """Downstream requests in flight, from Envoy's text /stats (the admin listener's own are not counted)."""
    return sum(int(n) for n in _ACTIVE.findall(stats))


async def drain_envoy(admin_socket: str, timeout: float = 20.0, poll: float = 0.1) -> int:
    """Close Envoy's listeners, then wait for its active requests to end; the number still active at the end.

    ``admin_socket``: Envoy's own admin (a Unix socket; the TCP admin port only forwards GET and HEAD)."""
    await http_get("envoy-admin", 0, "/drain_listeners?inboundonly", read_body=False, unix=admin_socket, method="POST")
    deadline = time.monotonic() + timeout
    while True:
        _, body = await http_get("envoy-admin", 0, "/stats?filter=downstream_rq_active", unix=admin_socket)
        active = active_requests(body)
        if active == 0 or time.monotonic() > deadline:
            return active
        await asyncio.sleep(poll)
