"""What the router stream reports when a request ends, for metrics and traces to consume.

The router builds one ``CompletedRequest`` per request and hands it to an observer; observers must be
cheap (they run on the hot path once per request) and must not raise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from tokenvoy.extproc.translate.base import ClientAPI
from tokenvoy.extproc.usage import TokenUsage


@dataclass(frozen=True, slots=True)
class CompletedRequest:
    api: ClientAPI | None  # None: rejected before the endpoint was known (unknown path)
    route: str | None
    backend: str | None
    schema: str | None  # the backend's API schema name, e.g. "OpenAI"
    original_model: str | None  # the model the client asked for
    request_model: str | None  # the model sent to the backend (its modelNameOverride, else the original)
    response_model: str | None
    status: int  # what the client got; 0 when the client went away before any answer
    stream: bool
    usage: TokenUsage | None
    started: float  # time.monotonic() at request headers
    finished: float
    first_chunk_at: float | None  # first response body bytes (streams: time to first token)
    gateway_seconds: float  # time spent inside tokenvoy's handlers for this request
    error_type: str | None  # set when the status is not 2xx
    request_headers: Mapping[str, str]  # the client's headers, for configured label mapping
    named_models: frozenset[str] = frozenset()  # the models the request's config names (Runtime.named_models)
    cost_usd_micros: int | None = None  # the USD cost extproc computed (price catalog); None: no usage or no price
    # the ext_proc messages Envoy sent on the request's router stream, by phase (e.g. "response_body": 3)
    messages: Mapping[str, int] | None = None


class RequestObserver(Protocol):
    def request_completed(self, request: CompletedRequest) -> None: ...


class NoObserver:
    def request_completed(self, request: CompletedRequest) -> None:
        return None
