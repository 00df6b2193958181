"""Retries: the ``retry`` of an Envoy Gateway ``BackendTrafficPolicy``, attached to the rules of the
routes it targets."""

from __future__ import annotations

from dataclasses import replace

from tokenvoy.config.loader.ai_gateway_route import ROUTE_TARGET_KINDS
from tokenvoy.config.loader.cursor import Cursor, Problems, Resource
from tokenvoy.config.loader.values import duration_ms
from tokenvoy.config.model import (
    RetrySettings,
    Route,
)

_RETRY_FIELDS = {"numRetries", "numAttemptsPerPriority", "retryOn", "perRetry"}
_RETRY_ON_FIELDS = {"triggers", "httpStatusCodes"}
_PER_RETRY_FIELDS = {"timeout", "backOff"}
_BACKOFF_FIELDS = {"baseInterval", "maxInterval"}

# Envoy Gateway's retry triggers, each an Envoy `retry_on` condition of the same name.
RETRY_TRIGGERS = (
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
)


def _retry_settings(resource: Resource, retry: Cursor) -> RetrySettings | None:
    if not retry.fields(_RETRY_FIELDS):
        return None
    num_retries = retry["numRetries"].integer(0, 0) if retry["numRetries"].present else None
    per_priority = retry["numAttemptsPerPriority"]
    attempts_per_priority = per_priority.integer(1, 1) if per_priority.present else None
    triggers = codes = None
    retry_on = retry["retryOn"]
    if retry_on.present and retry_on.fields(_RETRY_ON_FIELDS):
        if retry_on["triggers"].present:
            triggers = []
            for item in retry_on["triggers"].items():
                if item.value not in RETRY_TRIGGERS:
                    item.report(f"unknown retry trigger {item.value!r} (known: {', '.join(RETRY_TRIGGERS)})")
                elif item.value not in triggers:
                    triggers.append(item.value)
            triggers = tuple(triggers)
        if retry_on["httpStatusCodes"].present:
            codes = []
            for item in retry_on["httpStatusCodes"].items():
                code = item.value
                if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
                    item.report(f"must be an HTTP status, got {code!r}")
                else:
                    codes.append(code)
            codes = tuple(codes)
            if triggers is not None and "retriable-status-codes" not in triggers:
                retry_on["httpStatusCodes"].report(
                    "has no effect without the retriable-status-codes trigger in retryOn.triggers"
                )
    per_try = base = maximum = None
    per_retry = retry["perRetry"]
    if per_retry.present and per_retry.fields(_PER_RETRY_FIELDS):
        per_try = duration_ms(per_retry["timeout"])
        back_off = per_retry["backOff"]
        if back_off.present and back_off.fields(_BACKOFF_FIELDS):
            base = duration_ms(back_off["baseInterval"])
            maximum = duration_ms(back_off["maxInterval"])
            if base == 0:
                back_off["baseInterval"].report("must be longer than 0")
            if base and maximum is not None and maximum < base:
                back_off["maxInterval"].report("must not be shorter than baseInterval")
    return RetrySettings(resource.ref, num_retries, attempts_per_priority, triggers, codes, per_try, base, maximum)


def apply_retries(items: dict[str, Resource], routes: list[Route], problems: Problems) -> list[Route]:
    """Attach each BackendTrafficPolicy ``retry`` to the rules of the routes it targets (the targets
    themselves are checked, and reported, with the policy's rate limits)."""
    by_route: dict[str, RetrySettings] = {}
    names = {route.name for route in routes}
    for resource in items.values():
        spec = Cursor.spec(resource, problems)
        if not spec["retry"].present:
            continue
        settings = _retry_settings(resource, spec["retry"])
        if settings is None:
            continue
        targets: set[str] = set()
        for target in spec["targetRefs"].items():
            if not isinstance(target.value, dict):
                continue
            kind = target.get("kind", "AIGatewayRoute")
            if kind == "Gateway":
                targets.update(names)
            elif kind in ROUTE_TARGET_KINDS and target.get("name") in names:
                targets.add(target.get("name"))
        for name in sorted(targets):
            if name in by_route:
                spec["retry"].report(f"AIGatewayRoute/{name} already has retries from {by_route[name].policy}")
                continue
            by_route[name] = settings
    return [
        replace(route, rules=tuple(replace(rule, retry=by_route[route.name]) for rule in route.rules))
        if route.name in by_route
        else route
        for route in routes
    ]
