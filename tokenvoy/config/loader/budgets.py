"""Token budgets: the ``rateLimit`` of an Envoy Gateway ``BackendTrafficPolicy`` (client selectors, limit,
request and response cost) and tokenvoy's budget-mode annotations."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tokenvoy.config.loader.ai_gateway_route import ROUTE_TARGET_KINDS
from tokenvoy.config.loader.cursor import (
    Problems,
    Resource,
    _check_fields,
    _integer,
    _list,
    _mapping,
    _string,
    _unsupported,
)
from tokenvoy.config.model import (
    AI_GATEWAY_METADATA_NAMESPACE,
    Budget,
    BudgetSelector,
    BudgetSelectorType,
)

BUDGET_MODE_ANNOTATION = "tokenvoy.io/budget-mode"  # check (default) | reservation
DEFAULT_MAX_TOKENS_ANNOTATION = "tokenvoy.io/default-max-tokens"  # reservation estimate without max_tokens
_UNITS = {"Second", "Minute", "Hour", "Day", "Week", "Month", "Year"}
_TRAFFIC_POLICY_RULE_FIELDS = {"clientSelectors", "limit", "cost", "shadowMode", "shared", "xRateLimitHeaders"}
_CLIENT_SELECTOR_FIELDS = {"headers", "sourceCIDR", "methods", "path", "queryParams"}
_SELECTOR_HEADER_FIELDS = {"name", "type", "value", "invert"}
_LIMIT_FIELDS = {"requests", "unit", "fromMetadata"}
_COST_SPEC_FIELDS = {"request", "response"}
_COST_SOURCE_FIELDS = {"from", "number", "metadata"}


def _budgets(
    items: dict[str, Resource], route_names: set[str], gateway_names: set[str], problems: Problems
) -> list[Budget]:
    budgets = []
    for resource in items.values():
        spec = resource.spec
        for key in spec:
            if key not in _TRAFFIC_POLICY_FIELDS:
                problems.add(resource, f"spec.{key}", f"not supported by tokenvoy: {_TRAFFIC_POLICY_WHY}")
        targets: list[str] = []
        whole_gateway = False
        for index, target in enumerate(_list(resource, spec.get("targetRefs"), "spec.targetRefs", problems)):
            target_path = f"spec.targetRefs[{index}]"
            target = _mapping(resource, target, target_path, problems)
            _unsupported(resource, target, target_path, {"sectionName": "a policy applies to whole routes"}, problems)
            name = target.get("name")
            kind = target.get("kind", "AIGatewayRoute")
            if kind == "Gateway":
                # Envoy AI Gateway's own examples attach token budgets to the Gateway: every route.
                if gateway_names and name not in gateway_names:
                    problems.add(resource, f"{target_path}.name", f"Gateway/{name} does not exist")
                whole_gateway = True
            elif kind not in ROUTE_TARGET_KINDS:
                problems.add(
                    resource, f"{target_path}.kind", f"must be Gateway, AIGatewayRoute or HTTPRoute, got {kind!r}"
                )
            elif name not in route_names:
                problems.add(resource, f"{target_path}.name", f"AIGatewayRoute/{name} does not exist")
            else:
                targets.append(name)
        rate_limit = _mapping(resource, spec.get("rateLimit"), "spec.rateLimit", problems)
        _check_fields(resource, rate_limit, "spec.rateLimit", {"type", "global", "local"}, problems)
        _unsupported(resource, rate_limit, "spec.rateLimit", {"local": "only global (token budget) rules"}, problems)
        if rate_limit.get("type") not in (None, "Global"):
            problems.add(resource, "spec.rateLimit.type", "not supported by tokenvoy: only Global (token budget) rules")
        global_limit = _mapping(resource, rate_limit.get("global"), "spec.rateLimit.global", problems)
        _check_fields(resource, global_limit, "spec.rateLimit.global", {"rules"}, problems)
        rules = _list(resource, global_limit.get("rules"), "spec.rateLimit.global.rules", problems)
        reservation, default_max_tokens = _budget_mode(resource, problems)
        for rule_index, rule in enumerate(rules):
            budget = _budget(resource, rule, rule_index, problems)
            if budget is not None:
                routes = () if whole_gateway else tuple(targets)
                budget = replace(
                    budget,
                    routes=routes,
                    reservation=reservation is True,
                    concurrency=reservation is None,
                    default_max_tokens=default_max_tokens,
                )
                if reservation and not budget.response_cost_key:
                    problems.add(resource, f"metadata.annotations.{BUDGET_MODE_ANNOTATION}", _NO_RESPONSE_COST)
                budgets.append(budget)
    return budgets


_TRAFFIC_POLICY_FIELDS = {"targetRefs", "rateLimit", "retry"}
_TRAFFIC_POLICY_WHY = "here a BackendTrafficPolicy sets token budgets (rateLimit) and retries (retry) of its targetRefs"
_NO_RESPONSE_COST = "reservation needs every rule to have cost.response (the actual that replaces the estimate)"


def _budget_mode(resource: Resource, problems: Problems) -> tuple[bool | None, int]:
    """tokenvoy's annotations on a BackendTrafficPolicy (the resource stays valid against the published CRD).

    The mode: False = check, True = reservation, None = concurrency (in-flight requests)."""
    annotations = resource.metadata.get("annotations") or {}
    if not isinstance(annotations, dict):
        return False, 4096
    mode = str(annotations.get(BUDGET_MODE_ANNOTATION, "check")).lower()
    if mode not in ("check", "reservation", "concurrency"):
        problems.add(
            resource,
            f"metadata.annotations.{BUDGET_MODE_ANNOTATION}",
            f"must be check, reservation or concurrency, got {mode!r}",
        )
    raw = annotations.get(DEFAULT_MAX_TOKENS_ANNOTATION, "4096")
    try:
        default_max_tokens = int(str(raw))
    except ValueError:
        default_max_tokens = 0
    if default_max_tokens < 1:
        path = f"metadata.annotations.{DEFAULT_MAX_TOKENS_ANNOTATION}"
        problems.add(resource, path, f"must be a positive integer, got {raw!r}")
    return (None if mode == "concurrency" else mode == "reservation"), max(default_max_tokens, 1)


def _budget(resource: Resource, rule: Any, rule_index: int, problems: Problems) -> Budget | None:
    path = f"spec.rateLimit.global.rules[{rule_index}]"
    if not _check_fields(resource, rule, path, _TRAFFIC_POLICY_RULE_FIELDS, problems):
        return None
    _unsupported(resource, rule, path, {"shadowMode": "every budget is enforced"}, problems)
    if rule.get("xRateLimitHeaders") not in (None, "DraftVersion03"):
        problems.add(
            resource,
            f"{path}.xRateLimitHeaders",
            "not supported by tokenvoy: x-ratelimit-* (DraftVersion03) is always sent",
        )
    selectors = []
    for selector_index, selector in enumerate(
        _list(resource, rule.get("clientSelectors"), f"{path}.clientSelectors", problems)
    ):
        selector_path = f"{path}.clientSelectors[{selector_index}]"
        if not _check_fields(resource, selector, selector_path, _CLIENT_SELECTOR_FIELDS, problems):
            continue
        why = "budgets select clients by request headers only"
        _unsupported(
            resource,
            selector,
            selector_path,
            {"sourceCIDR": why, "methods": why, "path": why, "queryParams": why},
            problems,
        )
        for header_index, header in enumerate(
            _list(resource, selector.get("headers"), f"{selector_path}.headers", problems)
        ):
            header_path = f"{selector_path}.headers[{header_index}]"
            if not _check_fields(resource, header, header_path, _SELECTOR_HEADER_FIELDS, problems):
                continue
            _unsupported(resource, header, header_path, {"invert": "inverted header matches"}, problems)
            name = _string(resource, header.get("name"), f"{header_path}.name", problems)
            kind = header.get("type", "Exact")
            if kind not in ("Distinct", "Exact"):
                problems.add(resource, f"{header_path}.type", f"must be Distinct or Exact, got {kind!r}")
                continue
            value = header.get("value")
            if kind == "Exact" and not value:
                problems.add(resource, f"{header_path}.value", "required when type is Exact")
                continue
            if name:
                selectors.append(BudgetSelector(name.lower(), BudgetSelectorType(kind), value))
    limit_path = f"{path}.limit"
    limit = rule.get("limit")
    if limit is None:
        problems.add(resource, limit_path, "required")
        return None
    if not _check_fields(resource, limit, limit_path, _LIMIT_FIELDS, problems):
        return None
    _unsupported(resource, limit, limit_path, {"fromMetadata": "limits come from the configuration"}, problems)
    if limit.get("requests") is None:
        problems.add(resource, f"{limit_path}.requests", "required")
    requests = _integer(resource, limit.get("requests"), f"{limit_path}.requests", problems, 0, 0)
    unit = limit.get("unit")
    if unit not in _UNITS:
        problems.add(resource, f"{limit_path}.unit", f"must be one of {', '.join(sorted(_UNITS))}, got {unit!r}")
    # As in Envoy Gateway: without `cost.request` every request costs 1, without `cost.response` nothing is
    # charged when the response ends.
    cost_path = f"{path}.cost"
    cost = rule.get("cost")
    cost = {} if cost is None else cost
    if not _check_fields(resource, cost, cost_path, _COST_SPEC_FIELDS, problems):
        return None
    request_cost = 1
    request = cost.get("request")
    if request is not None and _check_fields(resource, request, f"{cost_path}.request", _COST_SOURCE_FIELDS, problems):
        if request.get("from", "Number") != "Number":
            problems.add(resource, f"{cost_path}.request.from", "only Number is supported for requests")
        else:
            _unsupported(resource, request, f"{cost_path}.request", {"metadata": "request costs are numbers"}, problems)
        request_cost = _integer(resource, request.get("number"), f"{cost_path}.request.number", problems, 1, 0)
    response_key = None
    response = cost.get("response")
    if response is not None and _check_fields(
        resource, response, f"{cost_path}.response", _COST_SOURCE_FIELDS, problems
    ):
        if response.get("from") != "Metadata":
            problems.add(resource, f"{cost_path}.response.from", "only Metadata is supported for responses")
        else:
            why = {"number": "response costs come from metadata"}
            _unsupported(resource, response, f"{cost_path}.response", why, problems)
            metadata = _mapping(resource, response.get("metadata"), f"{cost_path}.response.metadata", problems)
            if metadata.get("namespace") not in (None, AI_GATEWAY_METADATA_NAMESPACE):
                problems.add(
                    resource,
                    f"{cost_path}.response.metadata.namespace",
                    f"must be {AI_GATEWAY_METADATA_NAMESPACE} (extproc's costs), got {metadata['namespace']!r}",
                )
            response_key = _string(resource, metadata.get("key"), f"{cost_path}.response.metadata.key", problems)
    shared = rule.get("shared", False)
    if not isinstance(shared, bool):
        problems.add(resource, f"{path}.shared", f"must be true or false, got {shared!r}")
        shared = False
    return Budget(
        name=f"{resource.name}/rule/{rule_index}",
        selectors=tuple(selectors),
        limit=requests,
        unit=str(unit),
        request_cost=request_cost,
        response_cost_key=response_key,
        shared=shared,
    )
