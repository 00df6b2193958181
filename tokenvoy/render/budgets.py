"""Budgets, both halves side by side: what Envoy sends the rate limit service and what that service holds.

A budget becomes (1) rate-limit actions on every route it applies to (``rate_limits``): the descriptor a
request sends (``budget=<name>``, then ``route=<route>`` unless the rule is ``shared``, then one entry per
client selector: the header's value for Distinct, a fixed value for Exact) and how many hits it adds, when;
and (2) a branch of the envoyproxy/ratelimit descriptor tree (``render_ratelimit_config``) with the same
keys, level by level, and the limit on the last level. The two must agree entry for entry: a descriptor the
tree has no branch for is never limited. Change both together; tests/test_render.py sends the rendered
actions' descriptors through the rendered tree.
"""

from __future__ import annotations

import warnings
from typing import Any

with warnings.catch_warnings():
    # envoy-data-plane 2.2's generated validators use a form pydantic >= 2.12 deprecates; harmless here.
    warnings.simplefilter("ignore", DeprecationWarning)
    from envoy_data_plane.envoy.config.route.v3 import (
        HeaderMatcher,
        RateLimit,
        RateLimitAction,
        RateLimitActionGenericKey,
        RateLimitActionHeaderValueMatch,
        RateLimitActionMetaData,
        RateLimitActionMetaDataSource,
        RateLimitActionRequestHeaders,
        RateLimitHitsAddend,
    )
    from envoy_data_plane.envoy.type.matcher.v3 import StringMatcher
    from envoy_data_plane.envoy.type.metadata.v3 import MetadataKey, MetadataKeyPathSegment

from tokenvoy.config.model import Budget, BudgetSelectorType, GatewayConfig
from tokenvoy.contract import (
    AI_GATEWAY_METADATA_NAMESPACE,
    BUDGET_DESCRIPTOR_KEY,
    HOLD_DESCRIPTOR_KEY,
    HOLD_RESERVE,
    RATELIMIT_DOMAIN,
    RATELIMIT_FILTER_METADATA_NAMESPACE,
    ROUTE_DESCRIPTOR_KEY,
    hold_metadata_key,
)

# ---- Envoy: the actions on each route (the request's descriptor and its hits) ---------------------------


def _generic_key(key: str, value: str) -> RateLimitAction:
    return RateLimitAction(generic_key=RateLimitActionGenericKey(descriptor_key=key, descriptor_value=value))


def _budget_actions(budget: Budget, route_name: str) -> list[RateLimitAction]:
    """``budget=<name>``, then (unless ``shared``) ``route=<route>``, then one entry per client selector."""
    actions = [_generic_key(BUDGET_DESCRIPTOR_KEY, budget.name)]
    if not budget.shared:
        actions.append(_generic_key(ROUTE_DESCRIPTOR_KEY, route_name))
    for selector in budget.selectors:
        if selector.type is BudgetSelectorType.DISTINCT:
            headers = RateLimitActionRequestHeaders(header_name=selector.header, descriptor_key=selector.header)
            actions.append(RateLimitAction(request_headers=headers))
        else:
            match = RateLimitActionHeaderValueMatch(
                descriptor_key=selector.header,
                descriptor_value=selector.value,
                headers=[HeaderMatcher(name=selector.header, string_match=StringMatcher(exact=selector.value))],
            )
            actions.append(RateLimitAction(header_value_match=match))
    return actions


def dynamic_metadata_format(key: str, namespace: str = AI_GATEWAY_METADATA_NAMESPACE) -> str:
    """Envoy's substitution of a dynamic metadata value (extproc's costs, the RLS's holds)."""
    return f"%DYNAMIC_METADATA({namespace}:{key})%"


