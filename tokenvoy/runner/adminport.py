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

_READ_TIMEOUT_S = 10.0
_MAX_HEADER_LINES = 100
_FORWARDED_HEADERS = ("accept", "accept-encoding")
_REASONS = {200: "OK", 400: "Bad Request", 405: "Method Not Allowed", 502: "Bad Gateway", 503: "Service Unavailable"}


class AdminPort:
    """Serves ``/healthz`` from ``status()`` (503 unless its ``status`` is ok or degraded) and forwards
    other GET/HEAD requests to Envoy's admin socket ``envoy_socket``."""

    def __init__(self, host: str, port: int, envoy_socket: str, status: Callable[[], dict[str, Any]]) -> None:
        self.host, self.port, self.envoy_socket, self.status = host, port, envoy_socket, status
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(self._serve_one(reader, writer), _READ_TIMEOUT_S)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # a slow, vanished or malformed client
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parts = (await reader.readline()).decode("latin-1").split()
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADER_LINES):
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if len(parts) != 3 or not parts[1].startswith("/"):
            await _respond(writer, 400, b"bad request\n")
            return
        method, target, _ = parts
        head = method == "HEAD"
        if method not in ("GET", "HEAD"):
            body = (
                b"this admin port is read-only: Envoy's endpoints that change the server (POST /logging, "
                b"/quitquitquit, ...) are not reachable over TCP; see docs/credentials.md\n"
            )
            await _respond(writer, 405, body, extra={"allow": "GET, HEAD"})
            return
        if target.split("?", 1)[0] == "/healthz":
            status = self.status()
            code = 200 if status["status"] in ("ok", "degraded") else 503
            body = json.dumps(status, indent=2).encode() + b"\n"
            await _respond(writer, code, body, "application/json", head=head)
            return
        await self._forward(method, target, headers, writer)

    async def _forward(self, method: str, target: str, headers: dict[str, str], writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_unix_connection(self.envoy_socket), 2.0)
        except (OSError, TimeoutError):
            await _respond(writer, 503, b"Envoy's admin is not answering (Envoy is down or restarting)\n")
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


async def _respond(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    head: bool = False,
    extra: dict[str, str] | None = None,
) -> None:
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, '')}",
        f"content-type: {content_type}",
        f"content-length: {len(body)}",
        "connection: close",
        *(f"{name}: {value}" for name, value in (extra or {}).items()),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if not head:
        writer.write(body)
    await writer.drain()
