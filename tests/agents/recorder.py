"""A recording reverse proxy between a coding-agent CLI and the gateway: what the CLI really sends.

The CLI's base URL points here; every request is kept (method, target, headers, body) and forwarded
unchanged to the gateway, whose answer (streamed or not) goes back unchanged. It runs its own event loop
in a thread so a test can drive a CLI subprocess meanwhile.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from tests.ports import free_port
from tokenvoy.testupstream import http

# Hop-by-hop headers (RFC 9110 §7.6.1) and the ones the proxy re-frames itself.
_NOT_FORWARDED = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length", "host"}
)


@dataclass(frozen=True, slots=True)
class Recorded:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None


class Recorder:
    """``start()`` listens on a free loopback port; ``url`` is the address to give the CLI."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[Recorded] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: http.HttpServer | None = None
        self._client: httpx.AsyncClient | None = None

    def start(self) -> Recorder:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(60.0), follow_redirects=False)
        self._server = await http.start(self._handle, "127.0.0.1", self.port)

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            if self._client is not None:
                await self._client.aclose()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def clear(self) -> None:
        self.requests.clear()

    async def _handle(self, request: http.Request) -> http.Response:
        self.requests.append(Recorded(request.method, request.target, dict(request.headers), request.body))
        assert self._client is not None
        headers = [(k, v) for k, v in request.headers.items() if k not in _NOT_FORWARDED]
        upstream = self._client.build_request(
            request.method, self.upstream + request.target, headers=headers, content=request.body
        )
        answer = await self._client.send(upstream, stream=True)
        kept = [(k, v) for k, v in answer.headers.items() if k.lower() not in _NOT_FORWARDED | {"content-type"}]

        async def body() -> AsyncIterator[bytes]:
            try:
                async for part in answer.aiter_raw():
                    yield part
            finally:
                await answer.aclose()

        return http.Response(
            answer.status_code, content_type=answer.headers.get("content-type"), headers=kept, stream=body()
        )
