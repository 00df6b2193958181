"""The service shell of extproc and ratelimit: listen address, gRPC health and reflection, signals, admin port.

Both gRPC services start, report health, reload and drain the same way:

- ``--listen`` is ``HOST:PORT`` (``[V6]:PORT``) or ``unix:/path.sock`` (a socket left by a killed server is
  removed; any other file at that path is an error);
- the standard gRPC health service is SERVING for ``""`` and each service name while up, NOT_SERVING from
  the first SIGTERM on, and server reflection lets ``grpcurl`` work without protos;
- SIGTERM/SIGINT stop accepting new calls, let the ones in flight finish within a grace period, and the
  admin port's ``/healthz`` answers 503 meanwhile; SIGHUP calls the service's reload, if it has one;
- the event loop is uvloop's unless turned off (``--no-uvloop``), see :func:`run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tokenvoy.admin import AdminServer

__all__ = [
    "DEFAULT_GRACE_S",
    "GrpcService",
    "config_health_service",
    "configure_logging",
    "grpc_client_target",
    "parse_listen",
    "run",
    "serve_until_signalled",
    "start_service",
]

log = logging.getLogger(__name__)

DEFAULT_GRACE_S = 5.0
T = TypeVar("T")


def parse_listen(listen: str) -> str:
    """Validate ``HOST:PORT`` / ``[V6]:PORT`` / ``unix:PATH`` (clearing a stale socket file); the gRPC target."""
    if listen.startswith("unix:"):
        path = listen.removeprefix("unix:")
        if path.startswith("//"):  # unix:///abs/path
            path = path[2:]
        if not path:
            raise ValueError(f"invalid listen address {listen!r}: missing socket path")
        _remove_stale_socket(path)
        return f"unix:{path}"
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


def config_health_service(digest: str, service: str = "extproc") -> str:
    """The gRPC health service that is SERVING while ``service`` serves this version (digest) of its config
    files: ``tokenvoy run`` waits for it before it changes Envoy (docs/reload.md)."""
    return f"tokenvoy.{service}.config/{digest}"


def grpc_client_target(listen: str) -> str:
    """The channel target that reaches a server started with ``--listen listen``."""
    if listen.startswith("unix:"):
        return f"unix:{listen[len('unix:') :]}"
    return listen


@dataclass
class GrpcService:
    """A started gRPC server with its health servicer and optional admin port."""

    name: str  # "extproc", "ratelimit": log lines
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    port: int  # the bound TCP port (0 for a unix socket)
    admin: AdminServer | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    config_version: str = ""  # the digest of the config files served, "" before the first (or without files)

    def spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``work`` (a watcher) alongside the server; it is cancelled first when the server stops."""
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.append(task)
        return task

    async def set_serving(self, service: str, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        await self.health.set(service, status)

    async def serve_config_version(self, digest: str) -> None:
        """Report ``digest`` as the config version served (SERVING), and the one before as NOT_SERVING."""
        if self.config_version and self.config_version != digest:
            await self.set_serving(config_health_service(self.config_version, self.name), False)
        await self.set_serving(config_health_service(digest, self.name), True)
        self.config_version = digest

    async def stop(self, grace: float = DEFAULT_GRACE_S) -> None:
        """Report NOT_SERVING (gRPC health and ``/healthz``), refuse new calls, wait up to ``grace`` s for the
        ones in flight, close the admin port."""
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()
        await self.health.enter_graceful_shutdown()
        if self.admin is not None:
            self.admin.start_draining()
        log.info("%s stopping: letting in-flight calls finish (up to %gs)", self.name, grace)
        await self.server.stop(grace)
        if self.admin is not None:
            await self.admin.close()


async def start_service(
    name: str,
    listen: str,
    register: Callable[[grpc.aio.Server], Sequence[str]],
    *,
    options: Sequence[tuple[str, Any]] = (),
    admin: AdminServer | None = None,
    credentials: grpc.ServerCredentials | None = None,
) -> GrpcService:
    """Serve on ``listen`` the services ``register`` adds (it returns their full names, for health and
    reflection). ``admin``, already started, is closed here if the server cannot start, else by ``stop``.
    ``credentials``: serve TLS (``grpc.ssl_server_credentials``) instead of plaintext.

    Raises ``ValueError`` for a malformed address and ``OSError`` for one that cannot be bound."""
    try:
        target = parse_listen(listen)
        # so_reuseport off: a second server on the same port must fail, not silently share the traffic.
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0), *options])
        services = list(register(server))
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        reflection.enable_server_reflection((*services, health_name, reflection.SERVICE_NAME), server)
        try:
            if credentials is None:
                port = server.add_insecure_port(target)
            else:
                port = server.add_secure_port(target, credentials)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {listen}: {exc}") from None
        if port == 0 and not target.startswith("unix:"):
            raise OSError(f"cannot listen on {listen}")
    except BaseException:
        if admin is not None:
            await admin.close()
        raise
    await server.start()
    for service in ("", *services):
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    log.info("%s serving gRPC on %s (event loop: %s)", name, listen, event_loop_name())
    return GrpcService(name, server, health_servicer, 0 if target.startswith("unix:") else port, admin)


async def serve_until_signalled(
    service: GrpcService,
    grace: float = DEFAULT_GRACE_S,
    *,
    reload: Callable[[], object] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop`` is set), then :meth:`GrpcService.stop`. SIGHUP calls ``reload``
    (on the event loop: it must not block; start a task for real work)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    handlers: list[tuple[signal.Signals, Callable[[], object]]] = [
        (signal.SIGTERM, stop.set),
        (signal.SIGINT, stop.set),
        *([(signal.SIGHUP, reload)] if reload is not None else []),
    ]
    installed: list[signal.Signals] = []
    for signum, handler in handlers:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
            loop.add_signal_handler(signum, handler)
            installed.append(signum)
    try:
        await stop.wait()
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
        await service.stop(grace)


def run(main: Coroutine[Any, Any, T], use_uvloop: bool = True) -> T:
    """``asyncio.run(main)`` on uvloop's event loop (about a fifth less CPU per gRPC call, bench/README.md)
    unless ``use_uvloop`` is False or uvloop is not installed."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency; a platform without a wheel falls back
            log.warning("uvloop is not installed: running on asyncio's own event loop")
        else:
            return uvloop.run(main)
    return asyncio.run(main)


def event_loop_name() -> str:
    """``uvloop`` or ``asyncio``: which event loop this process runs on (its startup log line says it)."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
