#!/usr/bin/env python3
"""A no-op Envoy Rate Limit Service: the floor that ``tokenvoy ratelimit`` is measured against.

Same server shell as ``tokenvoy ratelimit`` (grpc.aio on uvloop, health and reflection services, the
generated RLS servicer), but ``ShouldRateLimit`` answers one prebuilt OK response without looking at the
request: what is left is the cost of a grpc.aio unary call itself (decode, dispatch, encode, the poller
thread's wake-ups of the event loop). ``bench/ratelimit.py --baseline`` runs it side by side.

    python bench/noop_rls.py --listen 127.0.0.1:25081 [--no-uvloop]
"""

from __future__ import annotations

import argparse
import sys

import grpc

from tokenvoy.grpcserver import run, serve_until_signalled, start_service
from tokenvoy.pb.envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

RLS_SERVICE_NAME = rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"].full_name
OK = rls_pb2.RateLimitResponse.Code.OK


class NoopServicer(rls_pb2_grpc.RateLimitServiceServicer):
    """OK for everything, one status per descriptor with a limit, remaining and reset (as a real answer has, so
    that Envoy writes the same ``x-ratelimit-*`` headers), built once per descriptor count."""

    def __init__(self) -> None:
        self._by_count: dict[int, rls_pb2.RateLimitResponse] = {}

    async def ShouldRateLimit(
        self, request: rls_pb2.RateLimitRequest, context: grpc.aio.ServicerContext
    ) -> rls_pb2.RateLimitResponse:
        count = len(request.descriptors)
        response = self._by_count.get(count)
        if response is None:
            response = rls_pb2.RateLimitResponse(overall_code=OK)
            for _ in range(count):
                status = response.statuses.add(code=OK, limit_remaining=99_983)
                status.current_limit.requests_per_unit = 100_000
                status.current_limit.unit = rls_pb2.RateLimitResponse.RateLimit.Unit.HOUR
                status.current_limit.name = "noop"
                status.duration_until_reset.seconds = 1800
            self._by_count[count] = response
        return response


async def serve(listen: str) -> None:
    def register(server: grpc.aio.Server) -> list[str]:
        rls_pb2_grpc.add_RateLimitServiceServicer_to_server(NoopServicer(), server)
        return [RLS_SERVICE_NAME]

    shell = await start_service("noop-rls", listen, register)
    await serve_until_signalled(shell, grace=1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    parser.add_argument("--no-uvloop", action="store_true", help="asyncio's own event loop instead of uvloop's")
    args = parser.parse_args(argv)
    run(serve(args.listen), use_uvloop=not args.no_uvloop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
