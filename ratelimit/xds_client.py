"""ADS client that loads the rate limit config an xDS management server (Envoy Gateway) serves.

This is how envoyproxy/ratelimit runs under Envoy Gateway (``CONFIG_TYPE=GRPC_XDS_SOTW``), so tokenvoy's
ratelimit can take its place: one ``StreamAggregatedResources`` stream (State of the World, the variant
EG's config server and envoyproxy/ratelimit speak), subscribed to
``type.googleapis.com/ratelimit.config.ratelimit.v3.RateLimitConfig`` as node ``node_id``, optionally over
mutual TLS.

Every response carries the complete set of configs. It is decoded and validated like a config file
(:mod:`ratelimit.xds_config`); a valid set replaces the tree in one swap and is ACKed (``version_info``
and ``response_nonce`` of that response), an invalid one is NACKed with the error naming the resource,
domain and descriptor, and the last good tree stays in force. A broken stream or an unreachable server
is retried with jittered exponential backoff; the tree in force is kept meanwhile, and the new stream
announces the last ACKed version so an unchanged config is not sent again.

The ``DiscoveryRequest``/``DiscoveryResponse`` messages are envoy-data-plane's (generated from Envoy's own
protos): one message per config update, never on the request path.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from envoy_data_plane.envoy.config.core.v3 import Node
from envoy_data_plane.envoy.service.discovery.v3 import DiscoveryRequest, DiscoveryResponse
from envoy_data_plane.google.protobuf import Struct, Value
from envoy_data_plane.google.rpc import Status
from google.protobuf.message import DecodeError

from tokenvoy.pb.ratelimit.config.ratelimit.v3 import rls_conf_pb2

from .config import RateLimitConfig, RateLimitConfigError
from .metrics import RateLimitMetrics
from .reload import describe_config
from .xds_config import RATE_LIMIT_CONFIG_TYPE_URL, config_from_protos

__all__ = ["ADS_METHOD", "XdsClientSettings", "XdsConfigClient", "XdsTls"]

logger = logging.getLogger("tokenvoy.ratelimit")

ADS_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
_INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]


@dataclass(frozen=True)
class XdsTls:
    """Client TLS to the management server: the server's CA, our certificate and key (mutual TLS when set)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None  # checked against the server's certificate instead of the URL's host

    def credentials(self) -> grpc.ChannelCredentials:
        """Read the files now (a rotated certificate is picked up at the next reconnect)."""
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("xDS client TLS needs both a certificate and its key")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file),
            private_key=_read(self.key_file),
            certificate_chain=_read(self.cert_file),
        )


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class XdsClientSettings:
    """Where and as whom to fetch the config; the defaults are envoyproxy/ratelimit's."""

    server: str  # HOST:PORT
    node_id: str = "default"
    node_metadata: Mapping[str, str] = field(default_factory=dict)
    tls: XdsTls | None = None  # None: plaintext
    headers: Mapping[str, str] = field(default_factory=dict)  # sent as gRPC metadata on the stream
    backoff_initial_s: float = 10.0
    backoff_max_s: float = 60.0
    backoff_random_factor: float = 0.5
    backoff_jitter: bool = True
    max_receive_bytes: int | None = None


