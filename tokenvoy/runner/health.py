"""Readiness probes for the children of ``tokenvoy run``."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tokenvoy.grpcserver import grpc_client_target


async def grpc_serving(listen: str) -> bool:
    async with grpc.aio.insecure_channel(grpc_client_target(listen)) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
        return reply.status == health_pb2.HealthCheckResponse.SERVING


async def http_ok(host: str, port: int, path: str) -> bool:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n".encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 1.0)
    finally:
        writer.close()
    parts = status_line.split()
    return len(parts) >= 2 and parts[1] == b"200"
