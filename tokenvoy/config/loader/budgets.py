"""Token budgets: the ``rateLimit`` of an Envoy Gateway ``BackendTrafficPolicy`` (client selectors, limit,
request and response cost) and tokenvoy's budget-mode annotations."""

from __future__ import annotations

from dataclasses import replace

from tokenvoy.config.loader.ai_gateway_route import ROUTE_TARGET_KINDS
from tokenvoy.config.loader.cursor import Cursor, Problems, Resource
from tokenvoy.config.model import (
    AI_GATEWAY_METADATA_NAMESPACE,
    Budget,
    BudgetSelector,
    BudgetSelectorType,
)

# Fields accepted without an effect on a standalone gateway, and why (INERT_FIELDS in __init__).
INERT = {
    "spec.targetRefs[].group": "the target's kind is checked; its group follows from it",
    "spec.rateLimit.global.rules[].xRateLimitHeaders": "DraftVersion03, the only value accepted, is always sent",
}

BUDGET_MODE_ANNOTATION = "tokenvoy.io/budget-mode"  # check (default) | reservation
DEFAULT_MAX_TOKENS_ANNOTATION = "tokenvoy.io/default-max-tokens"  # reservation estimate without max_tokens
_UNITS = {"Second", "Minute", "Hour", "Day", "Week", "Month", "Year"}
_TRAFFIC_POLICY_RULE_FIELDS = {"clientSelectors", "limit", "cost", "shadowMode", "shared", "xRateLimitHeaders"}
_CLIENT_SELECTOR_FIELDS = {"headers", "sourceCIDR", "methods", "path", "queryParams"}
_SELECTOR_HEADER_FIELDS = {"name", "type", "value", "invert"}
_LIMIT_FIELDS = {"requests", "unit", "fromMetadata"}
_COST_SPEC_FIELDS = {"request", "response"}
_COST_SOURCE_FIELDS = {"from", "number", "metadata"}


def read_budgets(
    items: dict[str, Resource], route_names: set[str], gateway_names: set[str], problems: Problems
) -> list[Budget]:
    budgets = []
    for resource in items.values():
        spec = Cursor.spec(resource, problems)
        for key, field in spec.entries():
            if key not in _TRAFFIC_POLICY_FIELDS:
                field.report(f"not supported by tokenvoy: {_TRAFFIC_POLICY_WHY}")
        targets: list[str] = []
        whole_gateway = False
        for target in spec["targetRefs"].items():
            target.mapping()
            target.unsupported({"sectionName": "a policy applies to whole routes"})
            name = target.get("name")
            kind = target.get("kind", "AIGatewayRoute")
            if kind == "Gateway":
                # Envoy AI Gateway's own examples attach token budgets to the Gateway: every route.
                if gateway_names and name not in gateway_names:
                    target["name"].report(f"Gateway/{name} does not exist")
                whole_gateway = True
            elif kind not in ROUTE_TARGET_KINDS:
                target["kind"].report(f"must be Gateway, AIGatewayRoute or HTTPRoute, got {kind!r}")
            elif name not in route_names:
                target["name"].report(f"AIGatewayRoute/{name} does not exist")
            else:
                targets.append(name)
        rate_limit = spec["rateLimit"]
        rate_limit.mapping({"type", "global", "local"})
        rate_limit.unsupported({"local": "only global (token budget) rules"})
        if rate_limit.get("type") not in (None, "Global"):
            rate_limit["type"].report("not supported by tokenvoy: only Global (token budget) rules")
        global_limit = rate_limit["global"]
        global_limit.mapping({"rules"})
        mode = Cursor.root(resource, problems)["metadata"]["annotations"]
        reservation, default_max_tokens = _budget_mode(mode)
        for rule_index, rule in enumerate(global_limit["rules"].items()):
            budget = _budget(rule, f"{resource.name}/rule/{rule_index}")
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
                    mode[BUDGET_MODE_ANNOTATION].report(_NO_RESPONSE_COST)
                budgets.append(budget)
    return budgets


_TRAFFIC_POLICY_FIELDS = {"targetRefs", "rateLimit", "retry"}
_TRAFFIC_POLICY_WHY = "here a BackendTrafficPolicy sets token budgets (rateLimit) and retries (retry) of its targetRefs"
_NO_RESPONSE_COST = "reservation needs every rule to have cost.response (the actual that replaces the estimate)"


