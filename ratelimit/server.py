"""``tokenvoy ratelimit``: run the Rate Limit Service as a gRPC server.

Serves ``envoy.service.ratelimit.v3.RateLimitService`` plus the standard gRPC health service (SERVING
while up, NOT_SERVING during shutdown) and server reflection (so ``grpcurl`` works without protos).
SIGTERM/SIGINT stop accepting new calls, let in-flight ones finish within a grace period, and exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import stat
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tokenvoy.pb.envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from .backend import CounterBackend
from .config import RateLimitConfig, RateLimitConfigError, load_config
from .memory_backend import MemoryBackend
from .service import RateLimitService, RateLimitServicer

__all__ = [
    "DEFAULT_GRACE_S",
    "DEFAULT_LISTEN",
    "RunningServer",
    "build_parser",
    "main",
    "read_config_files",
    "serve",
    "start_server",
]

logger = logging.getLogger("tokenvoy.ratelimit")

DEFAULT_LISTEN = "127.0.0.1:8081"
DEFAULT_GRACE_S = 5.0
RLS_SERVICE_NAME = rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"].full_name


def read_config_files(paths: Sequence[str | os.PathLike[str]]) -> RateLimitConfig:
    """Read and parse rate limit YAML files (one domain each); errors name the file."""
    if not paths:
        raise RateLimitConfigError("no rate limit configuration file given")
    sources: list[tuple[str, str]] = []
    for path in paths:
        name = os.fspath(path)
        try:
            sources.append((name, Path(name).read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise RateLimitConfigError(f"{name}: cannot read: {reason}") from None
    return load_config(sources)


def _prepare_listen(listen: str) -> str:
    """Validate ``HOST:PORT`` / ``[V6]:PORT`` / ``unix:PATH`` (clearing a stale socket file); return it."""
    if listen.startswith("unix:"):
        path = listen.removeprefix("unix:")
        if path.startswith("//"):  # unix:///abs/path
            path = path[2:]
        if not path:
            raise ValueError(f"invalid listen address {listen!r}: missing socket path")
        _remove_stale_socket(path)
        return listen
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid listen address {listen!r}: expected HOST:PORT or unix:/path.sock")
    return listen


def _remove_stale_socket(path: str) -> None:
    """A socket file left by a killed server would make bind fail; anything else is left alone."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ValueError(f"cannot listen on unix:{path}: the path exists and is not a socket")
    os.unlink(path)


@dataclass
class RunningServer:
    """A started server: ``port`` is the bound TCP port (0 for a unix socket)."""

    server: grpc.aio.Server
    health: health.aio.HealthServicer
    service: RateLimitService
    backend: CounterBackend
    address: str
    port: int

    async def stop(self, grace: float = DEFAULT_GRACE_S) -> None:
        """Report NOT_SERVING, refuse new calls, wait up to ``grace`` s for in-flight ones, close backend."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await self.backend.close()


async def start_server(
    config: RateLimitConfig,
    listen: str = DEFAULT_LISTEN,
    *,
    backend: CounterBackend | None = None,
    clock: Callable[[], float] = time.time,
) -> RunningServer:
    """Build and start the gRPC server on ``listen`` (``HOST:PORT``, port 0 picks a free one)."""
    address = _prepare_listen(listen)
    if backend is None:
        backend = MemoryBackend(clock=clock)
    service = RateLimitService(config, backend, clock=clock)
    # so_reuseport off: a second server on the same port must fail, not silently share the traffic.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(RateLimitServicer(service), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (RLS_SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {listen}: {exc}") from None
    if port == 0 and not address.startswith("unix:"):
        raise OSError(f"cannot listen on {listen}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set(RLS_SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, health_servicer, service, backend, listen, port)


def _describe(config: RateLimitConfig) -> str:
    parts = [
        f"{name} ({d.limit_count} limit{'' if d.limit_count == 1 else 's'}, {d.source})"
        for name, d in sorted(config.domains.items())
    ]
    return ", ".join(parts) or "none"


async def serve(
    config_paths: Sequence[str | os.PathLike[str]],
    listen: str = DEFAULT_LISTEN,
    *,
    backend: CounterBackend | None = None,
    grace: float = DEFAULT_GRACE_S,
    stop: asyncio.Event | None = None,
) -> None:
    """Load the config files, serve until SIGTERM/SIGINT (or ``stop`` is set), then shut down gracefully.

    Raises :class:`RateLimitConfigError` for bad configuration and ``OSError``/``ValueError`` when the
    address cannot be used, before anything is served.
    """
    config = read_config_files(config_paths)
    stop = stop or asyncio.Event()
    running = await start_server(config, listen, backend=backend)
    shown = listen if running.port == 0 or listen.startswith("unix:") else _with_port(listen, running.port)
    logger.info("ratelimit serving on %s, domains: %s", shown, _describe(config))

    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        await stop.wait()
        logger.info("ratelimit shutting down (grace %.1fs)", grace)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await running.stop(grace)


def _with_port(listen: str, port: int) -> str:
    host = listen.rpartition(":")[0]
    return f"{host}:{port}"


def build_parser() -> argparse.ArgumentParser:
    """Command line of ``tokenvoy ratelimit``."""
    parser = argparse.ArgumentParser(
        prog="tokenvoy ratelimit",
        description=(
            "Run the Envoy Rate Limit Service (RLS v3 gRPC) that enforces request and token budgets. "
            "Configuration uses the envoyproxy/ratelimit YAML format: one domain per file, nested "
            "descriptors with key, optional value (a trailing * matches a prefix) and rate_limit "
            "{unit, requests_per_unit | unlimited, name, replaces}, plus shadow_mode."
        ),
        epilog=(
            "Counters are kept in memory (one process; they reset on restart). Windows are fixed and "
            "aligned to the Unix epoch (month = 30 days, year = 365 days). "
            "Example: tokenvoy ratelimit --config budgets.yaml --listen 127.0.0.1:8081"
        ),
    )
    parser.add_argument(
        "--config",
        action="append",
        required=True,
        metavar="FILE",
        help="rate limit YAML file; repeat for several domains (a domain may appear in only one file)",
    )
    parser.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="ADDR",
        help=f"gRPC address: HOST:PORT or unix:/path.sock (default: {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_GRACE_S,
        metavar="SECONDS",
        help=f"on SIGTERM/SIGINT, time allowed for in-flight calls (default: {DEFAULT_GRACE_S:g})",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="stderr log level (default: info; nothing is logged per request)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 after a clean shutdown, 1 on startup errors)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(serve(args.config, args.listen, grace=args.grace))
    except RateLimitConfigError as exc:
        print(f"tokenvoy ratelimit: configuration error: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"tokenvoy ratelimit: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
