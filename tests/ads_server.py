"""A State of the World ADS server as Envoy Gateway's ratelimit config server behaves, for tests.

Written from the xDS protocol: it answers a subscription whose ``version_info`` differs from its own with the
whole set of resources and a fresh nonce, waits for the ACK or NACK of that nonce, and sends again when its
version changes. It serves over mutual TLS (a client certificate signed by the CA is required), as EG's config
server on port 18001 does, and records every request and the client certificate's common name.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryRequest, DiscoveryResponse
from envoy_data_plane.google.protobuf import Any as AnyMessage

from tokenvoy.pb.ratelimit.config.ratelimit.v3 import rls_conf_pb2
from tokenvoy.ratelimit.xds_client import ADS_METHOD
from tokenvoy.ratelimit.xds_config import RATE_LIMIT_CONFIG_TYPE_URL


@dataclass(frozen=True)
class Pki:
    """A CA and a server and client certificate signed by it, as PEM files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here


def packed(*configs: rls_conf_pb2.RateLimitConfig) -> list[AnyMessage]:
    return [AnyMessage(type_url=RATE_LIMIT_CONFIG_TYPE_URL, value=c.SerializeToString()) for c in configs]


@dataclass
class AdsServer:
    """A SotW ADS server with one snapshot; records every request it reads and the peer's certificate."""

    pki: Pki
    port: int
    version: str = ""
    resources: list[AnyMessage] = field(default_factory=list)
    requests: list[DiscoveryRequest] = field(default_factory=list)
    peers: list[str] = field(default_factory=list)
    replies: dict[str, DiscoveryRequest] = field(default_factory=dict)  # the ACK or NACK of each version sent
    streams: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _server: grpc.aio.Server | None = None

    def publish(self, version: str, resources: list[AnyMessage]) -> None:
        self.version, self.resources = version, resources
        self._changed.set()

    async def _stream(self, _requests: object, context: grpc.aio.ServicerContext) -> None:
        self.streams += 1
        common_names = context.auth_context().get("x509_common_name", [])
        self.peers.extend(cn.decode() for cn in common_names)
        request = await context.read()
        if request is grpc.aio.EOF:
            return
        self.requests.append(request)
        known = request.version_info
        nonce = 0
        while True:
            if self.version and self.version != known:
                nonce += 1
                sent = self.version
                await context.write(
                    DiscoveryResponse(
                        version_info=sent,
                        resources=self.resources,
                        type_url=RATE_LIMIT_CONFIG_TYPE_URL,
                        nonce=f"{self.streams}-{nonce}",
                    )
                )
                reply = await context.read()
                if reply is grpc.aio.EOF:
                    return
                self.requests.append(reply)
                self.replies[sent] = reply
                known = sent  # ACKed or NACKed: either way, not sent again until the version changes
            else:
                self._changed.clear()
                await self._changed.wait()

    async def start(self) -> None:
        handler = grpc.method_handlers_generic_handler(
            "envoy.service.discovery.v3.AggregatedDiscoveryService",
            {
                "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self._stream,
                    request_deserializer=DiscoveryRequest.parse,
                    response_serializer=bytes,
                )
            },
        )
        assert ADS_METHOD == "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers((handler,))
        credentials = grpc.ssl_server_credentials(
            [(self.pki.server_key.read_bytes(), self.pki.server_cert.read_bytes())],
            root_certificates=self.pki.ca.read_bytes(),
            require_client_auth=True,
        )
        assert self._server.add_secure_port(f"127.0.0.1:{self.port}", credentials) == self.port
        await self._server.start()

    async def stop(self) -> None:
        assert self._server is not None
        await self._server.stop(grace=None)
