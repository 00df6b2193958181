"""A small, fast HTTP/1.1 server on ``asyncio.Protocol``.

Why hand-written: the fake upstream must stay out of the way in benchmarks (Envoy alone in front of it is
the baseline), must run with only the standard library + orjson, and must speak exactly the HTTP/1.1 that
Envoy speaks to upstreams: keep-alive, ``content-length`` *and* ``transfer-encoding: chunked`` request
bodies, chunked streaming replies. A chunked body is read (so the connection stays in step) and flagged
(:attr:`Request.chunked`): the fake providers refuse it, as provider front ends do.

The handler sees a parsed :class:`Request` and returns a :class:`Response`, or an awaitable of one. A
plain ``Response`` is written straight from ``data_received`` (no task, no extra loop iteration): that is
the fast path for small non-streamed replies. Requests on one connection are answered strictly in order;
while an awaitable handler runs, later pipelined requests wait in the buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from ssl import SSLContext

__all__ = ["Handler", "HttpProtocol", "HttpServer", "Request", "Response", "start"]

log = logging.getLogger(__name__)

MAX_HEAD = 64 * 1024
"""Largest request line + headers accepted; beyond it the request is refused with 431."""
MAX_BODY = 64 * 1024 * 1024
"""Largest request body accepted; beyond it the request is refused with 413."""
_READ_HIGH_WATER = 1024 * 1024
"""Stop reading from a client that pipelines this much while a slow handler is still running."""


@dataclass(slots=True)
class Request:
    """One parsed HTTP request, body fully read."""

    method: str
    target: str
    """Request target as sent (origin-form, query included)."""
    path: str
    """``target`` without the query string."""
    query: str
    version: str
    headers: dict[str, str]
    """Lower-cased names; repeated headers joined with ``", "`` as RFC 9110 allows."""
    body: bytes
    keep_alive: bool
    chunked: bool = False
    """The body came ``transfer-encoding: chunked`` (no ``content-length``)."""


@dataclass(slots=True)
class Response:
    """A reply: either ``body`` (sent with ``content-length``) or ``stream`` (sent chunked, flushed per part).

    ``stream`` may be a plain iterable (written at once, no loop iterations) or an async iterable (each part
    written as soon as it is produced, e.g. with pauses between SSE events).
    """

    status: int = 200
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    stream: Iterable[bytes] | AsyncIterable[bytes] | None = None


Handler = Callable[[Request], Response | Awaitable[Response]]


class BadRequest(Exception):
    """The bytes received are not an HTTP/1.x request we accept; answered with ``status`` then closed."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase.encode())


_STATUS_LINES: dict[int, bytes] = {s.value: _status_line(s.value) for s in HTTPStatus}

# Body-parsing states.
_HEAD, _FIXED, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS = range(6)


