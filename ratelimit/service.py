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
- counters unreachable (:class:`BackendUnavailable`, e.g. Redis down or slow): answered by the
  service's own failure mode, so the outcome does not depend on Envoy's ``failure_mode_deny``. ``open``
  (the default) answers OK without counting (Envoy serves the request), ``closed`` answers OVER_LIMIT
  (Envoy rejects it with 429). An answer is better than a gRPC error here: Envoy treats an error like a
  timeout and fails open unless ``failure_mode_deny`` is set, which would make ``closed`` impossible to
  get without touching Envoy. One warning when an outage starts and one info line when the first call
  succeeds again; every call in between is counted in ``tokenvoy_ratelimit_backend_errors_total``;
- no configuration loaded yet (the config comes over xDS and the first one has not arrived):
  ``UNAVAILABLE`` "no rate limit configuration loaded", as envoyproxy/ratelimit answers an error then
  (started with ``FORCE_START_WITHOUT_INITIAL_CONFIG``, as Envoy Gateway runs it). Envoy applies its own
  failure mode: the request is served unless ``failure_mode_deny`` is set. Once a config is loaded, an
  empty one included, the rules above apply;
- any other exception (a bug): ``UNAVAILABLE``, logged at most every few seconds.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable

import grpc
from google.protobuf.message import DecodeError

from tokenvoy.pb.envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from tokenvoy.pb.envoy.service.ratelimit.v3 import rls_pb2

from .backend import BackendUnavailable, CounterBackend
from .config import RateLimitConfig, Unit
from .limiter import (
    DEFAULT_HOLD_SLOT_S,
    Decision,
    Descriptor,
    LimitOverride,
    LimitRequest,
    decide,
    decide_unavailable,
    hold_metadata,
    plan,
    split_hold,
)
from .metrics import RateLimitMetrics

__all__ = [
    "ConfigNotLoaded",
    "FailureMode",
    "InvalidRateLimitRequest",
    "RateLimitService",
    "RateLimitServicer",
    "decision_to_pb",
    "register",
    "request_from_pb",
]

logger = logging.getLogger(__name__)

_UNIT_BY_WIRE: dict[int, Unit] = {u.value: u for u in Unit}
_MAX_REMEMBERED_UNKNOWN_DOMAINS = 64
_BACKEND_ERROR_LOG_INTERVAL_S = 10.0
# Decoded requests remembered by their wire bytes: Envoy's request-time check of one user is the same bytes
# every time. ~100 bytes a request; the memo is emptied when full, so memory stays bounded.
_MAX_REMEMBERED_REQUESTS = 4096
RLS_SERVICE_NAME = rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"].full_name


class InvalidRateLimitRequest(ValueError):
    """The request cannot be evaluated at all (as opposed to matching no limit)."""


class ConfigNotLoaded(RuntimeError):
    """No configuration has been loaded yet (xDS, before the first ACKed response)."""


class FailureMode(enum.Enum):
    """What to answer while the counters cannot be reached."""

    OPEN = "open"  # OK without counting: availability over enforcement
    CLOSED = "closed"  # OVER_LIMIT for every limited descriptor: enforcement over availability


_FAILURE_EFFECT = {
    FailureMode.OPEN: "answering OK without counting",
    FailureMode.CLOSED: "answering OVER_LIMIT for every limited descriptor",
}