def _hold_entries(actions: list[RateLimitAction], budget: Budget, amount: RateLimitHitsAddend) -> list[RateLimit]:
    """Reserve ``amount`` at request time as a hold; at stream done release exactly the hold the RLS
    granted, from what it wrote into the ratelimit filter's metadata: the amount under the budget's name,
    the release entry under ``<name>_hold``. Both are absent when the check failed open or never ran: Envoy
    then sends no release at all (ratelimit/limiter.py)."""
    release = RateLimitActionMetaData(
        descriptor_key=HOLD_DESCRIPTOR_KEY,
        metadata_key=MetadataKey(
            key=RATELIMIT_FILTER_METADATA_NAMESPACE, path=[MetadataKeyPathSegment(key=hold_metadata_key(budget.name))]
        ),
        source=RateLimitActionMetaDataSource.DYNAMIC,
    )
    held = dynamic_metadata_format(budget.name, RATELIMIT_FILTER_METADATA_NAMESPACE)
    return [
        RateLimit(actions=[*actions, _generic_key(HOLD_DESCRIPTOR_KEY, HOLD_RESERVE)], hits_addend=amount),
        RateLimit(
            actions=[*actions, RateLimitAction(metadata=release)],
            apply_on_stream_done=True,
            hits_addend=RateLimitHitsAddend(format=held, is_negative_hits=True),
        ),
    ]


def rate_limits(budgets: list[Budget], route_name: str) -> list[RateLimit]:
    """Check-then-charge: check at request time (hits = request cost, 0 is a pure read), charge the cost at
    stream done. Reservation: hold extproc's estimate at request time (OVER_LIMIT iff it does not fit), at
    stream done release that hold and charge the actual. Concurrency: hold 1 per request until its stream
    ends (docs/ratelimit.md)."""
    entries = []
    for budget in budgets:
        actions = _budget_actions(budget, route_name)
        if budget.concurrency:
            entries += _hold_entries(actions, budget, RateLimitHitsAddend(number=1))
            continue
        reserved = budget.reserved_metadata_key
        if reserved and budget.response_cost_key:
            entries += _hold_entries(actions, budget, RateLimitHitsAddend(format=dynamic_metadata_format(reserved)))
            actual = dynamic_metadata_format(budget.response_cost_key)
            entries.append(
                RateLimit(actions=actions, apply_on_stream_done=True, hits_addend=RateLimitHitsAddend(format=actual))
            )
            continue
        entries.append(RateLimit(actions=actions, hits_addend=RateLimitHitsAddend(number=budget.request_cost)))
        if budget.response_cost_key:
            charge = RateLimitHitsAddend(format=dynamic_metadata_format(budget.response_cost_key))
            entries.append(RateLimit(actions=actions, apply_on_stream_done=True, hits_addend=charge))
    return entries


# ---- the rate limit service: the descriptor tree those descriptors walk ---------------------------------


def render_ratelimit_config(config: GatewayConfig) -> dict[str, Any]:
    """The envoyproxy/ratelimit config: per budget ``budget=<name>`` → (unless ``shared``) ``route`` (key only:
    one counter per route, Envoy Gateway's default) → one level per client selector (key only for Distinct,
    key and value for Exact), the limit on the last level; the same levels ``_budget_actions`` sends."""
    descriptors = []
    for budget in config.budgets:
        limit = {"unit": budget.unit.lower(), "requests_per_unit": budget.limit, "name": budget.name}
        node: dict[str, Any] = {"key": BUDGET_DESCRIPTOR_KEY, "value": budget.name}
        descriptors.append(node)
        if not budget.shared:
            child: dict[str, Any] = {"key": ROUTE_DESCRIPTOR_KEY}
            node["descriptors"] = [child]
            node = child
        for selector in budget.selectors:
            child = {"key": selector.header}
            if selector.type is BudgetSelectorType.EXACT:
                child["value"] = selector.value
            node["descriptors"] = [child]
            node = child
        node["rate_limit"] = limit
    return {"domain": RATELIMIT_DOMAIN, "descriptors": descriptors}
