"""extproc's admin HTTP port (default ``127.0.0.1:1064``): ``/metrics`` for Prometheus and ``/healthz``.

A few lines of asyncio on the extproc event loop instead of a web framework: two GET endpoints, one
request per connection, no keep-alive. The exposition is rendered in a worker thread so a large scrape
never stalls the ext_proc streams for its whole duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger(__name__)

DEFAULT_ADMIN_LISTEN = "127.0.0.1:1064"
_READ_TIMEOUT_SECONDS = 10.0
_MAX_HEADER_LINES = 100
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"}


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) → (host, port); port 0 picks a free one."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"admin listen address {listen!r} must be HOST:PORT")
    return host.strip("[]"), int(port)


class AdminServer:
    """Serves ``registry`` on ``/metrics`` and answers ``/healthz`` with 200 while extproc is up."""

    def __init__(self, registry: CollectorRegistry, listen: str = DEFAULT_ADMIN_LISTEN) -> None:
        self.registry = registry
        self.host, self._requested_port = parse_listen(listen)
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (differs from the requested one when that was 0)."""
        if self._server is None or not self._server.sockets:
            return self._requested_port
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self._requested_port)
        except OSError as exc:
            where = f"{self.host}:{self._requested_port}"
            raise ValueError(f"cannot serve metrics on {where}: {exc.strerror or exc}") from None

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(self._serve_one(reader, writer), _READ_TIMEOUT_SECONDS)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # a slow, vanished or malformed scraper: nothing worth logging
        except Exception:
            log.exception("extproc admin: failed to answer a request")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_line = await reader.readline()
        parts = request_line.decode("latin-1").split()
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADER_LINES):
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if len(parts) != 3:
            await _respond(writer, 400, b"bad request\n")
            return
        method, target, _version = parts
        path = target.split("?", 1)[0]
        if path not in ("/metrics", "/healthz"):
            await _respond(writer, 404, b"not found: try /metrics or /healthz\n")
            return
        if method not in ("GET", "HEAD"):
            await _respond(writer, 405, b"only GET and HEAD\n", extra={"allow": "GET, HEAD"})
            return
        if path == "/healthz":
            await _respond(writer, 200, b"ok\n", head=method == "HEAD")
            return
        encoder, content_type = choose_encoder(headers.get("accept", ""))
        body = await asyncio.to_thread(encoder, self.registry)
        await _respond(writer, 200, body, content_type, head=method == "HEAD")


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
