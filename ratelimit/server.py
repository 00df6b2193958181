"""``tokenvoy ratelimit``: run the Rate Limit Service as a gRPC server.

Serves ``envoy.service.ratelimit.v3.RateLimitService`` plus the standard gRPC health service (SERVING
while up, NOT_SERVING during shutdown) and server reflection (so ``grpcurl`` works without protos), and
an admin HTTP port with ``/metrics``, ``/healthz`` and ``/healthcheck``. Counters are in memory or in Redis
(``--redis-url``). The config comes from files (``--config``: reloaded when they change and on SIGHUP) or
from an xDS management server (``--xds-server``: Envoy Gateway's config server, as envoyproxy/ratelimit
gets it there; ``--from-env`` reads envoyproxy/ratelimit's environment instead of flags). SIGTERM/SIGINT
stop accepting new calls, let in-flight ones finish within a grace period, and exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import grpc
import orjson

from tokenvoy.admin import AdminServer, start_admin
from tokenvoy.grpcserver import DEFAULT_GRACE_S, GrpcService, parse_listen, serve_until_signalled, start_service
from tokenvoy.grpcserver import run as run_service

from .backend import CounterBackend
from .config import RateLimitConfig, RateLimitConfigError, tree_document
from .limiter import DEFAULT_HOLD_SLOT_S
from .memory_backend import MemoryBackend
from .metrics import RateLimitMetrics
from .redis_backend import DEFAULT_PREFIX, DEFAULT_TIMEOUT_S, RedisBackend, redact_url
from .reload import DEFAULT_POLL_INTERVAL_S, ConfigWatcher, describe_config, read_config_files
from .service import RLS_SERVICE_NAME, FailureMode, RateLimitService, RateLimitServicer
from .service import register as register_rls
from .xds_client import XdsClientSettings, XdsConfigClient, XdsTls
from .xds_env import EnvSettingsError, argv_from_env, describe_argv, uses_xds_env

__all__ = [
    "DEFAULT_GRACE_S",
    "DEFAULT_LISTEN",
    "RunningServer",
    "ServerTls",
    "build_parser",
    "main",
    "parse_args",
    "read_config_files",
    "serve",
    "start_server",
]

logger = logging.getLogger("tokenvoy.ratelimit")

DEFAULT_LISTEN = "127.0.0.1:8081"
DEFAULT_ADMIN_LISTEN = "127.0.0.1:1065"
ADMIN_OFF = "off"
EG_NODE_ID = "envoy-ratelimit"  # the node Envoy Gateway's ratelimit config server serves


@dataclass
class RunningServer:
    """A started server: ``port`` is the bound TCP port (0 for a unix socket)."""

    shell: GrpcService
    service: RateLimitService
    backend: CounterBackend
    address: str
    metrics: RateLimitMetrics
    watcher: ConfigWatcher | None = None
    xds: XdsConfigClient | None = None
    metrics_port: AdminServer | None = None  # a second port with /metrics (envoyproxy/ratelimit's Prometheus)

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
        if self.metrics_port is not None:
            await self.metrics_port.close()
        await self.backend.close()


@dataclass(frozen=True)
class ServerTls:
    """TLS of the gRPC port (Envoy Gateway's Envoy reaches its ratelimit over TLS); ``client_ca``: require
    and verify client certificates signed by it (mutual TLS)."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None

    def credentials(self) -> grpc.ServerCredentials:
        """Read the files now: a missing one is a ``ValueError`` naming it, before anything is served."""
        ca = _read_file(self.client_ca_file) if self.client_ca_file else None
        return grpc.ssl_server_credentials(
            [(_read_file(self.key_file), _read_file(self.cert_file))],
            root_certificates=ca,
            require_client_auth=ca is not None,
        )


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None


async def start_server(
    config: RateLimitConfig | None,
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
    xds: XdsConfigClient | None = None,
    xds_task: asyncio.Task[None] | None = None,
    tls: ServerTls | None = None,
    metrics_listen: str | None = None,
    healthy_with_config: bool = False,
) -> RunningServer:
    """Build and start the gRPC server on ``listen`` (``HOST:PORT``, port 0 picks a free one).

    ``admin_listen`` (``HOST:PORT``) also serves ``/metrics``, ``/healthz``, ``/healthcheck`` and ``/rlconfig``
    (the loaded tree, :func:`~ratelimit.config.tree_document`, as envoyproxy/ratelimit's debug page); if it cannot
    be bound, that is an ``OSError`` when ``admin_required``, else a warning (used for the CLI's default
    address, so that a second instance on one machine still starts). ``metrics_listen`` is a second port
    with the same paths. ``watcher``, when given, starts polling the config files and applies reloads to
    this server's service; ``xds``, when given, is the config client whose updates the service gets (its
    :meth:`~XdsConfigClient.run` is started here, or adopted from ``xds_task``). ``config=None``: no config yet,
    calls are refused until the first one (see :mod:`ratelimit.service`). ``healthy_with_config``:
    ``/healthcheck`` answers 500 until a config with at least one domain is loaded.
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

    def not_ready() -> str | None:
        if not service.loaded:
            return "no rate limit configuration loaded yet"
        if not service.config.domains:
            return "the rate limit configuration loaded has no domain"
        return None

    parse_listen(listen)  # a malformed address is a ValueError before the admin port is bound
    credentials = tls.credentials() if tls is not None else None
    admin = await start_admin(metrics.registry, admin_listen, "ratelimit", required=admin_required)
    metrics_port = None
    try:
        metrics_port = await start_admin(metrics.registry, metrics_listen, "ratelimit metrics")
        shell = await start_service("ratelimit", listen, register, admin=admin, credentials=credentials)
    except BaseException:
        if metrics_port is not None:
            await metrics_port.close()
        if admin is not None:
            await admin.close()
        raise

    def rlconfig() -> bytes:
        document = {
            "loaded": service.loaded,
            "version": xds.version if xds is not None else None,
            "domains": tree_document(service.config),
        }
        return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"

    for port in (admin, metrics_port):
        if port is not None:
            port.pages["/rlconfig"] = rlconfig
            if healthy_with_config:
                port.not_ready = not_ready
    running = RunningServer(shell, service, backend, listen, metrics, watcher, xds, metrics_port)
    if watcher is not None:
        watcher.apply = service.set_config
        if watcher.interval > 0:
            shell.spawn(watcher.run())
    if xds is not None:
        xds.apply = service.set_config
        if xds.config is not None and xds.config is not service.config:
            service.set_config(xds.config)  # arrived while the server was starting
        if xds_task is None:
            shell.spawn(xds.run())
        else:
            shell.tasks.append(xds_task)
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
    xds: XdsClientSettings | None = None,
    xds_wait_for_config: bool = False,
    tls: ServerTls | None = None,
    metrics_listen: str | None = None,
    healthy_with_config: bool = False,
) -> None:
    """Load the config, serve until SIGTERM/SIGINT (or ``stop`` is set), then shut down gracefully.

    The config comes from ``config_paths`` or from the xDS server ``xds`` (exactly one). Files: SIGHUP
    reloads them at once; ``reload_interval`` (0 = never) polls them for changes. xDS: served at once with
    no config (calls refused, Envoy's failure mode decides) until the first one is loaded, or, with
    ``xds_wait_for_config``, only once it is; every later update applies live.

    ``redis_url`` selects the Redis backend (unless ``backend`` is given); an unreachable Redis at startup
    is not fatal: the service starts in its failure mode and reconnects in the background.

    Raises :class:`RateLimitConfigError` for bad configuration and ``OSError``/``ValueError`` when an
    address cannot be used, before anything is served.
    """
    if bool(config_paths) == (xds is not None):
        raise ValueError(
            "give exactly one config source: --config FILE or --xds-server HOST:PORT"
            + (", not both" if xds is not None else "")
        )
    metrics = RateLimitMetrics(process_metrics=True)
    watcher = None
    client = None
    xds_task = None
    config: RateLimitConfig | None = None
    if xds is not None:
        client = XdsConfigClient(xds, metrics=metrics)
        if xds.tls is None:
            logger.warning(
                "the xDS config stream to %s is plaintext: whoever can reach it can change the limits "
                "(give --xds-ca, --xds-cert and --xds-key for mutual TLS, as Envoy Gateway's config server needs)",
                xds.server,
            )
        if xds_wait_for_config:
            logger.info("waiting for the first rate limit config from %s as node %r", xds.server, xds.node_id)
            xds_task = asyncio.get_running_loop().create_task(client.run())
            first = asyncio.get_running_loop().create_task(client.first_config.wait())
            waiters: set[asyncio.Future[object]] = {first, xds_task}
            if stop is not None:
                waiters.add(asyncio.get_running_loop().create_task(stop.wait()))
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if not client.first_config.is_set():
                for waiter in waiters:
                    waiter.cancel()
                await asyncio.gather(*waiters, return_exceptions=True)
                return
            config = client.config
    else:
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
            xds=client,
            xds_task=xds_task,
            tls=tls,
            metrics_listen=metrics_listen,
            healthy_with_config=healthy_with_config,
        )
    except BaseException:
        if xds_task is not None:
            xds_task.cancel()
            await asyncio.gather(xds_task, return_exceptions=True)
        if redis_backend is not None:
            await redis_backend.close()
        raise
    shown = listen if running.port == 0 or listen.startswith("unix:") else _with_port(listen, running.port)
    admin = f"http://{_with_port(admin_listen or '', running.admin.port)}/metrics" if running.admin else "off"
    if running.metrics_port is not None:
        admin += f", http://{_with_port(metrics_listen or '', running.metrics_port.port)}/metrics"
    if xds is not None and config is None:
        domains = f"none yet (from the xDS server {xds.server} as node {xds.node_id!r})"
    else:
        domains = describe_config(running.service.config)
    logger.info(
        "ratelimit serving on %s%s, domains: %s; counters: %s; metrics: %s",
        shown,
        " (TLS)" if tls is not None else "",
        domains,
        _describe_backend(running.backend, failure_mode),
        admin,
    )
    if redis_backend is not None and not redis_backend.available:
        running.service.start_outage(f"redis at {redis_backend.url} unreachable at startup: {redis_backend.last_error}")

    def reload() -> None:
        if watcher is not None:
            watcher.reload("SIGHUP")
        else:
            logger.info("SIGHUP: the rate limit config comes from the xDS server, nothing to reload")

    try:
        await serve_until_signalled(running.shell, grace, reload=reload, stop=stop)
    finally:
        await running.backend.close()
        if running.metrics_port is not None:
            await running.metrics_port.close()


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
    source = parser.add_argument_group(
        "config source", "exactly one: --config files, or an xDS server (--xds-server, or --from-env)"
    )
    source.add_argument(
        "--config",
        action="append",
        metavar="FILE",
        help="rate limit YAML file; repeat for several domains (a domain may appear in only one file)",
    )
    source.add_argument(
        "--xds-server",
        metavar="HOST:PORT",
        help=(
            "load the config from this xDS management server over ADS (State of the World), as envoyproxy/"
            "ratelimit does under Envoy Gateway (envoy-gateway:18001 there); updates apply live, a config "
            "that does not load is NACKed and the previous one stays. Until the first config arrives, calls "
            "are answered with an error, so Envoy's failure_mode_deny decides (unless --xds-wait-for-config)"
        ),
    )
    source.add_argument(
        "--from-env",
        action="store_true",
        help=(
            "take the settings from envoyproxy/ratelimit's environment (CONFIG_TYPE=GRPC_XDS_SOTW, "
            "CONFIG_GRPC_XDS_*, GRPC_*, REDIS_*, PORT, USE_PROMETHEUS, ...) as Envoy Gateway's ratelimit "
            "Deployment sets it; also the default when CONFIG_TYPE=GRPC_XDS_SOTW is set and neither "
            "--config nor --xds-server is given. Flags given as well override the environment"
        ),
    )
    xds = parser.add_argument_group("xDS client (with --xds-server)")
    xds.add_argument(
        "--xds-node-id",
        default=EG_NODE_ID,
        metavar="ID",
        help=f"node id to subscribe as; EG's config server serves node {EG_NODE_ID!r} (default: {EG_NODE_ID})",
    )
    xds.add_argument(
        "--xds-node-metadata", action="append", default=[], metavar="KEY=VALUE", help="node metadata; repeatable"
    )
    xds.add_argument(
        "--xds-header", action="append", default=[], metavar="NAME:VALUE", help="gRPC metadata on the stream"
    )
    xds.add_argument("--xds-ca", metavar="FILE", help="CA that signed the server's certificate (implies TLS)")
    xds.add_argument("--xds-cert", metavar="FILE", help="our client certificate, for mutual TLS (with --xds-key)")
    xds.add_argument("--xds-key", metavar="FILE", help="the key of --xds-cert")
    xds.add_argument(
        "--xds-server-name",
        metavar="SAN",
        help="name to check the server's certificate against instead of the address's host",
    )
    xds.add_argument(
        "--xds-tls", action="store_true", help="TLS even without --xds-ca (the system's CAs verify the server)"
    )
    xds.add_argument(
        "--xds-backoff-initial",
        type=_positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help="first reconnect delay, doubled per failure, jittered by half (default: 10, as envoyproxy/ratelimit)",
    )
    xds.add_argument(
        "--xds-backoff-max", type=_positive_seconds, default=60.0, metavar="SECONDS", help="longest delay (default: 60)"
    )
    xds.add_argument(
        "--xds-max-message-bytes", type=int, default=None, metavar="BYTES", help="largest config message accepted"
    )
    xds.add_argument(
        "--xds-wait-for-config",
        action="store_true",
        help="serve nothing (no gRPC, no admin port) until the first config is loaded",
    )
    parser.add_argument(
        "--healthy-with-config",
        action="store_true",
        help="/healthcheck answers 500 until a config with at least one domain is loaded",
    )
    parser.add_argument("--tls-cert", metavar="FILE", help="serve gRPC over TLS with this certificate (and --tls-key)")
    parser.add_argument("--tls-key", metavar="FILE", help="the key of --tls-cert")
    parser.add_argument(
        "--tls-client-ca", metavar="FILE", help="require client certificates signed by this CA (mutual TLS)"
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
            f"HTTP address for /metrics (Prometheus), /healthz and /healthcheck: HOST:PORT, or {ADMIN_OFF!r} "
            f"(default: {DEFAULT_ADMIN_LISTEN}; if that default is in use, the server runs without it and warns)"
        ),
    )
    parser.add_argument(
        "--metrics-listen",
        default=None,
        metavar="ADDR",
        help="a second HTTP address with the same paths (envoyproxy/ratelimit's PROMETHEUS_ADDR; default: none)",
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


def _xds_settings(args: argparse.Namespace, parser: argparse.ArgumentParser) -> XdsClientSettings | None:
    """The xDS client's settings from the flags (None without --xds-server); bad combinations exit 2."""
    if not args.xds_server:
        return None
    if bool(args.xds_cert) != bool(args.xds_key):
        parser.error("--xds-cert and --xds-key go together")
    use_tls = args.xds_tls or bool(args.xds_ca or args.xds_cert)
    if args.xds_server_name and not use_tls:
        parser.error("--xds-server-name needs TLS (--xds-ca, --xds-cert/--xds-key or --xds-tls)")
    metadata, headers = {}, {}
    for item in args.xds_node_metadata:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--xds-node-metadata {item!r}: expected KEY=VALUE")
        metadata[key] = value
    for item in args.xds_header:
        key, sep, value = item.partition(":")
        if not sep or not key:
            parser.error(f"--xds-header {item!r}: expected NAME:VALUE")
        headers[key.lower()] = value
    tls = XdsTls(args.xds_ca, args.xds_cert, args.xds_key, args.xds_server_name) if use_tls else None
    return XdsClientSettings(
        server=args.xds_server,
        node_id=args.xds_node_id,
        node_metadata=metadata,
        tls=tls,
        headers=headers,
        backoff_initial_s=args.xds_backoff_initial,
        backoff_max_s=max(args.xds_backoff_max, args.xds_backoff_initial),
        max_receive_bytes=args.xds_max_message_bytes,
    )


def _server_tls(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ServerTls | None:
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        parser.error("--tls-client-ca needs --tls-cert and --tls-key")
    return ServerTls(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None


def parse_args(argv: Sequence[str], env: Mapping[str, str]) -> tuple[argparse.Namespace, list[str] | None]:
    """The command line, with envoyproxy/ratelimit's environment in front of it when asked for (``--from-env``)
    or implied (``CONFIG_TYPE=GRPC_XDS_SOTW`` and no config source given). Returns the arguments the
    environment gave (None without it). Raises :class:`EnvSettingsError`; a bad command line exits 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    implied = not args.config and not args.xds_server and uses_xds_env(env)
    if not (args.from_env or implied):
        return args, None
    from_env = argv_from_env(env)
    return parser.parse_args([*from_env, *argv]), from_env


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 after a clean shutdown, 1 on startup errors)."""
    parser = build_parser()
    try:
        args, from_env = parse_args(sys.argv[1:] if argv is None else argv, os.environ)
    except EnvSettingsError as exc:
        print(f"tokenvoy ratelimit: envoyproxy/ratelimit environment: {exc}", file=sys.stderr)
        return 1
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.config and args.xds_server:
        parser.error("--config and --xds-server are two config sources: give exactly one")
    if not args.config and not args.xds_server:
        parser.error("no config source: give --config FILE, --xds-server HOST:PORT or --from-env")
    xds = _xds_settings(args, parser)
    tls = _server_tls(args, parser)
    if from_env is not None:
        logger.info("from envoyproxy/ratelimit's environment: %s", describe_argv(from_env, redact_url))
    if args.admin_listen is None:
        admin_listen: str | None = DEFAULT_ADMIN_LISTEN
        admin_required = False
    else:
        admin_listen = None if args.admin_listen == ADMIN_OFF else args.admin_listen
        admin_required = True
    try:
        run_service(
            serve(
                args.config or (),
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
                xds=xds,
                xds_wait_for_config=args.xds_wait_for_config,
                tls=tls,
                metrics_listen=args.metrics_listen,
                healthy_with_config=args.healthy_with_config,
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