class RateLimitService:
    """Evaluates requests against a configuration and a counter backend.

    ``config`` is a plain attribute: replacing it (a reload) is atomic for requests that follow.
    ``config=None`` starts without one: every call is refused with :class:`ConfigNotLoaded` until
    :meth:`set_config`.
    """

    def __init__(
        self,
        config: RateLimitConfig | None,
        backend: CounterBackend,
        clock: Callable[[], float] = time.time,
        *,
        failure_mode: FailureMode = FailureMode.OPEN,
        metrics: RateLimitMetrics | None = None,
        hold_slot_s: int = DEFAULT_HOLD_SLOT_S,
    ) -> None:
        self.loaded = config is not None
        self.config = config if config is not None else RateLimitConfig(())
        self.failure_mode = failure_mode
        self.hold_slot_s = hold_slot_s
        self.metrics = metrics if metrics is not None else RateLimitMetrics()
        self._backend = backend
        self._clock = clock
        self._unknown_domains: set[str] = set()
        self._outage_started: float | None = None  # time.monotonic() of the first failed call
        self._outage_calls = 0
        self.metrics.backend_up.set_function(lambda: 1.0 if backend.available else 0.0)

    def set_config(self, config: RateLimitConfig) -> None:
        """Swap the configuration (a reload); counters are in the backend and carry over."""
        self.config = config
        self.loaded = True
        self._unknown_domains = set()

    async def should_rate_limit(self, request: LimitRequest) -> Decision:
        """Plan, count (one backend call), decide."""
        if not request.domain:
            raise InvalidRateLimitRequest("rate limit domain must not be empty")
        if not request.descriptors:
            raise InvalidRateLimitRequest("rate limit descriptor list must not be empty")
        if not self.loaded:
            raise ConfigNotLoaded("no rate limit configuration loaded")
        config = self.config
        if request.domain not in config.domains:
            self._warn_unknown_domain(request.domain)
        p = plan(config, request, self._clock(), self.hold_slot_s)
        if not p.ops:
            return decide(p, ())
        try:
            counts = await self._backend.add(p.ops)
        except BackendUnavailable as exc:
            self.backend_unavailable(str(exc))
            return decide_unavailable(p, self.failure_mode is FailureMode.CLOSED)
        # A call sent before the outage may still succeed after it began: recovered only once the
        # backend itself says so, else one incident could be logged as several.
        if self._outage_started is not None and self._backend.available:
            self._backend_recovered()
        self.metrics.observe(request.domain, request.descriptors, p, counts)
        return decide(p, counts)

    def backend_unavailable(self, reason: str) -> None:
        """Count one call answered by the failure mode; log only the first of an outage."""
        self.metrics.backend_errors.inc()
        self._outage_calls += 1
        self.start_outage(reason)

    def start_outage(self, reason: str) -> None:
        """Log the start of an outage unless one is already going on (also used at startup)."""
        if self._outage_started is not None:
            return
        self._outage_started = time.monotonic()
        logger.warning(
            "rate limit counters unavailable (%s): failure mode %s, %s until the backend is back",
            reason,
            self.failure_mode.value,
            _FAILURE_EFFECT[self.failure_mode],
        )

    def _backend_recovered(self) -> None:
        started = self._outage_started if self._outage_started is not None else time.monotonic()
        logger.info(
            "rate limit counters available again after %.1fs; %d call%s answered by failure mode %s meanwhile",
            time.monotonic() - started,
            self._outage_calls,
            "" if self._outage_calls == 1 else "s",
            self.failure_mode.value,
        )
        self._outage_started = None
        self._outage_calls = 0

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
    entries, hold, hold_slot = split_hold(tuple([(e.key, e.value) for e in d.entries]))
    hits = d.hits_addend.value if d.HasField("hits_addend") else None
    return Descriptor(entries, hits, d.is_negative_hits, override, hold, hold_slot)


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
    for name, amount, slot in decision.holds:
        response.dynamic_metadata.update(hold_metadata(name, amount, slot))
    return response


class RateLimitServicer:
    """grpc.aio adapter around :class:`RateLimitService`, registered with :func:`register`.

    It takes the request's wire bytes (the method handler has no deserializer) and remembers the decoded
    request by them: the request-time check of a user is byte-identical every time, so it is decoded once,
    and a stream-done charge (its tokens differ) costs one decode, as before.
    """

    def __init__(self, service: RateLimitService) -> None:
        self.service = service
        self._duration = service.metrics.duration
        self._last_backend_error_log = float("-inf")
        self._requests: dict[bytes, LimitRequest] = {}

    def decode(self, raw: bytes) -> LimitRequest:
        """The pure request of these wire bytes (remembered); ``InvalidRateLimitRequest`` if they do not parse."""
        request = self._requests.get(raw)
        if request is None:
            try:
                request = request_from_pb(rls_pb2.RateLimitRequest.FromString(raw))
            except DecodeError as exc:
                raise InvalidRateLimitRequest(f"malformed RateLimitRequest: {exc}") from None
            requests = self._requests
            if len(requests) >= _MAX_REMEMBERED_REQUESTS:
                requests.clear()
            requests[raw] = request
        return request

    async def ShouldRateLimit(self, request: bytes, context: grpc.aio.ServicerContext) -> rls_pb2.RateLimitResponse:
        """Answer one Envoy rate limit query."""
        started = time.perf_counter()
        try:
            decision = await self.service.should_rate_limit(self.decode(request))
        except InvalidRateLimitRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except ConfigNotLoaded as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except Exception as exc:
            now = time.monotonic()
            if now - self._last_backend_error_log >= _BACKEND_ERROR_LOG_INTERVAL_S:
                self._last_backend_error_log = now
                logger.error("rate limit evaluation failed: %r", exc, exc_info=True)
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"rate limit counters unavailable: {exc}")
        finally:
            self._duration.observe(time.perf_counter() - started)
        return decision_to_pb(decision)


def register(servicer: RateLimitServicer, server: grpc.aio.Server) -> None:
    """Serve ``ShouldRateLimit`` on ``server`` with raw request bytes (see :class:`RateLimitServicer`)."""
    handlers = {
        "ShouldRateLimit": grpc.unary_unary_rpc_method_handler(
            servicer.ShouldRateLimit,
            request_deserializer=None,
            response_serializer=rls_pb2.RateLimitResponse.SerializeToString,
        )
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(RLS_SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(RLS_SERVICE_NAME, handlers)
