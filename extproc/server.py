"""The ext_proc gRPC server (``tokenvoy extproc``): one bidirectional stream per filter per request."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Sequence

import grpc
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from tokenvoy.admin import AdminServer
from tokenvoy.config.defaults import default_config_yaml
from tokenvoy.config.loader import ConfigError, load_config, load_text
from tokenvoy.config.model import GatewayConfig
from tokenvoy.extproc.costs import CostConfigError
from tokenvoy.extproc.metrics import PrometheusObserver
from tokenvoy.extproc.observe import NoObserver, RequestObserver
from tokenvoy.extproc.registry import RequestRegistry
from tokenvoy.extproc.router import RouterStream
from tokenvoy.extproc.runtime import Runtime, RuntimeConfigError
from tokenvoy.extproc.tracing import Tracing
from tokenvoy.extproc.upstream import UpstreamStream
from tokenvoy.grpcserver import add_health, configure_logging, grpc_target, serve_until_signalled
from tokenvoy.pb.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from tokenvoy.pb.envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc

log = logging.getLogger("tokenvoy.extproc")

ROLE_METADATA_KEY = "x-tokenvoy-role"
SERVICE_NAME = "envoy.service.ext_proc.v3.ExternalProcessor"
DEFAULT_ADMIN_LISTEN = "127.0.0.1:1064"


class ExternalProcessor(ep_grpc.ExternalProcessorServicer):
    def __init__(
        self, runtime: Runtime, observer: RequestObserver | None = None, tracing: Tracing | None = None
    ) -> None:
        self.runtime = runtime
        self.registry = RequestRegistry()
        self.observer = observer or NoObserver()
        self.tracing = tracing  # None: tracing off (no OTEL_* exporter configured)

    async def Process(
        self, request_iterator: AsyncIterator[ep.ProcessingRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ep.ProcessingResponse]:
        role = "router"
        for key, value in context.invocation_metadata() or ():
            if key == ROLE_METADATA_KEY:
                role = value
        stream = (
            UpstreamStream(self.runtime, self.registry)
            if role == "upstream"
            else RouterStream(self.runtime, self.registry, self.observer, self.tracing)
        )
        try:
            async for message in request_iterator:
                yield stream.handle(message)
                if stream.done:
                    # Ending the call ourselves saves Envoy's reset of it and gRPC's cancellation path.
                    break
        finally:
            stream.close()


def build_runtime(config: GatewayConfig) -> Runtime:
    try:
        return Runtime(config)
    except (RuntimeConfigError, CostConfigError) as exc:
        raise ConfigError([str(exc)]) from None


def metrics_registry() -> CollectorRegistry:
    """A registry of our own (not the global one), with the usual process and runtime collectors."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


async def serve(runtime: Runtime, listen: str, admin_listen: str | None = DEFAULT_ADMIN_LISTEN) -> None:
    """Serve ext_proc on ``listen`` and, unless ``admin_listen`` is None, /metrics and /healthz on it."""
    config = runtime.config
    registry = metrics_registry()
    observer = PrometheusObserver(config.metrics, config.pricing, registry)
    admin = None
    if admin_listen is not None:
        admin = AdminServer(registry, admin_listen, name="extproc")
        await admin.start()  # before gRPC: a busy port fails the start, not the first scrape
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    tracing = Tracing.from_env(session_id_header=config.tracing.session_id_header)
    if tracing is not None:
        log.info("extproc tracing on: OpenInference spans exported per the OTEL_* variables")
    ep_grpc.add_ExternalProcessorServicer_to_server(ExternalProcessor(runtime, observer, tracing), server)
    health_servicer = add_health(server, [SERVICE_NAME])
    try:
        server.add_insecure_port(grpc_target(listen))
        routes = ", ".join(route.name for route in config.routes)
        log.info("extproc listening on %s (routes: %s; backends: %s)", listen, routes, ", ".join(config.backends))
        if admin is not None:
            log.info("extproc metrics on http://%s:%d/metrics", admin.host, admin.port)
        await serve_until_signalled(server, health_servicer)
    finally:
        if admin is not None:
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
    parser.add_argument("--log-level", default="info", help="debug, info, warning or error (default: info)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level)
    try:
        config = load_config(args.config) if args.config else load_text(default_config_yaml(), "<default>")
        runtime = build_runtime(config)
    except ConfigError as exc:
        print(f"tokenvoy extproc: invalid config:\n{exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(runtime, args.listen, None if args.no_admin else args.admin_listen))
    except ValueError as exc:
        print(f"tokenvoy extproc: {exc}", file=sys.stderr)
        return 2
    return 0
