"""A gRPC proxy in front of the rate limit service, for fault injection: it records every
``ShouldRateLimit`` call and can hold back the request-time hold calls (the reservations) longer than
Envoy's ratelimit timeout, so Envoy fails open and the RLS never sees them (Envoy cancels the call; the
proxy's handler is cancelled before it forwards)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import grpc

from tokenvoy.pb.envoy.service.ratelimit.v3 import rls_pb2

SHOULD_RATE_LIMIT = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"


def is_reserve(request: rls_pb2.RateLimitRequest) -> bool:
    """A request-time hold call (reservation or in-flight slot), by its trailing ``tokenvoy_hold`` entry."""
    return any(
        entry.key == "tokenvoy_hold" and entry.value == "reserve" for d in request.descriptors for entry in d.entries
    )


class RlsProxy:
    """``unix:listen`` -> ``unix:target``; runs its own event loop in a thread."""

    def __init__(self, listen: str, target: str) -> None:
        self.listen, self.target = listen, target
        self.reserve_delay_s = 0.0
        self.calls: list[rls_pb2.RateLimitRequest] = []  # every ShouldRateLimit Envoy sent, delayed ones too
        self.forwarded: list[rls_pb2.RateLimitRequest] = []  # what reached the RLS
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> RlsProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise AssertionError("the RLS proxy did not start")
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        channel = grpc.aio.insecure_channel(f"unix:{self.target}")
        proxy = self

        def forwarder(method: str) -> Callable:
            call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)

            async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                if method == SHOULD_RATE_LIMIT:
                    parsed = rls_pb2.RateLimitRequest.FromString(request)
                    proxy.calls.append(parsed)
                    if proxy.reserve_delay_s and is_reserve(parsed):
                        await asyncio.sleep(proxy.reserve_delay_s)  # Envoy gives up first and cancels us
                    proxy.forwarded.append(parsed)
                return await call(request)

            return handle

        class Generic(grpc.GenericRpcHandler):
            def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
                return grpc.unary_unary_rpc_method_handler(forwarder(details.method))

        server = grpc.aio.server()
        server.add_generic_rpc_handlers((Generic(),))
        server.add_insecure_port(f"unix:{self.listen}")
        await server.start()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await server.stop(0)
        await channel.close()
