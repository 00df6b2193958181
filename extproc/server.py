"""The ext_proc gRPC server (``tokenvoy extproc``): one bidirectional stream per filter per request.

The gateway config files are re-read on SIGHUP and, with ``--watch-interval``, when they change. A reload
swaps the :class:`Runtime` for new requests only: a request in flight keeps the one it started with for
all its streams (its router stream and every upstream attempt), see docs/reload.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator, Mapping, Sequence

import grpc
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from tokenvoy.admin import start_admin
from tokenvoy.config.defaults import default_config_yaml
from tokenvoy.config.loader import ConfigError, load_config, load_text
from tokenvoy.config.model import GatewayConfig
from tokenvoy.contract import EXTPROC_MAX_MESSAGE_BYTES, ROLE_METADATA_KEY, ROUTER_ROLE, UPSTREAM_ROLE
from tokenvoy.extproc.ecds import ClientKeysDiscovery
from tokenvoy.extproc.metrics import PrometheusObserver, StreamCounter
from tokenvoy.extproc.observe import NoObserver, RequestObserver
from tokenvoy.extproc.registry import RequestRegistry
from tokenvoy.extproc.router import RouterStream
from tokenvoy.extproc.runtime import Runtime, build_runtime
from tokenvoy.extproc.tracing import Tracing
from tokenvoy.extproc.upstream import UpstreamStream
from tokenvoy.extproc.upstream_carried import CarriedUpstreamStream
from tokenvoy.filewatch import DEFAULT_POLL_INTERVAL_S, FileWatcher, files_digest, log_watch_error
from tokenvoy.grpcserver import (
    GrpcService,
    config_health_service,
    configure_logging,
    serve_until_signalled,
    start_service,
)
from tokenvoy.grpcserver import run as run_service
from tokenvoy.pb.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from tokenvoy.pb.envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc

__all__ = [
    "ConfigReloader",
    "ExternalProcessor",
    "build_runtime",
    "config_digest",
    "config_health_service",
    "load_config_files",
    "main",
    "serve",
]

log = logging.getLogger("tokenvoy.extproc")

SERVICE_NAME = "envoy.service.ext_proc.v3.ExternalProcessor"
DEFAULT_ADMIN_LISTEN = "127.0.0.1:1064"


# grpcio refuses messages over 4 MiB by default; Envoy sends whole bodies up to its buffer limit.
GRPC_OPTIONS = [
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", EXTPROC_MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", EXTPROC_MAX_MESSAGE_BYTES),
]

_EOF = grpc.aio.EOF

# Configs kept after a reload for requests Envoy still routes by the config before (one file move away).
RETAINED_RUNTIMES = 3


class ExternalProcessor(ep_grpc.ExternalProcessorServicer):
    def __init__(
        self,
        runtime: Runtime,
        observer: RequestObserver | None = None,
        tracing: Tracing | None = None,
        translate_in_router: bool = False,
        direct_routes: bool = False,
        stateless: bool = False,
    ) -> None:
        self.runtime = runtime
        self.translate_in_router = translate_in_router  # no upstream filter (Envoy Gateway's native ext_proc)
        self.direct_routes = direct_routes  # Envoy has direct routes (tokenvoy/config/direct.py)
        # One of several extproc processes: a request's streams share nothing here (extproc/carried.py).
        self.stateless = stateless
        self.streams: StreamCounter | None = None  # streams opened per role (serve() sets it)
        self.previous: tuple[Runtime, ...] = ()  # the configs before the last reloads, newest first
        self.registry = RequestRegistry()
        self.observer = observer or NoObserver()
        self.tracing = tracing  # None: tracing off (no OTEL_* exporter configured)

    def _open(self, context: grpc.aio.ServicerContext) -> RouterStream | UpstreamStream | CarriedUpstreamStream:
        """The stream handler for this call's role (Envoy's initial metadata), on the config current now."""
        role = ROUTER_ROLE
        for key, value in context.invocation_metadata() or ():
            if key == ROLE_METADATA_KEY:
                role = value
        runtime = self.runtime  # this stream's config, whatever a reload does meanwhile
        if self.streams is not None:
            self.streams.opened(role)
        if role == UPSTREAM_ROLE:
            if self.stateless:
                return CarriedUpstreamStream(runtime, self.previous)
            return UpstreamStream(runtime, self.registry, self.previous)
        return RouterStream(
            runtime,
            self.registry.bound(runtime),
            self.observer,
            self.tracing,
            self.translate_in_router,
            self.direct_routes,
            self.stateless,
            self.previous,
        )

    async def Process(
        self, request_iterator: AsyncIterator[ep.ProcessingRequest], context: grpc.aio.ServicerContext
    ) -> None:
        """One ext_proc stream, read and written explicitly: cheaper per message in grpc.aio than an async
        generator servicer (no generator frame and no extra task hop per message; bench/README.md)."""
        stream = self._open(context)
        read, write = context.read, context.write
        try:
            while (message := await read()) is not _EOF:
                await write(stream.handle(message))
                if stream.done:
                    # Ending the call ourselves saves Envoy's reset of it and gRPC's cancellation path.
                    break
        finally:
            stream.close()

    def swap(self, runtime: Runtime) -> list[Runtime]:
        """New streams get ``runtime``; returns the configs no longer kept (their credentials can stop)."""
        kept = (self.runtime, *self.previous)
        self.runtime = runtime
        self.previous = kept[:RETAINED_RUNTIMES]
        return list(kept[RETAINED_RUNTIMES:])


DEFAULT_WATCH_INTERVAL_S = DEFAULT_POLL_INTERVAL_S


def config_digest(paths: Sequence[str]) -> str:
    """Names one version of the config files: ``tokenvoy run`` waits for extproc to serve the same one."""
    return files_digest(paths)


def load_config_files(paths: Sequence[str]) -> tuple[GatewayConfig, str]:
    """The config and the digest of exactly the bytes it came from (read again if a file changed meanwhile)."""
    return FileWatcher(paths).read_stable(load_config)


def restart_only_changes(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """What a reload cannot apply to the running extproc: its metrics and tracing are set up at start."""
    return [
        f"restart needed: TokenvoyConfig {what} changed; the rest of the config is applied"
        for what, before, after in (
            ("metrics", old.metrics, new.metrics),
            ("tracing", old.tracing, new.tracing),
        )
        if before != after
    ]


class ConfigReloader:
    """Re-reads the gateway config files on SIGHUP and, every ``interval`` seconds (0: never), when one
    changed. A config that fails to load is refused (one log line per problem) and the previous one
    keeps serving; a good one is swapped in for new requests."""

    def __init__(
        self,
        paths: Sequence[str],
        processor: ExternalProcessor,
        service: GrpcService,
        interval: float = DEFAULT_WATCH_INTERVAL_S,
    ) -> None:
        self.watcher = FileWatcher(paths)
        self.processor = processor
        self.service = service
        self.interval = interval
        self._lock = asyncio.Lock()

    @property
    def digest(self) -> str:
        return self.service.config_version

    def _load(self) -> tuple[Runtime, str]:
        config, digest = self.watcher.read_stable(load_config)
        return build_runtime(config), digest

    async def reload(self, reason: str) -> bool:
        async with self._lock:
            self.watcher.mark()
            try:
                runtime, digest = await asyncio.to_thread(self._load)
            except ConfigError as exc:
                for problem in exc.problems:
                    log.error("extproc config reload refused (%s): %s", reason, problem)
                log.error("extproc keeps serving the previous config (%s)", self.digest)
                return False
            if digest == self.digest:
                return True  # same bytes (a touch, a save without edits)
            await asyncio.to_thread(runtime.start_credentials)
            previous = self.processor.runtime.config
            for retired in self.processor.swap(runtime):
                retired.stop_credentials()
            for note in restart_only_changes(previous, runtime.config):
                log.warning("extproc %s", note)
            await self.service.serve_config_version(digest)
            log.info(
                "extproc config reloaded (%s): version %s, routes: %s; requests in flight keep the previous config",
                reason,
                digest,
                ", ".join(route.name for route in runtime.config.routes),
            )
            return True

    async def run(self) -> None:
        """Poll forever (cancel to stop); an unexpected error is logged and polling goes on."""
        await self.watcher.poll(
            self.interval, lambda _changed: self.reload("a config file changed"), log_watch_error(log, "extproc")
        )

    def on_sighup(self) -> None:
        asyncio.get_running_loop().create_task(self.reload("SIGHUP"))


def metrics_registry() -> CollectorRegistry:
    """A registry of our own (not the global one), with the usual process and runtime collectors."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_registry(environ: Mapping[str, str] | None = None) -> CollectorRegistry | None:
    """With ``PROMETHEUS_MULTIPROC_DIR`` set (``tokenvoy run --extproc-workers``), what /metrics serves: every
    extproc process's counters and histograms, summed from the files prometheus-client writes there (the
    process and runtime collectors of one process would describe only that one, so they are left out)."""
    environ = os.environ if environ is None else environ
    if not environ.get(MULTIPROCESS_ENV):
        return None
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=environ[MULTIPROCESS_ENV])
    return registry


