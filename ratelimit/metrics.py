"""Prometheus metrics of the Rate Limit Service, served on the admin port's ``/metrics``.

==================================================================  =========  ==========================
family                                                              kind       labels
==================================================================  =========  ==========================
``tokenvoy_ratelimit_hits_total``                                   counter    ``domain``, ``descriptor``
``tokenvoy_ratelimit_refunded_hits_total``                          counter    ``domain``, ``descriptor``
``tokenvoy_ratelimit_over_limit_total``                             counter    ``domain``, ``descriptor``
``tokenvoy_ratelimit_near_limit_total``                             counter    ``domain``, ``descriptor``
``tokenvoy_ratelimit_shadow_mode_total``                            counter    ``domain``, ``descriptor``
``tokenvoy_ratelimit_backend_errors_total``                         counter    (none)
``tokenvoy_ratelimit_backend_up``                                   gauge      (none)
``tokenvoy_ratelimit_config_reloads_total``                         counter    ``result``
``tokenvoy_ratelimit_should_rate_limit_duration_seconds``           histogram  (none)
==================================================================  =========  ==========================

``hits`` counts units charged (tokens for a token budget), ``refunded_hits`` units given back by
``is_negative_hits``. ``over_limit``, ``near_limit`` and ``shadow_mode`` count *evaluations* of a
limited descriptor, not hits: envoyproxy/ratelimit adds hits there, which for Envoy Gateway's
check-then-charge shape (the check carries ``hits_addend: 0``) would never show a rejected request.
``over_limit`` includes shadow-mode evaluations, as upstream, so rejections are
``over_limit - shadow_mode``. ``near_limit``: within the limit but at 80% or more of it.

``descriptor`` names the rule as envoyproxy/ratelimit's stats do, without the domain: one
``key`` or ``key_value`` (for configured values) per level, joined by dots, e.g. ``x-user-id`` or
``budget_gpt.x-user-id``. Request values appear only for rules with ``detailed_metric: true``
(``budget_gpt.x-user-id_alice``): a label per user id is unbounded cardinality, so it is opt-in. A limit
sent by Envoy in the request has no rule: its label is the request's keys (``x-user-id``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

from .config import RateLimit
from .limiter import Descriptor, Plan, is_over_limit

__all__ = ["DURATION_BUCKETS", "RateLimitMetrics", "descriptor_label"]

# `_created` series double the series count and most scrapers ignore them in the text format.
disable_created_metrics()

# A call takes ~0.1 ms (memory) to ~1 ms (Redis on the LAN); Envoy's filter timeout is 20-200 ms.
DURATION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
NEAR_LIMIT_RATIO = (4, 5)  # 80%, as envoyproxy/ratelimit's NEAR_LIMIT_RATIO default

_LABELS = ("domain", "descriptor")


def descriptor_label(domain: str, limit: RateLimit, entries: Sequence[tuple[str, str]]) -> str:
    """The ``descriptor`` label value for one evaluated limit (format in the module docstring)."""
    if limit.detailed_metric:
        return ".".join(f"{key}_{value}" for key, value in entries)
    if limit.full_key:
        return limit.full_key[len(domain) + 1 :]
    return ".".join(key for key, _ in entries)


class _Series(NamedTuple):
    hits: Counter
    refunded: Counter
    over: Counter
    near: Counter
    shadow: Counter


class RateLimitMetrics:
    """The families above in their own registry (so several servers can live in one process, e.g. tests)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, process_metrics: bool = False) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        if process_metrics:
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                self.registry.register(collector)
        r = self.registry
        self.hits = Counter(
            "tokenvoy_ratelimit_hits",
            "Hits added to rate limit counters (tokens, for a token budget).",
            _LABELS,
            registry=r,
        )
        self.refunded_hits = Counter(
            "tokenvoy_ratelimit_refunded_hits",
            "Hits given back by descriptors with is_negative_hits.",
            _LABELS,
            registry=r,
        )
        self.over_limit = Counter(
            "tokenvoy_ratelimit_over_limit",
            "Descriptor evaluations whose counter was over the limit (shadow mode included).",
            _LABELS,
            registry=r,
        )
        self.near_limit = Counter(
            "tokenvoy_ratelimit_near_limit",
            "Descriptor evaluations within the limit but at 80% of it or more.",
            _LABELS,
            registry=r,
        )
        self.shadow_mode = Counter(
            "tokenvoy_ratelimit_shadow_mode",
            "Over-limit descriptor evaluations answered OK because the limit is in shadow mode.",
            _LABELS,
            registry=r,
        )
        self.backend_errors = Counter(
            "tokenvoy_ratelimit_backend_errors",
            "ShouldRateLimit calls whose counters could not be reached (answered by the failure mode).",
            registry=r,
        )
        self.backend_up = Gauge(
            "tokenvoy_ratelimit_backend_up", "1 while the counter backend is reachable, 0 during an outage.", registry=r
        )
        self.config_reloads = Counter(
            "tokenvoy_ratelimit_config_reloads",
            "Configuration reloads after a file change or SIGHUP; result is success or failure.",
            ("result",),
            registry=r,
        )
        self.duration = Histogram(
            "tokenvoy_ratelimit_should_rate_limit_duration_seconds",
            "Time to answer one ShouldRateLimit call, counter backend included.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self._series: dict[tuple[str, str], _Series] = {}

    def _series_for(self, domain: str, limit: RateLimit, entries: Sequence[tuple[str, str]]) -> _Series:
        # Configured, non-detailed rules are looked up by their full key without building the label.
        key = (domain, limit.full_key) if limit.full_key and not limit.detailed_metric else None
        if key is not None:
            series = self._series.get(key)
            if series is not None:
                return series
        label = descriptor_label(domain, limit, entries)
        cache_key = key if key is not None else (domain, "\0" + label)
        series = self._series.get(cache_key)
        if series is None:
            values = (domain, label)
            series = _Series(
                self.hits.labels(*values),
                self.refunded_hits.labels(*values),
                self.over_limit.labels(*values),
                self.near_limit.labels(*values),
                self.shadow_mode.labels(*values),
            )
            self._series[cache_key] = series
        return series

    def observe(self, domain: str, descriptors: Sequence[Descriptor], p: Plan, counts: Sequence[int]) -> None:
        """Record one evaluated request: per counted descriptor, hits and where the counter stands."""
        near_num, near_den = NEAR_LIMIT_RATIO
        for descriptor, item in zip(descriptors, p.descriptors, strict=True):
            limit = item.limit
            if limit is None or item.op_index < 0:
                continue
            series = self._series_for(domain, limit, descriptor.entries)
            delta = p.ops[item.op_index].delta
            if delta > 0:
                series.hits.inc(delta)
            elif delta < 0:
                series.refunded.inc(-delta)
            after = item.after(counts)
            rpu = limit.requests_per_unit
            if is_over_limit(after, rpu, item.hits):
                series.over.inc()
                if limit.shadow_mode:
                    series.shadow.inc()
            elif after > 0 and after * near_den >= rpu * near_num:
                series.near.inc()
