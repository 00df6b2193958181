"""``tokenvoy run``'s admin port: the gateway's ``/healthz`` and a read-only view of Envoy's admin.

Envoy's own admin listens on a Unix socket in the run directory that only the user running the gateway can
open (mode 0600). Its endpoints that change the server (``POST /logging`` turns on debug logs,
``/quitquitquit``, ``/healthcheck/fail``, ``/runtime_modify``, ``/drain_listeners``, ...) need POST, so this
port, on 127.0.0.1, forwards GET and HEAD only: Prometheus scrapes ``/stats/prometheus`` and probes read
``/ready`` as before, while nothing reachable over TCP can change Envoy's log level or stop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from tokenvoy.admin import HTTPPort, respond

_FORWARDED_HEADERS = ("accept", "accept-encoding")


class AdminPort(HTTPPort):
    """Serves ``/healthz`` from ``status()`` (503 unless its ``status`` is ok or degraded) and forwards
    other GET/HEAD requests to Envoy's admin socket ``envoy_socket``."""

    what = "serve the admin port"
    close_timeout = 2.0

    def __init__(self, host: str, port: int, envoy_socket: str, status: Callable[[], dict[str, Any]]) -> None:
        super().__init__(host, port, name="tokenvoy run")
        self.envoy_socket, self.status = envoy_socket, status

    async def answer(self, method: str, target: str, headers: dict[str, str], writer: asyncio.StreamWriter) -> None:
        head = method == "HEAD"
        if method not in ("GET", "HEAD"):
            body = (
                b"this admin port is read-only: Envoy's endpoints that change the server (POST /logging, "
                b"/quitquitquit, ...) are not reachable over TCP; see docs/credentials.md\n"
            )
            await respond(writer, 405, body, extra={"allow": "GET, HEAD"})
            return
        if target.split("?", 1)[0] == "/healthz":
            status = self.status()
            code = 200 if status["status"] in ("ok", "degraded") else 503
            body = json.dumps(status, indent=2).encode() + b"\n"
            await respond(writer, code, body, "application/json", head=head)
            return
        await self._forward(method, target, headers, writer)

    async def _forward(self, method: str, target: str, headers: dict[str, str], writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_unix_connection(self.envoy_socket), 2.0)
        except (OSError, TimeoutError):
            await respond(writer, 503, b"Envoy's admin is not answering (Envoy is down or restarting)\n")
            return
        try:
            lines = [f"{method} {target} HTTP/1.1", "host: envoy-admin", "connection: close"]
            lines += [f"{name}: {headers[name]}" for name in _FORWARDED_HEADERS if name in headers]
            up_writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            await up_writer.drain()
            while chunk := await up_reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        finally:
            up_writer.close()
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()
