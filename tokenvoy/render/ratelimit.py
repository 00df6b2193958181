"""Render the envoyproxy/ratelimit YAML for the budgets of a ``GatewayConfig``.

Descriptor tree per budget: ``budget=<name>`` → (unless the rule is ``shared``) ``route`` (key only: one
counter per route, Envoy Gateway's default) → one level per client selector (key-only for Distinct,
key+value for Exact), the limit on the last level. Mirrors the actions in ``render/bootstrap.py``.
"""

from __future__ import annotations

from typing import Any

from tokenvoy.config.model import BudgetSelectorType, GatewayConfig
from tokenvoy.contract import BUDGET_DESCRIPTOR_KEY, RATELIMIT_DOMAIN, ROUTE_DESCRIPTOR_KEY


def render_ratelimit_config(config: GatewayConfig) -> dict[str, Any]:
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