class XdsConfigClient:
    """Keeps ``apply`` fed with the management server's current rate limit config (run :meth:`run` as a task)."""

    def __init__(
        self,
        settings: XdsClientSettings,
        apply: Callable[[RateLimitConfig], None] | None = None,
        *,
        metrics: RateLimitMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.apply = apply  # set by the server once the service exists
        self._metrics = metrics
        self.config: RateLimitConfig | None = None  # the last good tree
        self.version = ""  # version_info of the last ACKed response
        self.last_error: str | None = None  # why the last response was NACKed (None after an ACK)
        self.first_config = asyncio.Event()  # set at the first ACKed response
        self.connected = asyncio.Event()  # set while a stream is open
        self._attempt = 0

    # ---------------------------------------------------------------------------------------------------
    # Protocol (pure: no I/O)

    def _node(self) -> Node:
        metadata = Struct(fields={k: Value(string_value=v) for k, v in self.settings.node_metadata.items()})
        return Node(id=self.settings.node_id, metadata=metadata)

    def subscribe_request(self) -> DiscoveryRequest:
        """First request of a stream: who we are, what we want, and the version we already have."""
        return DiscoveryRequest(node=self._node(), type_url=RATE_LIMIT_CONFIG_TYPE_URL, version_info=self.version)

    def handle(self, response: DiscoveryResponse) -> DiscoveryRequest:
        """Load one response and return the ACK or NACK to send for it."""
        try:
            config = self._decode(response)
        except RateLimitConfigError as exc:
            self.last_error = str(exc)
            logger.error(
                "rate limit config version %r from %s refused, keeping %s: %s",
                response.version_info,
                self.settings.server,
                f"version {self.version!r}" if self.config is not None else "no config",
                exc,
            )
            if self._metrics is not None:
                self._metrics.config_reloads.labels("failure").inc()
            return DiscoveryRequest(
                node=self._node(),
                type_url=response.type_url or RATE_LIMIT_CONFIG_TYPE_URL,
                version_info=self.version,
                response_nonce=response.nonce,
                error_detail=Status(code=_INVALID_ARGUMENT, message=str(exc)),
            )
        self.config = config
        self.version = response.version_info
        self.last_error = None
        if self.apply is not None:
            self.apply(config)
        self.first_config.set()
        logger.info("rate limit config version %r loaded over xDS, domains: %s", self.version, describe_config(config))
        if self._metrics is not None:
            self._metrics.config_reloads.labels("success").inc()
        return DiscoveryRequest(
            node=self._node(),
            type_url=RATE_LIMIT_CONFIG_TYPE_URL,
            version_info=self.version,
            response_nonce=response.nonce,
        )

    def _decode(self, response: DiscoveryResponse) -> RateLimitConfig:
        source = f"xDS version {response.version_info!r}"
        if response.type_url != RATE_LIMIT_CONFIG_TYPE_URL:
            raise RateLimitConfigError(f"{source}: type {response.type_url!r} was not asked for")
        protos = []
        for index, resource in enumerate(response.resources, start=1):
            if resource.type_url != RATE_LIMIT_CONFIG_TYPE_URL:
                raise RateLimitConfigError(f"{source}: resource #{index} is a {resource.type_url!r}")
            try:
                protos.append(rls_conf_pb2.RateLimitConfig.FromString(resource.value))
            except DecodeError as exc:
                raise RateLimitConfigError(f"{source}: resource #{index} is not a RateLimitConfig: {exc}") from None
        return config_from_protos(protos, source)

    def next_delay(self) -> float:
        """Seconds before the next connection attempt: doubled per failure up to the maximum, jittered."""
        s = self.settings
        delay = min(s.backoff_max_s, s.backoff_initial_s * 2 ** min(self._attempt, 32))
        self._attempt += 1
        if s.backoff_jitter and s.backoff_random_factor > 0:
            spread = delay * min(s.backoff_random_factor, 1.0)
            delay = random.uniform(delay - spread, delay + spread)
        return max(delay, 0.0)

    # ---------------------------------------------------------------------------------------------------
    # Transport

    def _channel(self) -> grpc.aio.Channel:
        options: list[tuple[str, int | str]] = []
        if self.settings.max_receive_bytes:
            options.append(("grpc.max_receive_message_length", self.settings.max_receive_bytes))
        tls = self.settings.tls
        if tls is None:
            return grpc.aio.insecure_channel(self.settings.server, options=options)
        if tls.server_name:
            options.append(("grpc.ssl_target_name_override", tls.server_name))
        return grpc.aio.secure_channel(self.settings.server, tls.credentials(), options=options)

    async def stream_once(self) -> None:
        """One ADS stream, until it ends or fails (raises ``grpc.RpcError``/``ValueError``/``OSError``)."""
        async with self._channel() as channel:
            call = channel.stream_stream(
                ADS_METHOD,
                request_serializer=bytes,
                response_deserializer=DiscoveryResponse.parse,
            )(metadata=tuple(self.settings.headers.items()) or None)
            try:
                await call.write(self.subscribe_request())
                while True:
                    response = await call.read()
                    if response is grpc.aio.EOF:
                        return
                    self.connected.set()
                    self._attempt = 0  # the server answers: the next failure starts the backoff afresh
                    await call.write(self.handle(response))
            finally:
                self.connected.clear()
                call.cancel()

    async def run(self) -> None:
        """Stream forever, reconnecting with backoff (cancel to stop). Never raises otherwise."""
        while True:
            try:
                await self.stream_once()
                reason = "the server closed the stream"
            except asyncio.CancelledError:
                raise
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
                details = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
                reason = f"{code.name if code else 'error'}: {details}"
            except (OSError, ValueError) as exc:
                reason = str(exc)
            except Exception as exc:  # a bug must not stop config updates for good
                logger.exception("xDS config client failed")
                reason = repr(exc)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # grpc.aio turns a cancellation during a read into a CANCELLED RpcError or an EOF; without
                # this check the stop request is swallowed and the client reconnects forever.
                raise asyncio.CancelledError
            delay = self.next_delay()
            logger.warning(
                "xDS config stream to %s ended (%s); keeping %s, reconnecting in %.1f s",
                self.settings.server,
                reason,
                f"config version {self.version!r}" if self.config is not None else "no config",
                delay,
            )
            await asyncio.sleep(delay)
