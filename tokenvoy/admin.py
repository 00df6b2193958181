"""The admin HTTP port of extproc and ratelimit: ``/metrics`` for Prometheus and ``/healthz``.

A few lines of asyncio on the server's event loop instead of a web framework: two GET endpoints, one
request per connection, no keep-alive. The exposition is rendered in a worker thread so a large scrape
(many label values, ``detailed_metric`` series) never stalls gRPC calls for its whole duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

__all__ = ["AdminListenError", "AdminServer", "parse_admin_listen"]

logger = logging.getLogger(__name__)

_READ_TIMEOUT_S = 10.0
_MAX_HEADER_LINES = 100
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class AdminListenError(OSError, ValueError):
    """The admin address cannot be bound; ``errno`` tells why (``EADDRINUSE``: something else has it)."""

    def __str__(self) -> str:
        return str(self.strerror)


def parse_admin_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); port 0 picks a free one."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"admin listen address {listen!r} must be HOST:PORT")
    return host.strip("[]"), int(port)


class AdminServer:
    """Serves ``registry`` on ``/metrics`` and answers ``/healthz`` with 200 while the process serves, and 503
    once it is draining (after SIGTERM, while in-flight calls finish) so a load balancer stops sending work.

    For ratelimit, ``/healthz`` stays 200 while the counter backend is down: the service still answers
    (by its failure mode), and restarting it would not bring Redis back; ``tokenvoy_ratelimit_backend_up``
    tells that story.
    """

    def __init__(self, registry: CollectorRegistry, listen: str, name: str = "admin") -> None:
        self.registry = registry
        self.name = name  # which process, in log lines
        self.host, self._requested_port = parse_admin_listen(listen)
        self._server: asyncio.Server | None = None
        self.draining = False  # set by the server's stop path: /healthz answers 503 from then on

    @property
    def port(self) -> int:
        """The bound port (differs from the requested one when that was 0)."""
        if self._server is None or not self._server.sockets:
            return self._requested_port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and serve; ``OSError`` (e.g. address in use) propagates with the address in its message."""
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self._requested_port)
        except OSError as exc:
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            raise AdminListenError(
                exc.errno, f"cannot serve metrics on {self.host}:{self._requested_port}: {reason}"
            ) from None

    def start_draining(self) -> None:
        self.draining = True

    async def close(self) -> None:
        """Stop listening and wait for open connections to finish."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(self._serve_one(reader, writer), _READ_TIMEOUT_S)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # a slow, vanished or malformed client: nothing worth logging
        except Exception:
            logger.exception("%s admin: failed to answer a request", self.name)
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
        head = method == "HEAD"
        if path == "/healthz":
            if self.draining:
                await _respond(writer, 503, b"stopping: draining in-flight requests\n", head=head)
            else:
                await _respond(writer, 200, b"ok\n", head=head)
            return
        encoder, content_type = choose_encoder(headers.get("accept", ""))
        body = await asyncio.to_thread(encoder, self.registry)
        await _respond(writer, 200, body, content_type, head=head)


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