def _sighup_without_files() -> None:
    log.warning("extproc: SIGHUP ignored, the embedded default config has no file to reload")


async def serve(
    runtime: Runtime,
    listen: str,
    admin_listen: str | None = DEFAULT_ADMIN_LISTEN,
    config_paths: Sequence[str] = (),
    watch_interval: float = 0.0,
    digest: str = "",
    translate_in_router: bool = False,
    direct_routes: bool = False,
    stateless: bool = False,
    worker: str = "0",
) -> None:
    """Serve ext_proc on ``listen`` and, unless ``admin_listen`` is None, /metrics and /healthz on it.
    With ``config_paths`` (the files ``runtime`` came from, ``digest`` their version), SIGHUP reloads them,
    and so does a change seen every ``watch_interval`` seconds (0: SIGHUP only)."""
    config = runtime.config
    registry = metrics_registry()
    observer = PrometheusObserver(config.metrics, registry)
    shared = multiprocess_registry()
    # every extproc process binds the one metrics port (SO_REUSEPORT): whichever answers shows them all
    admin = await start_admin(shared or registry, admin_listen, "extproc", reuse_port=shared is not None)
    tracing = Tracing.from_env(session_id_header=config.tracing.session_id_header)
    if tracing is not None:
        log.info("extproc tracing on: OpenInference spans exported per the OTEL_* variables")
    processor = ExternalProcessor(runtime, observer, tracing, translate_in_router, direct_routes, stateless)
    processor.streams = StreamCounter(registry, worker)

    def register(server: grpc.aio.Server) -> list[str]:
        ep_grpc.add_ExternalProcessorServicer_to_server(processor, server)
        keys = ClientKeysDiscovery(lambda: processor.runtime.client_keys_config)
        server.add_generic_rpc_handlers((keys.handler(),))
        return [SERVICE_NAME]

    service: GrpcService | None = None
    try:
        await asyncio.to_thread(runtime.start_credentials)  # cloud tokens: first fetch before serving (bounded)
        service = await start_service("extproc", listen, register, options=GRPC_OPTIONS, admin=admin)
        reload = _sighup_without_files
        if config_paths:
            reloader = ConfigReloader(config_paths, processor, service, watch_interval)
            await service.serve_config_version(digest)
            reload = reloader.on_sighup
            if watch_interval > 0:
                service.spawn(reloader.run())
        routes = ", ".join(route.name for route in config.routes)
        log.info("extproc listening on %s (routes: %s; backends: %s)", listen, routes, ", ".join(config.backends))
        if admin is not None:
            log.info("extproc metrics on http://%s:%d/metrics", admin.host, admin.port)
        await serve_until_signalled(service, reload=reload)
    finally:
        for kept in (processor.runtime, *processor.previous):
            kept.stop_credentials()
        if service is None and admin is not None:
            await admin.close()
        if tracing is not None:
            await asyncio.to_thread(tracing.shutdown)  # flush the spans still batched


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tokenvoy extproc",
        description="Run the Envoy ext_proc server alone: routing, translation and token usage metadata.",
    )
    parser.add_argument(
        "--config",
        action="append",
        metavar="FILE",
        help="gateway config (Envoy AI Gateway YAML); repeatable. Default: the embedded default config",
    )
    parser.add_argument(
        "--listen",
        default="127.0.0.1:1063",
        help="HOST:PORT or unix:/path/to.sock to serve gRPC on (default: %(default)s)",
    )
    parser.add_argument(
        "--admin-listen",
        default=DEFAULT_ADMIN_LISTEN,
        metavar="HOST:PORT",
        help="where to serve Prometheus /metrics and /healthz over HTTP (default: %(default)s)",
    )
    parser.add_argument("--no-admin", action="store_true", help="serve no admin port (no /metrics, no /healthz)")
    parser.add_argument(
        "--watch-interval",
        type=float,
        default=DEFAULT_WATCH_INTERVAL_S,
        metavar="SECONDS",
        help="check the --config files for changes this often and reload them (0: only on SIGHUP; "
        "default: %(default)s)",
    )
    parser.add_argument(
        "--translate-in-router",
        action="store_true",
        help="translate and sign in the router-level ext_proc stream, for Envoy Gateway's native EnvoyExtensionPolicy "
        "(no upstream filter, so no translation per attempt; see docs/envoy-gateway.md)",
    )
    parser.add_argument(
        "--direct-routes",
        action="store_true",
        help="Envoy's config has direct routes (tokenvoy run renders them): a rule with one backend and a static "
        "API key is edited in the router stream and skips the upstream filter (docs/architecture.md)",
    )
    parser.add_argument(
        "--stateless",
        action="store_true",
        help="keep no request state between the streams of a request: with several extproc processes behind one "
        "Envoy (tokenvoy run --extproc-workers N) they may reach different ones, so the state travels in Envoy's "
        "dynamic metadata; Envoy's config must be rendered for it",
    )
    parser.add_argument(
        "--worker",
        default="0",
        metavar="NAME",
        help="this process's name in the tokenvoy_extproc_streams metric (tokenvoy run --extproc-workers: its "
        "index; default: %(default)s)",
    )
    parser.add_argument(
        "--no-uvloop",
        action="store_true",
        help="run on asyncio's own event loop instead of uvloop's (uvloop costs about a fifth less CPU per call)",
    )
    parser.add_argument("--log-level", default="info", help="debug, info, warning or error (default: info)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level)
    paths = [os.path.abspath(p) for p in args.config or ()]  # not resolve(): a ConfigMap swaps a symlink
    try:
        config, digest = load_config_files(paths) if paths else (load_text(default_config_yaml(), "<default>"), "")
        runtime = build_runtime(config)
    except ConfigError as exc:
        print(f"tokenvoy extproc: invalid config:\n{exc}", file=sys.stderr)
        return 2
    try:
        admin_listen = None if args.no_admin else args.admin_listen
        run_service(
            serve(
                runtime,
                args.listen,
                admin_listen,
                paths,
                args.watch_interval,
                digest,
                args.translate_in_router,
                args.direct_routes,
                args.stateless,
                args.worker,
            ),
            use_uvloop=not args.no_uvloop,
        )
    except (OSError, ValueError) as exc:
        print(f"tokenvoy extproc: {exc}", file=sys.stderr)
        return 2
    return 0
