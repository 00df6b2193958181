"""ECDS (Extension Config Discovery, gRPC state of the world) for the client-keys filter: extproc tells
Envoy the ``api_key_auth`` config of the config it serves, and again after a reload changes the keys."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import grpc

from tokenvoy.extproc.client_keys import discovery_response, has_error_detail

log = logging.getLogger(__name__)

SERVICE = "envoy.service.extension.v3.ExtensionConfigDiscoveryService"
CHECK_INTERVAL_S = 1.0  # how soon a reloaded config's keys reach Envoy


class ClientKeysDiscovery:
    def __init__(self, current: Callable[[], bytes | None]) -> None:
        self._current = current  # the ApiKeyAuth config of the config extproc serves now (None: no keys)
        self._version = 0
        self._versions: dict[bytes, str] = {}

    def _version_of(self, config: bytes) -> str:
        if config not in self._versions:
            self._version += 1
            self._versions = {config: str(self._version)}  # only the newest is kept
        return self._versions[config]

    async def stream(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        reader = asyncio.ensure_future(self._read(requests))
        sent: bytes | None = None
        nonce = 0
        try:
            while not reader.done():
                config = self._current()
                if config is not None and config != sent:
                    nonce += 1
                    yield discovery_response(config, self._version_of(config), str(nonce))
                    sent = config
                await asyncio.wait([reader], timeout=CHECK_INTERVAL_S)
        finally:
            reader.cancel()

    async def _read(self, requests: AsyncIterator[bytes]) -> None:
        async for request in requests:
            if has_error_detail(request):
                log.error("Envoy refused the client API keys config (ECDS NACK); it keeps the previous one")

    def handler(self) -> grpc.GenericRpcHandler:
        method = grpc.stream_stream_rpc_method_handler(self.stream)
        return grpc.method_handlers_generic_handler(SERVICE, {"StreamExtensionConfigs": method})
