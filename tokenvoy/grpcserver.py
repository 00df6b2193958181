"""What the extproc and ratelimit gRPC servers share: listen address parsing, health, graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

log = logging.getLogger(__name__)


def grpc_target(listen: str) -> str:
    """``unix:/path`` stays as is (gRPC's own syntax); ``HOST:PORT`` is used as given."""
    if listen.startswith("unix:"):
        path = listen[len("unix:") :]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a stale socket from a previous run would make bind fail
        return f"unix:{path}"
    if ":" not in listen:
        raise ValueError(f"listen address {listen!r} must be HOST:PORT or unix:/path")
    return listen


def add_health(server: grpc.aio.Server, services: Iterable[str]) -> health.HealthServicer:
    servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    for name in ["", *services]:
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return servicer


async def serve_until_signalled(
    server: grpc.aio.Server,
    health_servicer: health.HealthServicer,
    grace_seconds: float = 5.0,
    on_stop: Callable[[], None] | None = None,
) -> None:
    """Run until SIGTERM/SIGINT, then report NOT_SERVING (gRPC health, and ``on_stop`` for the admin port's
    ``/healthz``) and let in-flight streams finish."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    await stop.wait()
    health_servicer.enter_graceful_shutdown()
    if on_stop is not None:
        on_stop()
    log.info("stopping: letting in-flight calls finish (up to %.0fs)", grace_seconds)
    await server.stop(grace_seconds)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def grpc_client_target(listen: str) -> str:
    """The channel target that reaches a server started with ``--listen listen``."""
    if listen.startswith("unix:"):
        return f"unix:{listen[len('unix:') :]}"
    return listen
