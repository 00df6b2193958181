"""The RLS v3 service: ``/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit``.

Two layers: :class:`RateLimitService` is transport-agnostic (plain dataclasses in and out, one backend
call per request) and :class:`RateLimitServicer` is the thin grpc.aio adapter that converts protobuf
messages to and from it.

Behaviour at the edges, following envoyproxy/ratelimit:

- empty ``domain`` or no descriptors: an error (upstream answers with a gRPC error too; we use
  ``INVALID_ARGUMENT`` where upstream's is ``UNKNOWN``). Envoy treats any error like a timeout: it
  fails open unless ``failure_mode_deny`` is set;
- unknown domain: every descriptor is OK with no limit, the same as a descriptor that matches nothing
  (logged once per domain as a warning, since it is almost always a configuration mistake);
- a backend failure: ``UNAVAILABLE``, logged at most every few seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import grpc

from tokenvoy.pb.envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from tokenvoy.pb.envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from .backend import CounterBackend
from .config import RateLimitConfig, Unit
from .limiter import Decision, Descriptor, LimitOverride, LimitRequest, decide, plan

__all__ = [
    "InvalidRateLimitRequest",
    "RateLimitService",
    "RateLimitServicer",
    "decision_to_pb",
    "request_from_pb",
]

logger = logging.getLogger(__name__)

_UNIT_BY_WIRE: dict[int, Unit] = {u.value: u for u in Unit}
_MAX_REMEMBERED_UNKNOWN_DOMAINS = 64
_BACKEND_ERROR_LOG_INTERVAL_S = 10.0


class InvalidRateLimitRequest(ValueError):
    """The request cannot be evaluated at all (as opposed to matching no limit)."""


class RateLimitService:
    """Evaluates requests against a configuration and a counter backend.

    ``config`` is a plain attribute: replacing it (a reload) is atomic for requests that follow.
    """

    def __init__(
        self,
        config: RateLimitConfig,
        backend: CounterBackend,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._backend = backend
        self._clock = clock
        self._unknown_domains: set[str] = set()

    async def should_rate_limit(self, request: LimitRequest) -> Decision:
        """Plan, count (one backend call), decide."""
        if not request.domain:
            raise InvalidRateLimitRequest("rate limit domain must not be empty")
        if not request.descriptors:
            raise InvalidRateLimitRequest("rate limit descriptor list must not be empty")
        config = self.config
        if request.domain not in config.domains:
            self._warn_unknown_domain(request.domain)
        p = plan(config, request, self._clock())
        counts = await self._backend.add(p.ops) if p.ops else []
        return decide(p, counts)

    def _warn_unknown_domain(self, domain: str) -> None:
        if domain in self._unknown_domains or len(self._unknown_domains) >= _MAX_REMEMBERED_UNKNOWN_DOMAINS:
            return
        self._unknown_domains.add(domain)
        logger.warning(
            "rate limit request for unknown domain %r: no limits apply (configured: %s)",
            domain,
            ", ".join(sorted(self.config.domains)) or "none",
        )


def _descriptor_from_pb(d: ratelimit_pb2.RateLimitDescriptor) -> Descriptor:
    override = None
    if d.HasField("limit"):
        unit = _UNIT_BY_WIRE.get(d.limit.unit)
        # An override with UNKNOWN unit cannot define a window: keep the configured limit.
        if unit is not None:
            override = LimitOverride(d.limit.requests_per_unit, unit)
    return Descriptor(
        entries=tuple((e.key, e.value) for e in d.entries),
        hits_addend=d.hits_addend.value if d.HasField("hits_addend") else None,
        is_negative_hits=d.is_negative_hits,
        limit=override,
    )


def request_from_pb(request: rls_pb2.RateLimitRequest) -> LimitRequest:
    """Protobuf request to the pure representation (``hits_addend`` presence kept via ``HasField``)."""
    return LimitRequest(
        domain=request.domain,
        descriptors=tuple(_descriptor_from_pb(d) for d in request.descriptors),
        hits_addend=request.hits_addend,
    )


def decision_to_pb(decision: Decision) -> rls_pb2.RateLimitResponse:
    """Pure decision to the protobuf response; every limited status carries limit, remaining and reset."""
    response = rls_pb2.RateLimitResponse(overall_code=decision.overall_code)
    statuses = response.statuses
    for status in decision.statuses:
        out = statuses.add(code=status.code, limit_remaining=status.limit_remaining)
        limit = status.current_limit
        if limit is not None:
            current = out.current_limit
            current.requests_per_unit = limit.requests_per_unit
            current.unit = limit.unit
            if limit.name:
                current.name = limit.name
        if status.duration_until_reset is not None:
            out.duration_until_reset.seconds = status.duration_until_reset
    return response


class RateLimitServicer(rls_pb2_grpc.RateLimitServiceServicer):
    """grpc.aio adapter around :class:`RateLimitService`."""

    def __init__(self, service: RateLimitService) -> None:
        self.service = service
        self._last_backend_error_log = float("-inf")

    async def ShouldRateLimit(
        self, request: rls_pb2.RateLimitRequest, context: grpc.aio.ServicerContext
    ) -> rls_pb2.RateLimitResponse:
        """Answer one Envoy rate limit query."""
        try:
            decision = await self.service.should_rate_limit(request_from_pb(request))
        except InvalidRateLimitRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Exception as exc:
            now = time.monotonic()
            if now - self._last_backend_error_log >= _BACKEND_ERROR_LOG_INTERVAL_S:
                self._last_backend_error_log = now
                logger.error("rate limit evaluation failed: %r", exc, exc_info=True)
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"rate limit counters unavailable: {exc}")
        return decision_to_pb(decision)