def _budget_mode(annotations: Cursor) -> tuple[bool | None, int]:
    """tokenvoy's annotations on a BackendTrafficPolicy (the resource stays valid against the published CRD).

    The mode: False = check, True = reservation, None = concurrency (in-flight requests)."""
    if annotations.value is not None and not isinstance(annotations.value, dict):
        return False, 4096
    mode = str(annotations.get(BUDGET_MODE_ANNOTATION, "check")).lower()
    if mode not in ("check", "reservation", "concurrency"):
        annotations[BUDGET_MODE_ANNOTATION].report(f"must be check, reservation or concurrency, got {mode!r}")
    raw = annotations.get(DEFAULT_MAX_TOKENS_ANNOTATION, "4096")
    try:
        default_max_tokens = int(str(raw))
    except ValueError:
        default_max_tokens = 0
    if default_max_tokens < 1:
        annotations[DEFAULT_MAX_TOKENS_ANNOTATION].report(f"must be a positive integer, got {raw!r}")
    return (None if mode == "concurrency" else mode == "reservation"), max(default_max_tokens, 1)


def _budget(rule: Cursor, name: str) -> Budget | None:
    if not rule.fields(_TRAFFIC_POLICY_RULE_FIELDS):
        return None
    rule.unsupported({"shadowMode": "every budget is enforced"})
    if rule.get("xRateLimitHeaders") not in (None, "DraftVersion03"):
        rule["xRateLimitHeaders"].report("not supported by tokenvoy: x-ratelimit-* (DraftVersion03) is always sent")
    selectors = []
    for selector in rule["clientSelectors"].items():
        if not selector.fields(_CLIENT_SELECTOR_FIELDS):
            continue
        why = "budgets select clients by request headers only"
        selector.unsupported({"sourceCIDR": why, "methods": why, "path": why, "queryParams": why})
        for header in selector["headers"].items():
            if not header.fields(_SELECTOR_HEADER_FIELDS):
                continue
            header.unsupported({"invert": "inverted header matches"})
            header_name = header["name"].string()
            kind = header.get("type", "Exact")
            if kind not in ("Distinct", "Exact"):
                header["type"].report(f"must be Distinct or Exact, got {kind!r}")
                continue
            value = header.get("value")
            if kind == "Exact" and not value:
                header["value"].report("required when type is Exact")
                continue
            if header_name:
                selectors.append(BudgetSelector(header_name.lower(), BudgetSelectorType(kind), value))
    limit = rule["limit"]
    if not limit.present:
        limit.report("required")
        return None
    if not limit.fields(_LIMIT_FIELDS):
        return None
    limit.unsupported({"fromMetadata": "limits come from the configuration"})
    if not limit["requests"].present:
        limit["requests"].report("required")
    requests = limit["requests"].integer(0, 0)
    unit = limit.get("unit")
    if unit not in _UNITS:
        limit["unit"].report(f"must be one of {', '.join(sorted(_UNITS))}, got {unit!r}")
    # As in Envoy Gateway: without `cost.request` every request costs 1, without `cost.response` nothing is
    # charged when the response ends.
    cost = rule["cost"]
    if cost.present and not cost.fields(_COST_SPEC_FIELDS):
        return None
    request_cost = 1
    request = cost["request"]
    if request.present and request.fields(_COST_SOURCE_FIELDS):
        if request.get("from", "Number") != "Number":
            request["from"].report("only Number is supported for requests")
        else:
            request.unsupported({"metadata": "request costs are numbers"})
        request_cost = request["number"].integer(1, 0)
    response_key = None
    response = cost["response"]
    if response.present and response.fields(_COST_SOURCE_FIELDS):
        if response.get("from") != "Metadata":
            response["from"].report("only Metadata is supported for responses")
        else:
            response.unsupported({"number": "response costs come from metadata"})
            metadata = response["metadata"]
            metadata.mapping()
            if metadata.get("namespace") not in (None, AI_GATEWAY_METADATA_NAMESPACE):
                metadata["namespace"].report(
                    f"must be {AI_GATEWAY_METADATA_NAMESPACE} (extproc's costs), got {metadata.get('namespace')!r}"
                )
            response_key = metadata["key"].string()
    shared = rule["shared"].boolean()
    return Budget(
        name=name,
        selectors=tuple(selectors),
        limit=requests,
        unit=str(unit),
        request_cost=request_cost,
        response_cost_key=response_key,
        shared=shared,
    )
