"""``tokenvoy eg-extension``: Envoy Gateway's extension server (gRPC ``envoygateway.extension.EnvoyGatewayExtension``).

EG calls ``PostTranslateModify`` after each translation with every listener, route configuration, cluster
and secret; the answer is the xDS EG serves to its Envoys (``tokenvoy.egext.hook``). The other hooks
(PostRouteModify, PostClusterModify, ..., which EG calls only for resources that use an extension's own
filters or backends) answer their resource unchanged.

The method is served on raw bytes (no decoding into messages by gRPC), so resources the hook leaves alone
go back exactly as EG sent them.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tokenvoy.config.loader import ConfigError
from tokenvoy.egext.config import DEFAULT_EXTPROC_SOCKET, ExtensionConfig, load_extension_config
from tokenvoy.egext.hook import HookError, post_translate_modify_bytes, resource_unchanged
from tokenvoy.grpcserver import configure_logging, parse_listen
from tokenvoy.pb.envoygateway.extension import service_pb2

log = logging.getLogger(__name__)

SERVICE = service_pb2.DESCRIPTOR.services_by_name["EnvoyGatewayExtension"].full_name
POST_TRANSLATE_MODIFY = "PostTranslateModify"
POST_TRANSLATE_MODIFY_PATH = f"/{SERVICE}/{POST_TRANSLATE_MODIFY}"
OTHER_HOOKS = tuple(
    name
    for name in service_pb2.DESCRIPTOR.services_by_name["EnvoyGatewayExtension"].methods_by_name
    if name != POST_TRANSLATE_MODIFY
)
DEFAULT_LISTEN = "0.0.0.0:5005"
# EG sends every resource of a Gateway's xDS in one message: far beyond gRPC's 4 MiB default for a large one.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024


class ExtensionServicer:
    """Holds the loaded config; one method, on bytes."""

    def __init__(self, config: ExtensionConfig) -> None:
        self.config = config

    def post_translate_modify(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            return post_translate_modify_bytes(request, self.config)
        except HookError as error:
            log.warning("PostTranslateModify refused: %s", error.message)
            context.abort(error.code, error.message)
            raise  # not reached: abort raises

    def unchanged(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            return resource_unchanged(request)
        except HookError as error:
            context.abort(error.code, error.message)
            raise

    def handler(self) -> grpc.GenericRpcHandler:
        """Every hook of the service, bytes in and bytes out; only PostTranslateModify changes anything."""
        methods = {name: grpc.unary_unary_rpc_method_handler(self.unchanged) for name in OTHER_HOOKS}
        methods[POST_TRANSLATE_MODIFY] = grpc.unary_unary_rpc_method_handler(self.post_translate_modify)
        return grpc.method_handlers_generic_handler(SERVICE, methods)


def _options() -> list[tuple[str, int]]:
    return [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]


@dataclass
class RunningServer:
    """An in-process extension server (tests, other tools): ``target`` for a channel, ``stop()`` when done."""

    server: grpc.Server
    port: int
    host: str = "127.0.0.1"

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self, grace: float | None = None) -> None:
        self.server.stop(grace).wait()


def start_in_process(config: ExtensionConfig, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Serve the hook on ``host:port`` (0: a free port) in threads of this process; returns at once."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=_options())
    server.add_generic_rpc_handlers((ExtensionServicer(config).handler(),))
    bound = server.add_insecure_port(f"{host}:{port}")
    server.start()
    return RunningServer(server, bound, host)


def serve(config: ExtensionConfig, listen: str, tls: tuple[bytes, bytes] | None = None) -> None:
    """Serve until SIGTERM/SIGINT, with gRPC health; ``tls`` = (certificate chain, private key) PEM."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=_options())
    server.add_generic_rpc_handlers((ExtensionServicer(config).handler(),))
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    target = parse_listen(listen)
    if tls is None:
        server.add_insecure_port(target)
    else:
        server.add_secure_port(target, grpc.ssl_server_credentials([(tls[1], tls[0])]))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    routes = ", ".join(f"{config.namespace}/{route.name}" for route in config.config.routes) or "none"
    log.info("eg-extension listening on %s (%s; AI routes: %s)", listen, "TLS" if tls else "plaintext", routes)
    stop.wait()
    health_servicer.enter_graceful_shutdown()
    server.stop(5).wait()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tokenvoy eg-extension",
        description="Run the Envoy Gateway extension server: adds tokenvoy's ext_proc filters to EG's xDS "
        "(per-attempt translation and signing, cross-provider fallback). See docs/envoy-gateway.md.",
    )
    parser.add_argument(
        "--config",
        action="append",
        metavar="FILE",
        help="the gateway config (AIGatewayRoute YAML) the HTTPRoutes were rendered from; repeatable. "
        "Default: the embedded default config",
    )
    parser.add_argument("--listen", default=DEFAULT_LISTEN, help="HOST:PORT or unix:/path (default: %(default)s)")
    parser.add_argument("--namespace", help="namespace of the HTTPRoutes (default: the config's, else default)")
    parser.add_argument(
        "--extproc-socket",
        default=DEFAULT_EXTPROC_SOCKET,
        metavar="PATH",
        help="where the extproc sidecar listens in each Envoy pod (default: %(default)s)",
    )
    parser.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this certificate chain (PEM)")
    parser.add_argument("--tls-key", metavar="FILE", help="and this private key (PEM)")
    parser.add_argument("--log-level", default="info", help="debug, info, warning or error (default: info)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level)
    if bool(args.tls_cert) != bool(args.tls_key):
        print("tokenvoy eg-extension: give both --tls-cert and --tls-key, or neither", file=sys.stderr)
        return 2
    try:
        config = load_extension_config(
            list(args.config or ()), namespace=args.namespace, extproc_socket=args.extproc_socket
        )
    except ConfigError as exc:
        print(f"tokenvoy eg-extension: invalid config:\n{exc}", file=sys.stderr)
        return 2
    tls = None
    if args.tls_cert:
        try:
            with open(args.tls_cert, "rb") as cert, open(args.tls_key, "rb") as key:
                tls = (cert.read(), key.read())
        except OSError as exc:
            print(f"tokenvoy eg-extension: cannot read TLS files: {exc}", file=sys.stderr)
            return 2
    try:
        serve(config, args.listen, tls)
    except ValueError as exc:
        print(f"tokenvoy eg-extension: {exc}", file=sys.stderr)
        return 2
    return 0
