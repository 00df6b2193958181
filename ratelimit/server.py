"""``tokenvoy ratelimit``: run the Rate Limit Service as a gRPC server.

Serves ``envoy.service.ratelimit.v3.RateLimitService`` plus the standard gRPC health service (SERVING
while up, NOT_SERVING during shutdown) and server reflection (so ``grpcurl`` works without protos), and
an admin HTTP port with ``/metrics`` and ``/healthz``. Counters are in memory or in Redis
(``--redis-url``). The config files are reloaded when they change and on SIGHUP. SIGTERM/SIGINT stop
accepting new calls, let in-flight ones finish within a grace period, and exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc

from tokenvoy.admin import AdminServer, start_admin
from tokenvoy.grpcserver import DEFAULT_GRACE_S, GrpcService, parse_listen, serve_until_signalled, start_service
from tokenvoy.grpcserver import run as run_service

from .backend import CounterBackend
from .config import RateLimitConfig, RateLimitConfigError
from .limiter import DEFAULT_HOLD_SLOT_S
from .memory_backend import MemoryBackend
from .metrics import RateLimitMetrics
from .redis_backend import DEFAULT_PREFIX, DEFAULT_TIMEOUT_S, RedisBackend
from .reload import DEFAULT_POLL_INTERVAL_S, ConfigWatcher, describe_config, read_config_files
from .service import RLS_SERVICE_NAME, FailureMode, RateLimitService, RateLimitServicer
from .service import register as register_rls

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
DEFAULT_ADMIN_LISTEN = "127.0.0.1:1065"
ADMIN_OFF = "off"


@dataclass
class RunningServer:
    """A started server: ``port`` is the bound TCP port (0 for a unix socket)."""

    shell: GrpcService
    service: RateLimitService
    backend: CounterBackend
    address: str
    metrics: RateLimitMetrics
    watcher: ConfigWatcher | None = None

    @property
    def server(self) -> grpc.aio.Server:
        return self.shell.server

    @property
    def port(self) -> int:
        return self.shell.port

    @property
    def admin(self) -> AdminServer | None:
        return self.shell.admin

    async def stop(self, grace: float = DEFAULT_GRACE_S) -> None:
        """Report NOT_SERVING, refuse new calls, wait up to ``grace`` s for in-flight ones, close backend."""
        await self.shell.stop(grace)
        await self.backend.close()


async def start_server(
    config: RateLimitConfig,
    listen: str = DEFAULT_LISTEN,
    *,
    backend: CounterBackend | None = None,
    clock: Callable[[], float] = time.time,
    failure_mode: FailureMode = FailureMode.OPEN,
    metrics: RateLimitMetrics | None = None,
    admin_listen: str | None = None,
    admin_required: bool = True,
    watcher: ConfigWatcher | None = None,
    hold_slot_s: int = DEFAULT_HOLD_SLOT_S,
) -> RunningServer:
    """Build and start the gRPC server on ``listen`` (``HOST:PORT``, port 0 picks a free one).

    ``admin_listen`` (``HOST:PORT``) also serves ``/metrics`` and ``/healthz``; if it cannot be bound, that
    is an ``OSError`` when ``admin_required``, else a warning (used for the CLI's default address, so that
    a second instance on one machine still starts). ``watcher``, when given, starts polling the config
    files and applies reloads to this server's service.
    """
    if backend is None:
        backend = MemoryBackend(clock=clock)
    if metrics is None:
        metrics = RateLimitMetrics()
    service = RateLimitService(
        config, backend, clock=clock, failure_mode=failure_mode, metrics=metrics, hold_slot_s=hold_slot_s
    )

    def register(server: grpc.aio.Server) -> list[str]:
        register_rls(RateLimitServicer(service), server)
        return [RLS_SERVICE_NAME]

    parse_listen(listen)  # a malformed address is a ValueError before the admin port is bound
    admin = await start_admin(metrics.registry, admin_listen, "ratelimit", required=admin_required)
    shell = await start_service("ratelimit", listen, register, admin=admin)
    running = RunningServer(shell, service, backend, listen, metrics, watcher)
    if watcher is not None:
        watcher.apply = service.set_config
        if watcher.interval > 0:
            shell.spawn(watcher.run())
    return running


def _describe_backend(backend: CounterBackend, failure_mode: FailureMode) -> str:
    if isinstance(backend, RedisBackend):
        return (
            f"redis {backend.url} (key prefix {backend.prefix!r}, timeout {backend.timeout * 1000:g} ms, "
            f"failure mode {failure_mode.value})"
        )
    if isinstance(backend, MemoryBackend):
        return "in memory (this process only, lost on restart)"
    return type(backend).__name__


async def serve(
    config_paths: Sequence[str | os.PathLike[str]],
    listen: str = DEFAULT_LISTEN,
    *,
    backend: CounterBackend | None = None,
    grace: float = DEFAULT_GRACE_S,
    stop: asyncio.Event | None = None,
    redis_url: str | None = None,
    redis_prefix: str | None = None,
    redis_timeout: float | None = None,
    failure_mode: FailureMode = FailureMode.OPEN,
    admin_listen: str | None = None,
    admin_required: bool = True,
    reload_interval: float = DEFAULT_POLL_INTERVAL_S,
    hold_slot_s: int = DEFAULT_HOLD_SLOT_S,
) -> None:
    """Load the config files, serve until SIGTERM/SIGINT (or ``stop`` is set), then shut down gracefully.

    ``redis_url`` selects the Redis backend (unless ``backend`` is given); an unreachable Redis at startup
    is not fatal: the service starts in its failure mode and reconnects in the background. SIGHUP
    reloads the config files at once; ``reload_interval`` (0 = never) polls them for changes.

    Raises :class:`RateLimitConfigError` for bad configuration and ``OSError``/``ValueError`` when an
    address cannot be used, before anything is served.
    """
    metrics = RateLimitMetrics(process_metrics=True)
    watcher = ConfigWatcher(config_paths, interval=reload_interval, metrics=metrics)
    config = watcher.load()
    redis_backend = None
    if backend is None and redis_url:
        redis_backend = RedisBackend(
            redis_url,
            prefix=DEFAULT_PREFIX if redis_prefix is None else redis_prefix,
            timeout=DEFAULT_TIMEOUT_S if redis_timeout is None else redis_timeout,
        )
        backend = redis_backend
        await redis_backend.connect()
    try:
        running = await start_server(
            config,
            listen,
            backend=backend,
            failure_mode=failure_mode,
            metrics=metrics,
            admin_listen=admin_listen,
            admin_required=admin_required,
            watcher=watcher,
            hold_slot_s=hold_slot_s,
        )
    except BaseException:
        if redis_backend is not None:
            await redis_backend.close()
        raise
    shown = listen if running.port == 0 or listen.startswith("unix:") else _with_port(listen, running.port)
    admin = f"http://{_with_port(admin_listen or '', running.admin.port)}/metrics" if running.admin else "off"
    logger.info(
        "ratelimit serving on %s, domains: %s; counters: %s; metrics: %s",
        shown,
        describe_config(config),
        _describe_backend(running.backend, failure_mode),
        admin,
    )
    if redis_backend is not None and not redis_backend.available:
        running.service.start_outage(f"redis at {redis_backend.url} unreachable at startup: {redis_backend.last_error}")

    try:
        await serve_until_signalled(running.shell, grace, reload=lambda: watcher.reload("SIGHUP"), stop=stop)
    finally:
        await running.backend.close()


def _with_port(listen: str, port: int) -> str:
    host = listen.rpartition(":")[0]
    return f"{host}:{port}"


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Command line of ``tokenvoy ratelimit``."""
    parser = argparse.ArgumentParser(
        prog="tokenvoy ratelimit",
        description=(
            "Run the Envoy Rate Limit Service (RLS v3 gRPC) that enforces request and token budgets. "
            "Configuration uses the envoyproxy/ratelimit YAML format: one domain per file, nested "
            "descriptors with key, optional value (a trailing * matches a prefix) and rate_limit "
            "{unit, requests_per_unit | unlimited, name, replaces}, plus shadow_mode and detailed_metric. "
            "The files are reloaded when they change (checked every second) and on SIGHUP; a file that "
            "fails to load keeps the previous configuration."
        ),
        epilog=(
            "Counters are kept in memory (one process; they reset on restart) unless --redis-url is given: "
            "then every replica pointing at the same Redis enforces one shared budget. Windows are fixed "
            "and aligned to the Unix epoch (month = 30 days, year = 365 days). "
            "Example: tokenvoy ratelimit --config budgets.yaml --listen 127.0.0.1:8081 "
            "--redis-url redis://127.0.0.1:6379/0"
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
        "--admin-listen",
        default=None,
        metavar="ADDR",
        help=(
            f"HTTP address for /metrics (Prometheus) and /healthz: HOST:PORT, or {ADMIN_OFF!r} "
            f"(default: {DEFAULT_ADMIN_LISTEN}; if that default is in use, the server runs without it and warns)"
        ),
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL") or None,
        metavar="URL",
        help=(
            "keep counters in Redis: redis://[[user]:password@]host:port/db, rediss:// (TLS) or "
            "unix:///path.sock?db=0 (default: $REDIS_URL; unset: in memory)"
        ),
    )
    parser.add_argument(
        "--redis-prefix",
        default=None,
        metavar="PREFIX",
        help="prefix of every Redis key, to share one Redis between deployments (default: tokenvoy:rl:)",
    )
    parser.add_argument(
        "--redis-timeout",
        type=_positive_seconds,
        default=None,
        metavar="SECONDS",
        help="longest a call waits for Redis before the failure mode answers (default: 0.05)",
    )
    parser.add_argument(
        "--redis-failure-mode",
        choices=[m.value for m in FailureMode],
        default=FailureMode.OPEN.value,
        help=(
            "answer while Redis is unreachable or slow: open = OK without counting (Envoy serves the "
            "request), closed = OVER_LIMIT (Envoy answers 429); independent of Envoy's failure_mode_deny "
            "(default: open)"
        ),
    )
    parser.add_argument(
        "--reload-interval",
        type=float,
        default=DEFAULT_POLL_INTERVAL_S,
        metavar="SECONDS",
        help=f"check the config files for changes this often; 0: on SIGHUP only (default: {DEFAULT_POLL_INTERVAL_S:g})",
    )
    parser.add_argument(
        "--hold-seconds",
        type=int,
        default=DEFAULT_HOLD_SLOT_S,
        metavar="SECONDS",
        help="a reservation or in-flight slot whose release never comes stops counting after one to two of "
        f"these; longer than the longest request (default: {DEFAULT_HOLD_SLOT_S})",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_GRACE_S,
        metavar="SECONDS",
        help=f"on SIGTERM/SIGINT, time allowed for in-flight calls (default: {DEFAULT_GRACE_S:g})",
    )
    parser.add_argument(
        "--no-uvloop",
        action="store_true",
        help="run on asyncio's own event loop instead of uvloop's (uvloop costs less CPU per call)",
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
    if args.admin_listen is None:
        admin_listen: str | None = DEFAULT_ADMIN_LISTEN
        admin_required = False
    else:
        admin_listen = None if args.admin_listen == ADMIN_OFF else args.admin_listen
        admin_required = True
    try:
        run_service(
            serve(
                args.config,
                args.listen,
                grace=args.grace,
                redis_url=args.redis_url,
                redis_prefix=args.redis_prefix,
                redis_timeout=args.redis_timeout,
                failure_mode=FailureMode(args.redis_failure_mode),
                admin_listen=admin_listen,
                admin_required=admin_required,
                reload_interval=args.reload_interval,
                hold_slot_s=max(args.hold_seconds, 1),
            ),
            use_uvloop=not args.no_uvloop,
        )
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
