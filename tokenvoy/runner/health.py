"""Readiness probes for the children of ``tokenvoy run``."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tokenvoy.grpcserver import grpc_client_target


async def grpc_serving(listen: str, service: str = "") -> bool:
    """The gRPC health of ``service`` (the whole server by default); an unknown service raises."""
    async with grpc.aio.insecure_channel(grpc_client_target(listen)) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
        return reply.status == health_pb2.HealthCheckResponse.SERVING


async def http_ok(host: str, port: int, path: str, unix: str | None = None) -> bool:
    status, _ = await http_get(host, port, path, read_body=False, unix=unix)
    return status == 200


async def http_get(
    host: str, port: int, path: str, read_body: bool = True, unix: str | None = None, method: str = "GET"
) -> tuple[int, bytes]:
    """A tiny HTTP/1.1 request (Envoy's admin): the status and, with ``read_body``, the raw body. ``unix``: the
    path of a Unix socket to connect to instead of ``host:port`` (``host`` is still the Host header)."""
    connecting = asyncio.open_unix_connection(unix) if unix else asyncio.open_connection(host, port)
    reader, writer = await asyncio.wait_for(connecting, 1.0)
    try:
        length = "content-length: 0\r\n" if method == "POST" else ""
        writer.write(f"{method} {path} HTTP/1.1\r\nhost: {host}\r\n{length}connection: close\r\n\r\n".encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 1.0)
        body = b""
        if read_body:
            response = await asyncio.wait_for(reader.read(), 2.0)
            body = response.split(b"\r\n\r\n", 1)[-1]
    finally:
        writer.close()
    parts = status_line.split()
    return (int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0), body
