"""The small HTTP ports of tokenvoy: extproc's and ratelimit's admin (``/metrics``, ``/healthz``), and the
base ``tokenvoy run``'s admin port is built on.

A few lines of asyncio on the server's event loop instead of a web framework: GET and HEAD, one request
per connection, no keep-alive. The exposition is rendered in a worker thread so a large scrape (many label
values, ``detailed_metric`` series) never stalls gRPC calls for its whole duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from collections.abc import Callable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

__all__ = ["AdminListenError", "AdminServer", "HTTPPort", "parse_admin_listen", "respond", "start_admin"]

logger = logging.getLogger(__name__)

_READ_TIMEOUT_S = 10.0
_MAX_HEADER_LINES = 100
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


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


class HTTPPort:
    """One HTTP/1.1 request per connection, handed to :meth:`answer`; subclasses say what to answer."""

    what = "serve HTTP"  # "cannot <what> on HOST:PORT" when the address cannot be bound
    close_timeout: float | None = None  # None: close() waits for every open connection
    reuse_port = False  # True: several processes bind the one port (SO_REUSEPORT), the kernel spreads connections

    def __init__(self, host: str, port: int, name: str = "admin") -> None:
        self.host, self._requested_port, self.name = host, port, name
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (differs from the requested one when that was 0)."""
        if self._server is None or not self._server.sockets:
            return self._requested_port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and serve; ``AdminListenError`` (e.g. address in use) names the address."""
        try:
            self._server = await asyncio.start_server(
                self._handle, self.host, self._requested_port, reuse_port=self.reuse_port or None
            )
        except OSError as exc:
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            where = f"{self.host}:{self._requested_port}"
            raise AdminListenError(exc.errno, f"cannot {self.what} on {where}: {reason}") from None

    async def close(self) -> None:
        """Stop listening and wait for open connections to finish (at most ``close_timeout`` s)."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), self.close_timeout)
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
        if len(parts) != 3 or not parts[1].startswith("/"):
            await respond(writer, 400, b"bad request\n")
            return
        method, target, _version = parts
        await self.answer(method, target, headers, writer)

    async def answer(self, method: str, target: str, headers: dict[str, str], writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class AdminServer(HTTPPort):
    """Serves ``registry`` on ``/metrics`` and answers ``/healthz`` with 200 while the process serves, and 503
    once it is draining (after SIGTERM, while in-flight calls finish) so a load balancer stops sending work.

    For ratelimit, ``/healthz`` stays 200 while the counter backend is down: the service still answers
    (by its failure mode), and restarting it would not bring Redis back; ``tokenvoy_ratelimit_backend_up``
    tells that story.

    ``/healthcheck`` is envoyproxy/ratelimit's path (Envoy Gateway's probes of its ratelimit Deployment hit
    it): ``OK`` with 200, or 500 while draining or while ``not_ready`` names a reason (ratelimit's
    "healthy once a config is loaded" option).
    """

    what = "serve metrics"

    def __init__(self, registry: CollectorRegistry, listen: str, name: str = "admin") -> None:
        super().__init__(*parse_admin_listen(listen), name=name)
        self.registry = registry
        self.draining = False  # set by the server's stop path: /healthz answers 503 from then on
        self.not_ready: Callable[[], str | None] | None = None  # a reason /healthcheck answers 500
        self.pages: dict[str, Callable[[], bytes]] = {}  # more GET paths (JSON documents), e.g. /rlconfig

    def start_draining(self) -> None:
        self.draining = True

    async def answer(self, method: str, target: str, headers: dict[str, str], writer: asyncio.StreamWriter) -> None:
        path = target.split("?", 1)[0]
        if path not in ("/metrics", "/healthz", "/healthcheck", *self.pages):
            await respond(writer, 404, b"not found: try /metrics, /healthz or /healthcheck\n")
            return
        if method not in ("GET", "HEAD"):
            await respond(writer, 405, b"only GET and HEAD\n", extra={"allow": "GET, HEAD"})
            return
        head = method == "HEAD"
        if path == "/healthz":
            if self.draining:
                await respond(writer, 503, b"stopping: draining in-flight requests\n", head=head)
            else:
                await respond(writer, 200, b"ok\n", head=head)
            return
        page = self.pages.get(path)
        if page is not None:
            await respond(writer, 200, page(), "application/json", head=head)
            return
        if path == "/healthcheck":
            reason = "stopping: draining in-flight requests" if self.draining else None
            if reason is None and self.not_ready is not None:
                reason = self.not_ready()
            if reason is None:
                await respond(writer, 200, b"OK", head=head)
            else:
                await respond(writer, 500, f"{reason}\n".encode(), head=head)
            return
        encoder, content_type = choose_encoder(headers.get("accept", ""))
        body = await asyncio.to_thread(encoder, self.registry)
        await respond(writer, 200, body, content_type, head=head)


async def start_admin(
    registry: CollectorRegistry, listen: str | None, name: str, required: bool = True, reuse_port: bool = False
) -> AdminServer | None:
    """Start the admin port on ``listen`` (None: no admin port). An address in use is an error when
    ``required``, else a warning and no admin port (a default address, so a second instance still starts)."""
    if listen is None:
        return None
    admin = AdminServer(registry, listen, name=name)
    admin.reuse_port = reuse_port
    try:
        await admin.start()
    except OSError as exc:
        if required or exc.errno != errno.EADDRINUSE:
            raise
        logger.warning("%s; running without metrics (pass --admin-listen HOST:PORT to choose another)", exc)
        return None
    return admin


async def respond(
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