class HttpProtocol(asyncio.Protocol):
    """One client connection: parses requests, calls the handler, writes replies in order."""

    __slots__ = (
        "_body",
        "_buf",
        "_busy",
        "_chunk_left",
        "_closing",
        "_connections",
        "_drain_waiter",
        "_eof",
        "_handler",
        "_loop",
        "_paused_reading",
        "_pending",
        "_state",
        "_streaming",
        "_task",
        "_transport",
        "_want",
        "_write_paused",
    )

    def __init__(self, handler: Handler, connections: set[HttpProtocol] | None = None) -> None:
        self._handler = handler
        self._connections = connections if connections is not None else set()
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._state = _HEAD
        self._pending: Request | None = None
        self._body = bytearray()
        self._want = 0
        self._chunk_left = 0
        self._busy = False
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._paused_reading = False
        self._eof = False
        self._streaming = False

    # -- asyncio.Protocol -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        """Client went away: drop buffered work and cancel a running handler or stream."""
        self._transport = None
        self._closing = True
        self._connections.discard(self)
        self._buf.clear()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._wake_writer(ConnectionResetError("client disconnected"))

    def close(self) -> None:
        """Server shutdown: close the connection now."""
        if self._transport is not None:
            self._transport.close()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_writer(None)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._buf += data
        if self._busy:
            if len(self._buf) > _READ_HIGH_WATER and self._transport is not None and not self._paused_reading:
                self._transport.pause_reading()
                self._paused_reading = True
            return
        self._process()

    def eof_received(self) -> bool | None:
        """Half-close from the client: answer what is already buffered, then close (False closes now)."""
        if self._busy:
            self._eof = True
            return True
        return False

    # -- request loop -----------------------------------------------------------------------------------

    def _process(self) -> None:
        """Parse and answer every complete request in the buffer, stopping at the first async handler."""
        while not self._closing and self._transport is not None:
            try:
                request = self._parse()
            except BadRequest as e:
                self._write_error_and_close(e.status, e.reason)
                return
            if request is None:
                return
            try:
                result = self._handler(request)
            except Exception:
                log.exception("testupstream handler failed for %s %s", request.method, request.target)
                self._write_error_and_close(500, "internal error")
                return
            if isinstance(result, Response) and result.stream is None:
                self._write_response(request, result)
                continue
            self._busy = True
            self._task = self._loop.create_task(self._finish(request, result))
            return

    async def _finish(self, request: Request, result: Response | Awaitable[Response]) -> None:
        """Slow path: await the handler and/or pump a streamed body, then resume parsing."""
        try:
            response = result if isinstance(result, Response) else await result
            if response.stream is None:
                self._write_response(request, response)
            else:
                await self._write_stream(request, response)
        except (asyncio.CancelledError, ConnectionError):
            if self._transport is not None:
                self._transport.close()
            return
        except Exception:
            log.exception("testupstream handler failed for %s %s", request.method, request.target)
            if self._transport is not None:
                if self._streaming:  # the status line is out already: cut the body short
                    self._closing = True
                    self._transport.close()
                else:
                    self._write_error_and_close(500, "internal error")
            return
        finally:
            self._streaming = False
            self._task = None
            self._busy = False
        if self._transport is None:
            return
        if self._paused_reading:
            self._paused_reading = False
            self._transport.resume_reading()
        if self._closing:
            self._transport.close()
            return
        self._process()
        if self._eof and not self._busy and self._transport is not None:
            self._transport.close()

    # -- parsing ----------------------------------------------------------------------------------------

    def _parse(self) -> Request | None:
        """Consume one complete request from the buffer, or return None if more bytes are needed."""
        buf = self._buf
        if self._state == _HEAD:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    raise BadRequest(431, "request header fields too large")
                return None
            if end > MAX_HEAD:
                raise BadRequest(431, "request header fields too large")
            head = bytes(buf[:end])
            del buf[: end + 4]
            self._pending = self._parse_head(head)
        req = self._pending
        assert req is not None
        if self._state == _FIXED:
            if len(buf) < self._want:
                return None
            req.body = bytes(buf[: self._want])
            del buf[: self._want]
        elif self._state != _HEAD:
            if not self._parse_chunked():
                return None
            req.body = bytes(self._body)
            self._body.clear()
        self._state = _HEAD
        self._pending = None
        return req

    def _parse_head(self, head: bytes) -> Request:
        """Parse request line + headers and decide how the body is framed (sets the parser state)."""
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            raise BadRequest(400, "malformed request line")
        method_b, target_b, version_b = parts
        if not version_b.startswith(b"HTTP/1.") or len(version_b) != 8:
            raise BadRequest(505 if version_b.startswith(b"HTTP/") else 400, "unsupported HTTP version")
        if not method_b or not method_b.isalpha() or not target_b:
            raise BadRequest(400, "malformed request line")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip() or b" " in name or b"\t" in name:
                raise BadRequest(400, "malformed header line")
            key = name.decode("latin-1").lower()
            val = value.strip(b" \t").decode("latin-1")
            old = headers.get(key)
            headers[key] = val if old is None else f"{old}, {val}"
        version = version_b.decode()
        target = target_b.decode("latin-1")
        if target[0] != "/":
            # absolute-form (proxy style): keep only path + query
            scheme, sep, rest = target.partition("://")
            if not sep or not scheme.isalpha():
                if target == "*":
                    rest = "/*"
                else:
                    raise BadRequest(400, "malformed request target")
            slash = rest.find("/")
            target = rest[slash:] if slash >= 0 else "/"
        path, _, query = target.partition("?")
        conn = headers.get("connection", "").lower()
        # HTTP/1.1 is persistent unless told otherwise; HTTP/1.0 only when asked.
        keep_alive = "close" not in conn if version == "HTTP/1.1" else "keep-alive" in conn
        req = Request(method_b.decode(), target, path, query, version, headers, b"", keep_alive)

        te = headers.get("transfer-encoding")
        cl = headers.get("content-length")
        if te is not None:
            if cl is not None:
                raise BadRequest(400, "both content-length and transfer-encoding")
            if te.lower() != "chunked" or version != "HTTP/1.1":
                raise BadRequest(400, f"unsupported transfer-encoding {te!r}")
            self._state = _CHUNK_SIZE
            self._body.clear()
            req.chunked = True
        elif cl is not None:
            values = {v.strip() for v in cl.split(",")}
            if len(values) != 1:
                raise BadRequest(400, "conflicting content-length")
            (value,) = values
            if not value.isdigit() or not value.isascii():
                raise BadRequest(400, "invalid content-length")
            n = int(value)
            if n > MAX_BODY:
                raise BadRequest(413, "request body too large")
            if n:
                self._state = _FIXED
                self._want = n
        if self._state != _HEAD and headers.get("expect", "").lower() == "100-continue" and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return req

    def _parse_chunked(self) -> bool:
        """Advance the chunked-body state machine over the buffer; True once the last chunk is read."""
        buf = self._buf
        while True:
            if self._state == _CHUNK_SIZE:
                eol = buf.find(b"\r\n")
                if eol < 0:
                    if len(buf) > 1024:
                        raise BadRequest(400, "chunk size line too long")
                    return False
                size_s = bytes(buf[:eol]).split(b";", 1)[0].strip(b" \t")
                del buf[: eol + 2]
                try:
                    if not size_s or not all(c in b"0123456789abcdefABCDEF" for c in size_s):
                        raise ValueError
                    size = int(size_s, 16)
                except ValueError:
                    raise BadRequest(400, "invalid chunk size") from None
                if size == 0:
                    self._state = _TRAILERS
                    continue
                if len(self._body) + size > MAX_BODY:
                    raise BadRequest(413, "request body too large")
                self._chunk_left = size
                self._state = _CHUNK_DATA
            elif self._state == _CHUNK_DATA:
                if not buf:
                    return False
                take = min(self._chunk_left, len(buf))
                self._body += buf[:take]
                del buf[:take]
                self._chunk_left -= take
                if self._chunk_left:
                    return False
                self._state = _CHUNK_CRLF
            elif self._state == _CHUNK_CRLF:
                if len(buf) < 2:
                    return False
                if buf[:2] != b"\r\n":
                    raise BadRequest(400, "missing CRLF after chunk data")
                del buf[:2]
                self._state = _CHUNK_SIZE
            else:  # _TRAILERS: skip trailer fields up to the empty line
                eol = buf.find(b"\r\n")
                if eol < 0:
                    if len(buf) > MAX_HEAD:
                        raise BadRequest(431, "trailers too large")
                    return False
                del buf[: eol + 2]
                if eol == 0:
                    return True

    # -- writing ----------------------------------------------------------------------------------------

    def _head(self, request: Request, response: Response, framing: bytes) -> bytes:
        status_line = _STATUS_LINES.get(response.status) or _status_line(response.status)
        parts = [status_line]
        if response.content_type is not None:
            parts.append(b"content-type: %s\r\n" % response.content_type.encode("latin-1"))
        for name, value in response.headers:
            parts.append(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1")))
        parts.append(framing)
        if not request.keep_alive:
            parts.append(b"connection: close\r\n")
        elif request.version == "HTTP/1.0":
            parts.append(b"connection: keep-alive\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def _write_response(self, request: Request, response: Response) -> None:
        transport = self._transport
        if transport is None:
            return
        body = response.body
        head = self._head(request, response, b"content-length: %d\r\n" % len(body))
        if request.method == "HEAD" or response.status in (204, 304) or response.status < 200:
            transport.write(head)
        else:
            transport.write(head + body)
        if not request.keep_alive:
            self._closing = True
            transport.close()

    async def _write_stream(self, request: Request, response: Response) -> None:
        """Send ``response.stream`` with chunked encoding (HTTP/1.0: raw, then close), one write per part."""
        if self._transport is None:
            return
        chunked = request.version == "HTTP/1.1"
        if not chunked:
            request.keep_alive = False
        framing = b"transfer-encoding: chunked\r\n" if chunked else b""
        self._streaming = True
        self._transport.write(self._head(request, response, framing))
        stream = response.stream
        head_only = request.method == "HEAD"
        if isinstance(stream, AsyncIterable):
            async for part in stream:
                if not head_only and self._send_part(part, chunked):
                    await self._drain()
        elif stream is not None:
            for part in stream:
                if not head_only and self._send_part(part, chunked):
                    await self._drain()
        if self._transport is None:
            raise ConnectionResetError("client disconnected")
        if chunked and not head_only:
            self._transport.write(b"0\r\n\r\n")
        if not request.keep_alive:
            self._closing = True
            self._transport.close()

    def _send_part(self, part: bytes, chunked: bool) -> bool:
        """Write one part as its own chunk (own send, like a real token stream); True if we must drain."""
        transport = self._transport
        if transport is None or transport.is_closing():  # a failed send closes before connection_lost runs
            raise ConnectionResetError("client disconnected")
        if part:  # an empty chunk would end the body
            transport.write(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
        return self._write_paused

    async def _drain(self) -> None:
        """Wait until the transport's write buffer drains below its low-water mark (or the client leaves)."""
        waiter = self._loop.create_future()
        self._drain_waiter = waiter
        await waiter

    def _wake_writer(self, exc: Exception | None) -> None:
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)

    def _write_error_and_close(self, status: int, reason: str) -> None:
        transport = self._transport
        self._closing = True
        if transport is None:
            return
        body = reason.encode() + b"\n"
        head = _STATUS_LINES.get(status) or _status_line(status)
        with contextlib.suppress(Exception):
            transport.write(
                head + b"content-type: text/plain\r\ncontent-length: %d\r\n"
                b"connection: close\r\n\r\n%s" % (len(body), body)
            )
        transport.close()


class HttpServer:
    """A listening socket plus its open connections, so closing really closes (keep-alive clients too)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections: set[HttpProtocol] = set()
        self.server: asyncio.Server

    def _protocol(self) -> HttpProtocol:
        protocol = HttpProtocol(self.handler, self.connections)
        return protocol

    def close(self) -> None:
        """Stop accepting and close every open connection (in-flight streams are cut)."""
        self.server.close()
        for protocol in list(self.connections):
            protocol.close()

    async def wait_closed(self) -> None:
        await self.server.wait_closed()


async def start(
    handler: Handler, host: str, port: int, *, backlog: int = 1024, ssl: SSLContext | None = None
) -> HttpServer:
    """Listen on ``host:port`` (port 0 picks a free one) and serve ``handler`` until closed (HTTPS with ``ssl``)."""
    http = HttpServer(handler)
    loop = asyncio.get_running_loop()
    http.server = await loop.create_server(http._protocol, host, port, backlog=backlog, ssl=ssl)
    return http
