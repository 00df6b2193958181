"""Retries: the ``retry`` of an Envoy Gateway ``BackendTrafficPolicy``, attached to the rules of the
routes it targets."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tokenvoy.config.loader.ai_gateway_route import _ROUTE_TARGET_KINDS
from tokenvoy.config.loader.cursor import Problems, Resource, _check_fields, _integer, _list
from tokenvoy.config.loader.values import _duration_ms
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


def _retry_settings(resource: Resource, value: Any, problems: Problems) -> RetrySettings | None:
    path = "spec.retry"
    if not _check_fields(resource, value, path, _RETRY_FIELDS, problems):
        return None
    num_retries = None
    if value.get("numRetries") is not None:
        num_retries = _integer(resource, value.get("numRetries"), f"{path}.numRetries", problems, 0, 0)
    per_priority = None
    if value.get("numAttemptsPerPriority") is not None:
        per_priority = _integer(
            resource, value.get("numAttemptsPerPriority"), f"{path}.numAttemptsPerPriority", problems, 1, 1
        )
    triggers = codes = None
    retry_on = value.get("retryOn")
    if retry_on is not None and _check_fields(resource, retry_on, f"{path}.retryOn", _RETRY_ON_FIELDS, problems):
        if retry_on.get("triggers") is not None:
            triggers = []
            for index, trigger in enumerate(
                _list(resource, retry_on.get("triggers"), f"{path}.retryOn.triggers", problems)
            ):
                if trigger not in RETRY_TRIGGERS:
                    problems.add(
                        resource,
                        f"{path}.retryOn.triggers[{index}]",
                        f"unknown retry trigger {trigger!r} (known: {', '.join(RETRY_TRIGGERS)})",
                    )
                elif trigger not in triggers:
                    triggers.append(trigger)
            triggers = tuple(triggers)
        if retry_on.get("httpStatusCodes") is not None:
            codes = []
            for index, code in enumerate(
                _list(resource, retry_on.get("httpStatusCodes"), f"{path}.retryOn.httpStatusCodes", problems)
            ):
                if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
                    problems.add(
                        resource, f"{path}.retryOn.httpStatusCodes[{index}]", f"must be an HTTP status, got {code!r}"
                    )
                else:
                    codes.append(code)
            codes = tuple(codes)
            if triggers is not None and "retriable-status-codes" not in triggers:
                problems.add(
                    resource,
                    f"{path}.retryOn.httpStatusCodes",
                    "has no effect without the retriable-status-codes trigger in retryOn.triggers",
                )
    per_try = base = maximum = None
    per_retry = value.get("perRetry")
    if per_retry is not None and _check_fields(resource, per_retry, f"{path}.perRetry", _PER_RETRY_FIELDS, problems):
        per_try = _duration_ms(resource, per_retry.get("timeout"), f"{path}.perRetry.timeout", problems)
        back_off = per_retry.get("backOff")
        back_path = f"{path}.perRetry.backOff"
        if back_off is not None and _check_fields(resource, back_off, back_path, _BACKOFF_FIELDS, problems):
            base = _duration_ms(resource, back_off.get("baseInterval"), f"{back_path}.baseInterval", problems)
            maximum = _duration_ms(resource, back_off.get("maxInterval"), f"{back_path}.maxInterval", problems)
            if base == 0:
                problems.add(resource, f"{back_path}.baseInterval", "must be longer than 0")
            if base and maximum is not None and maximum < base:
                problems.add(resource, f"{back_path}.maxInterval", "must not be shorter than baseInterval")
    return RetrySettings(resource.ref, num_retries, per_priority, triggers, codes, per_try, base, maximum)


def _apply_retries(items: dict[str, Resource], routes: list[Route], problems: Problems) -> list[Route]:
    """Attach each BackendTrafficPolicy ``retry`` to the rules of the routes it targets (the targets
    themselves are checked, and reported, with the policy's rate limits)."""
    by_route: dict[str, RetrySettings] = {}
    names = {route.name for route in routes}
    for resource in items.values():
        if resource.spec.get("retry") is None:
            continue
        settings = _retry_settings(resource, resource.spec["retry"], problems)
        if settings is None:
            continue
        targets: set[str] = set()
        for target in _list(resource, resource.spec.get("targetRefs"), "spec.targetRefs", problems):
            if not isinstance(target, dict):
                continue
            kind = target.get("kind", "AIGatewayRoute")
            if kind == "Gateway":
                targets.update(names)
            elif kind in _ROUTE_TARGET_KINDS and target.get("name") in names:
                targets.add(target["name"])
        for name in sorted(targets):
            if name in by_route:
                problems.add(
                    resource, "spec.retry", f"AIGatewayRoute/{name} already has retries from {by_route[name].policy}"
                )
                continue
            by_route[name] = settings
    return [
        replace(route, rules=tuple(replace(rule, retry=by_route[route.name]) for rule in route.rules))
        if route.name in by_route
        else route
        for route in routes
    ]
