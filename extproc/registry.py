"""Per-request state shared by the router-level and upstream ext_proc streams of one request.

Both streams of a request reach this process (one extproc endpoint per Envoy). They find each other by
a key Envoy derives itself and sends to both filters as request attributes (downstream connection id,
request start time, ``x-request-id``): unlike a header it never reaches the provider, and it survives
retries, whose upstream filters see the header edits of the attempts before them. The router stream
creates the entry and removes it when it ends, so the map holds only requests in flight.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tokenvoy.contract import EXT_PROC_FILTER, IDENTITY_ATTRIBUTES
from tokenvoy.extproc.runtime import RuleRuntime, Runtime
from tokenvoy.extproc.translate.base import ClientRequest, Translator
from tokenvoy.pb.envoy.service.ext_proc.v3 import external_processor_pb2 as ep


def request_key(message: ep.ProcessingRequest) -> str | None:
    """The request's identity from the attributes Envoy sent with its first message, or None."""
    attributes = message.attributes.get(EXT_PROC_FILTER)
    if attributes is None:
        return None
    fields = attributes.fields
    parts = []
    for name in IDENTITY_ATTRIBUTES:
        value = fields.get(name)
        if value is None:
            return None
        kind = value.WhichOneof("kind")
        parts.append(repr(value.number_value) if kind == "number_value" else value.string_value)
    return "|".join(parts)


@dataclass(slots=True)
class Attempt:
    backend: str
    model: str
    model_override: str | None
    translator: Translator


@dataclass(slots=True)
class RequestContext:
    request: ClientRequest
    rule: RuleRuntime
    client_headers: dict[str, str]  # as the client sent them: what a retry restores
    started: float = field(default_factory=time.monotonic)
    attempts: list[Attempt] = field(default_factory=list)
    touched_headers: set[str] = field(default_factory=set)  # edited by some attempt's upstream filter
    span: Any = None  # the request's OpenTelemetry span when tracing is on (tokenvoy.extproc.tracing)
    trace_headers: dict[str, str] | None = None  # traceparent/tracestate for every attempt to the provider
    # The config the request started with: its upstream attempts use it even after a reload (docs/reload.md).
    runtime: Runtime | None = None
    direct: bool = False  # the router stream made the request's edit (a direct rule): no attempt edits it again

    @property
    def attempt(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None


class RequestRegistry:
    def __init__(self, entries: dict[str, RequestContext] | None = None, runtime: Runtime | None = None) -> None:
        self._entries: dict[str, RequestContext] = {} if entries is None else entries
        self._runtime = runtime

    def bound(self, runtime: Runtime) -> RequestRegistry:
        """The same requests, seen by a router stream that runs on ``runtime``: what it adds carries it."""
        return RequestRegistry(self._entries, runtime)

    def add(self, key: str, context: RequestContext) -> bool:
        """False if the key is taken (two requests Envoy could not tell apart)."""
        if key in self._entries:
            return False
        if self._runtime is not None:
            context.runtime = self._runtime
        self._entries[key] = context
        return True

    def get(self, key: str | None) -> RequestContext | None:
        return self._entries.get(key) if key else None

    def remove(self, key: str | None, context: RequestContext | None = None) -> None:
        if key and (context is None or self._entries.get(key) is context):
            self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)
