"""A one-screen description of a loaded gateway config, for ``tokenvoy validate``."""

from __future__ import annotations

from tokenvoy.config.catalog import CATALOG_VERSION
from tokenvoy.config.model import MODEL_HEADER, BodyMutation, GatewayConfig, HeaderMatchType, HeaderMutation, Rule


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
    for index, (route, rule) in enumerate(config.rules()):
        refs = ", ".join(
            f"{ref.backend}"
            + (f" (weight {ref.weight})" if len(rule.backend_refs) > 1 else "")
            + (f" (priority {ref.priority})" if ref.priority else "")
            + (f" as {ref.model_name_override}" if ref.model_name_override else "")
            for ref in rule.backend_refs
        )
        lines.append(f"  {rule.name}: {_match_text(config, index)} -> {refs}")
        extras = ([f"hosts {', '.join(route.hostnames)}"] if route.hostnames else []) + _rule_extras(rule)
        if extras:
            lines.append(f"    {'; '.join(extras)}")
    models = config.exact_models()
    lines += ["", f"models: {', '.join(models) if models else 'any (a rule matches every model)'}", "", "backends:"]
    for backend in config.backends.values():
        endpoint = backend.endpoint
        scheme = "https" if endpoint.tls else "http"
        auth = f", {backend.security.type}" if backend.security else ""
        fake = ", fake provider" if backend.fake_provider else ""
        url = f"{scheme}://{endpoint.host}:{endpoint.port}{backend.path_prefix}"
        lines.append(f"  {backend.name}: {backend.schema} at {url}{auth}{fake}")
        edits = _mutation_text(backend.header_mutation, backend.body_mutation)
        if edits:
            lines.append(f"    {edits}")
    lines += ["", *_client_auth_lines(config)]
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
        mode = f", reservation mode (default max tokens {budget.default_max_tokens:,})" if budget.reservation else ""
        if budget.concurrency:
            charge, mode = "requests in flight", ", concurrency mode"
        mode += ", one counter for all its routes" if budget.shared else ", a counter per route"
        lines.append(f"  {budget.name}: {budget.limit:,} {charge} per {budget.unit.lower()} per {who} ({where}{mode})")
    lines += ["", *_observability_lines(config)]
    if config.ignored:
        lines += ["", "ignored:", *[f"  {line}" for line in config.ignored]]
    return "\n".join(lines)


def _seconds(milliseconds: int) -> str:
    return f"{milliseconds / 1000:g}s"


def _rule_extras(rule: Rule) -> list[str]:
    extras = []
    if rule.request_timeout_ms is not None:
        extras.append(f"timeout {_seconds(rule.request_timeout_ms)}")
    if rule.backend_request_timeout_ms is not None:
        extras.append(f"per-attempt timeout {_seconds(rule.backend_request_timeout_ms)}")
    if rule.stream_idle_timeout_ms is not None:
        extras.append(f"stream idle timeout {_seconds(rule.stream_idle_timeout_ms)}")
    retry = rule.retry
    if retry is not None:
        parts = []
        if retry.num_retries is not None:
            parts.append(f"{retry.num_retries} retries")
        if retry.triggers is not None:
            parts.append(f"on {','.join(retry.triggers)}")
        if retry.http_status_codes:
            parts.append(f"statuses {','.join(map(str, retry.http_status_codes))}")
        extras.append(f"retry ({retry.policy}): {' '.join(parts) or 'defaults'}")
    for ref in rule.backend_refs:
        edits = _mutation_text(ref.header_mutation, ref.body_mutation)
        if edits:
            extras.append(f"to {ref.backend}: {edits}")
    return extras


def _mutation_text(headers: HeaderMutation | None, body: BodyMutation | None) -> str:
    parts = []
    if headers is not None:
        parts += [f"set header {name}" for name, _ in headers.set]  # values may be secrets: names only
        parts += [f"remove header {name}" for name in headers.remove]
    if body is not None:
        parts += [f"set body .{name}" for name, _ in body.set]
        parts += [f"remove body .{name}" for name in body.remove]
    return ", ".join(parts)


def _observability_lines(config: GatewayConfig) -> list[str]:
    metrics = config.metrics
    labels = [f"{header} as {label}" for header, label in metrics.request_header_labels]
    if metrics.client_from_user_agent:
        labels.append("client from user-agent")
    lines = [
        f"metric labels: {', '.join(labels) if labels else 'none beyond the GenAI attributes'}"
        + (f" (at most {metrics.max_label_values} values each)" if labels else ""),
        _prices_line(config),
        f"trace session id header: {config.tracing.session_id_header or 'x-session-id (default)'}",
    ]
    return lines


def _prices_line(config: GatewayConfig) -> str:
    overrides = ", ".join(price.model for price in config.pricing)
    catalog = f"bundled catalog {CATALOG_VERSION}" if config.cost.catalog else "no catalog"
    header = "; x-tokenvoy-cost-usd on answers" if config.cost.response_header else ""
    return f"prices: {catalog}" + (f", overrides: {overrides}" if overrides else "") + header


def _client_auth_lines(config: GatewayConfig) -> list[str]:
    """Who may call: client ids and JWT providers (never a key), and the model allowlists."""
    auth = config.client_auth
    if auth is None:
        return ["clients: not authenticated (budgets trust the headers clients send)"]
    lines = [f"clients ({auth.policy}):"]
    if auth.api_keys is not None:
        keys = auth.api_keys
        clients = ", ".join(credential.client for credential in keys.credentials)
        lines.append(f"  API keys in {', '.join(keys.headers)}: {clients} (client id in {keys.client_id_header})")
    for provider in auth.jwt.providers if auth.jwt else ():
        jwks = provider.remote_jwks_uri or provider.local_jwks_file or "inline JWKS"
        claims = ", ".join(f"{claim} to {header}" for claim, header in provider.claim_to_headers)
        lines.append(f"  JWT {provider.name}: {jwks}" + (f"; claims {claims}" if claims else ""))
    for rule in config.model_access:
        lines.append(f"  models for {rule.header} in {', '.join(sorted(rule.values))}: {rule.describe()}")
    return lines
