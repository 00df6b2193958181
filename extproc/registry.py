"""Per-request state shared by the router-level and upstream ext_proc streams of one request.

Both streams of a request reach this process (one extproc endpoint per Envoy); the router stream
creates the entry and removes it when it ends, so the map holds only requests in flight.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field

from tokenvoy.extproc.runtime import RuleRuntime
from tokenvoy.extproc.translate.base import ClientRequest, Translator

REQUEST_ID_HEADER = "x-tokenvoy-request-id"


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
    started: float = field(default_factory=time.monotonic)
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def attempt(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None


class RequestRegistry:
    def __init__(self) -> None:
        self._entries: dict[str, RequestContext] = {}
        self._ids = itertools.count(1)
        self._prefix = f"{os.getpid():x}-{time.time_ns():x}-"

    def add(self, context: RequestContext) -> str:
        request_id = f"{self._prefix}{next(self._ids)}"
        self._entries[request_id] = context
        return request_id

    def get(self, request_id: str | None) -> RequestContext | None:
        return self._entries.get(request_id) if request_id else None

    def remove(self, request_id: str | None) -> None:
        if request_id:
            self._entries.pop(request_id, None)

    def __len__(self) -> int:
        return len(self._entries)
