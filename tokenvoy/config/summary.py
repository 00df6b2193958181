"""A one-screen description of a loaded gateway config, for ``tokenvoy validate``."""

from __future__ import annotations

from tokenvoy.config.model import MODEL_HEADER, GatewayConfig, HeaderMatchType


def _match_text(config: GatewayConfig, rule_index: int) -> str:
    _, rule = config.rules()[rule_index]
    if not rule.matches:
        return "any request"
    alternatives = []
    for conjunction in rule.matches:
        parts = []
        for match in conjunction:
            operator = "~" if match.type is HeaderMatchType.REGULAR_EXPRESSION else "="
            name = "model" if match.name == MODEL_HEADER else match.name
            parts.append(f"{name}{operator}{match.value}")
        alternatives.append(" and ".join(parts) or "any request")
    return " or ".join(alternatives)


def summarize(config: GatewayConfig) -> str:
    lines = [f"listener: {config.listener.address}:{config.listener.port}", "", "routes:"]
    for index, (_route, rule) in enumerate(config.rules()):
        refs = ", ".join(
            f"{ref.backend}"
            + (f" (weight {ref.weight})" if len(rule.backend_refs) > 1 else "")
            + (f" (priority {ref.priority})" if ref.priority else "")
            + (f" as {ref.model_name_override}" if ref.model_name_override else "")
            for ref in rule.backend_refs
        )
        lines.append(f"  {rule.name}: {_match_text(config, index)} -> {refs}")
    models = config.exact_models()
    lines += ["", f"models: {', '.join(models) if models else 'any (a rule matches every model)'}", "", "backends:"]
    for backend in config.backends.values():
        endpoint = backend.endpoint
        scheme = "https" if endpoint.tls else "http"
        auth = f", {backend.security.type}" if backend.security else ""
        fake = ", fake provider" if backend.fake_provider else ""
        url = f"{scheme}://{endpoint.host}:{endpoint.port}{backend.path_prefix}"
        lines.append(f"  {backend.name}: {backend.schema} at {url}{auth}{fake}")
    costs = sorted({cost.metadata_key for route in config.routes for cost in route.costs})
    lines += ["", f"token metadata (llmRequestCosts): {', '.join(costs) if costs else 'none'}", "", "budgets:"]
    if not config.budgets:
        lines.append("  none")
    for budget in config.budgets:
        who = (
            " per ".join(s.header if s.value is None else f"{s.header}={s.value}" for s in budget.selectors)
            or "everyone together"
        )
        charge = budget.response_cost_key or f"{budget.request_cost} per request"
        where = ", ".join(budget.routes) if budget.routes else "every route"
        lines.append(f"  {budget.name}: {budget.limit:,} {charge} per {budget.unit.lower()} per {who} ({where})")
    if config.ignored:
        lines += ["", "ignored:", *[f"  {line}" for line in config.ignored]]
    return "\n".join(lines)
