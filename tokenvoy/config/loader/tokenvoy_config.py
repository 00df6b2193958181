"""``TokenvoyConfig`` (tokenvoy's own resource, optional, one per gateway): metrics labels, prices, cost
settings, tracing, Anthropic beta flags and per-client model access."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from tokenvoy.config.loader.cursor import Problems, Resource, _check_fields, _integer, _list, _mapping, _string
from tokenvoy.config.loader.security_policy import DEFAULT_CLIENT_ID_HEADER
from tokenvoy.config.loader.values import HEADER_NAME
from tokenvoy.config.model import (
    Backend,
    ClientAuth,
    CostSettings,
    MetricsSettings,
    ModelAccessRule,
    ModelPrice,
    TracingSettings,
)

TOKENVOY_API_VERSION = "tokenvoy.io/v1alpha1"
_TOKENVOY_CONFIG_FIELDS = {"metrics", "pricing", "cost", "tracing", "anthropicBetas", "modelAccess"}
_COST_SETTINGS_FIELDS = {"catalog", "responseHeader"}

# The schemas whose requests carry Anthropic's beta flags (header, InvokeModel body, Converse extra fields).
ANTHROPIC_BETA_SCHEMAS = ("Anthropic", "AWSAnthropic", "AWSBedrock", "GCPAnthropic")
_TRACING_FIELDS = {"sessionIdHeader"}
_METRICS_FIELDS = {"requestHeaderLabels", "maxLabelValues", "clientFromUserAgent"}
_PRICE_FIELDS = {
    "model",
    "inputPerMillion",
    "cachedInputPerMillion",
    "cacheCreationInputPerMillion",
    "outputPerMillion",
}
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

# Labels tokenvoy's own metrics already carry (tokenvoy.extproc.metrics), plus Prometheus' histogram/summary ones.
RESERVED_METRIC_LABELS = frozenset(
    {
        "gen_ai_operation_name",
        "gen_ai_provider_name",
        "gen_ai_original_model",
        "gen_ai_request_model",
        "gen_ai_response_model",
        "gen_ai_token_type",
        "error_type",
        "le",
        "quantile",
    }
)
CLIENT_LABEL = "client"


def _tokenvoy_config(items: dict[str, Resource], problems: Problems) -> tuple[MetricsSettings, tuple[ModelPrice, ...]]:
    """tokenvoy's own settings (metrics labels, prices): one ``TokenvoyConfig`` per gateway, optional."""
    if not items:
        return MetricsSettings(), ()
    first, *others = items.values()
    for extra in others:
        problems.add(extra, "", f"only one TokenvoyConfig is allowed, also defined: {first.ref} ({first.source})")
    resource = first
    api_version = resource.raw.get("apiVersion")
    if api_version != TOKENVOY_API_VERSION:
        problems.add(resource, "apiVersion", f"must be {TOKENVOY_API_VERSION}, got {api_version!r}")
    if not _check_fields(resource, resource.spec, "spec", _TOKENVOY_CONFIG_FIELDS, problems):
        return MetricsSettings(), ()
    return _metrics_settings(resource, problems), _pricing(resource, problems)


def _cost_settings(items: dict[str, Resource], problems: Problems) -> CostSettings:
    """``spec.cost`` of the (first) TokenvoyConfig: ``catalog: bundled | none``, ``responseHeader: bool``."""
    resource = next(iter(items.values()), None)
    value = resource.spec.get("cost") if resource is not None and isinstance(resource.spec, dict) else None
    if value is None or resource is None:
        return CostSettings()
    if not _check_fields(resource, value, "spec.cost", _COST_SETTINGS_FIELDS, problems):
        return CostSettings()
    catalog = value.get("catalog", "bundled")
    if catalog not in ("bundled", "none"):
        problems.add(resource, "spec.cost.catalog", f"must be bundled or none, got {catalog!r}")
    header = value.get("responseHeader", False)
    if not isinstance(header, bool):
        problems.add(resource, "spec.cost.responseHeader", f"must be true or false, got {header!r}")
        header = False
    return CostSettings(catalog=catalog != "none", response_header=header)


def _tracing_settings(items: dict[str, Resource], problems: Problems) -> TracingSettings:
    """``spec.tracing`` of the (first) TokenvoyConfig; _tokenvoy_config reports the rest of the resource."""
    spec = next(iter(items.values())).spec if items else None
    value = spec.get("tracing") if isinstance(spec, dict) else None
    if value is None:
        return TracingSettings()
    resource = next(iter(items.values()))
    if not _check_fields(resource, value, "spec.tracing", _TRACING_FIELDS, problems):
        return TracingSettings()
    header = _string(resource, value.get("sessionIdHeader"), "spec.tracing.sessionIdHeader", problems, False)
    if header is not None and not re.fullmatch(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+", header):
        problems.add(resource, "spec.tracing.sessionIdHeader", f"must be an HTTP header name, got {header!r}")
        header = None
    return TracingSettings(header.lower() if header else None)


def _anthropic_betas(items: dict[str, Resource], problems: Problems) -> dict[str, frozenset[str]]:
    """``spec.anthropicBetas``: schema → the ``anthropic-beta`` flags its backends are sent (``*``: all)."""
    spec = next(iter(items.values())).spec if items else None
    value = spec.get("anthropicBetas") if isinstance(spec, dict) else None
    if value is None:
        return {}
    resource = next(iter(items.values()))
    path = "spec.anthropicBetas"
    if not _check_fields(resource, value, path, set(ANTHROPIC_BETA_SCHEMAS), problems):
        return {}
    allowed: dict[str, frozenset[str]] = {}
    for schema, flags in value.items():
        where = f"{path}.{schema}"
        entries = _list(resource, flags, where, problems)
        if flags is None:
            problems.add(resource, where, "must be a list of beta flags (`*` for all), got nothing")
            continue
        bad = [flag for flag in entries if not isinstance(flag, str) or not flag.strip() or "," in flag]
        if bad:
            problems.add(resource, where, f"each entry must be one beta flag (no commas), got {bad[0]!r}")
            continue
        allowed[schema] = frozenset(flag.strip() for flag in entries)
    return allowed


def _with_anthropic_betas(backends: dict[str, Backend], allowed: dict[str, frozenset[str]]) -> dict[str, Backend]:
    if not allowed:
        return backends
    return {
        name: replace(backend, anthropic_betas=allowed[backend.schema]) if backend.schema in allowed else backend
        for name, backend in backends.items()
    }


def _metrics_settings(resource: Resource, problems: Problems) -> MetricsSettings:
    path = "spec.metrics"
    spec = resource.spec.get("metrics")
    if spec is None:
        return MetricsSettings()
    if not _check_fields(resource, spec, path, _METRICS_FIELDS, problems):
        return MetricsSettings()
    client = spec.get("clientFromUserAgent", False)
    if not isinstance(client, bool):
        problems.add(resource, f"{path}.clientFromUserAgent", f"must be true or false, got {client!r}")
        client = False
    taken = set(RESERVED_METRIC_LABELS) | ({CLIENT_LABEL} if client else set())
    labels: list[tuple[str, str]] = []
    headers = _mapping(resource, spec.get("requestHeaderLabels"), f"{path}.requestHeaderLabels", problems)
    for header, label in headers.items():
        label_path = f"{path}.requestHeaderLabels.{header}"
        if not isinstance(header, str) or not header:
            problems.add(resource, label_path, "the header name must be a non-empty string")
            continue
        if not isinstance(label, str) or not _LABEL_NAME.match(label) or label.startswith("__"):
            problems.add(
                resource, label_path, f"{label!r} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, no `__`)"
            )
            continue
        if label in taken:
            problems.add(
                resource, label_path, f"label {label!r} is already used by tokenvoy's metrics or another header"
            )
            continue
        taken.add(label)
        labels.append((header.lower(), label))
    max_values = _integer(resource, spec.get("maxLabelValues"), f"{path}.maxLabelValues", problems, 100, 1)
    return MetricsSettings(tuple(labels), max_values, client)


def _price(resource: Resource, value: Any, path: str, problems: Problems, required: bool) -> float | None:
    if value is None:
        if required:
            problems.add(resource, path, "required")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
        problems.add(resource, path, f"must be a number >= 0 (USD per million tokens), got {value!r}")
        return None
    return float(value)


def _pricing(resource: Resource, problems: Problems) -> tuple[ModelPrice, ...]:
    prices: dict[str, ModelPrice] = {}
    for index, entry in enumerate(_list(resource, resource.spec.get("pricing"), "spec.pricing", problems)):
        path = f"spec.pricing[{index}]"
        if not _check_fields(resource, entry, path, _PRICE_FIELDS, problems):
            continue
        model = _string(resource, entry.get("model"), f"{path}.model", problems)
        values = [
            _price(resource, entry.get(key), f"{path}.{key}", problems, required)
            for key, required in (
                ("inputPerMillion", True),
                ("outputPerMillion", True),
                ("cachedInputPerMillion", False),
                ("cacheCreationInputPerMillion", False),
            )
        ]
        input_price, output_price, cached_price, creation_price = values
        if model is None or input_price is None or output_price is None:
            continue
        if model in prices:
            problems.add(resource, f"{path}.model", f"{model!r} is priced twice")
            continue
        prices[model] = ModelPrice(model, input_price, output_price, cached_price, creation_price)
    return tuple(prices.values())


_MODEL_ACCESS_FIELDS = {"header", "values", "models"}


def _model_access(
    items: dict[str, Resource], client_auth: ClientAuth | None, problems: Problems
) -> tuple[ModelAccessRule, ...]:
    """``TokenvoyConfig`` ``spec.modelAccess``: per-client model allowlists (``name*``: a prefix)."""
    spec = next(iter(items.values())).spec if items else None
    value = spec.get("modelAccess") if isinstance(spec, dict) else None
    if value is None:
        return ()
    resource = next(iter(items.values()))
    default_header = (
        client_auth.api_keys.client_id_header if client_auth and client_auth.api_keys else DEFAULT_CLIENT_ID_HEADER
    )
    rules = []
    for index, entry in enumerate(_list(resource, value, "spec.modelAccess", problems)):
        path = f"spec.modelAccess[{index}]"
        if not _check_fields(resource, entry, path, _MODEL_ACCESS_FIELDS, problems):
            continue
        header = entry.get("header", default_header)
        if not isinstance(header, str) or not HEADER_NAME.match(header):
            problems.add(resource, f"{path}.header", f"must be a header name, got {header!r}")
            continue
        values = _string_list(resource, entry.get("values"), f"{path}.values", problems)
        models = _string_list(resource, entry.get("models"), f"{path}.models", problems)
        if values is None or models is None:
            continue
        exact = frozenset(model for model in models if not model.endswith("*"))
        prefixes = tuple(model[:-1] for model in models if model.endswith("*"))
        if "" in prefixes:
            problems.add(resource, f"{path}.models", "'*' alone allows every model: leave the client out instead")
            continue
        rules.append(ModelAccessRule(header.lower(), frozenset(values), exact, prefixes))
    return tuple(rules)


def _string_list(resource: Resource, value: Any, path: str, problems: Problems) -> list[str] | None:
    items = _list(resource, value, path, problems)
    if not items:
        problems.add(resource, path, "required: a non-empty list of strings")
        return None
    for index, item in enumerate(items):
        if not isinstance(item, str) or not item:
            problems.add(resource, f"{path}[{index}]", f"must be a non-empty string, got {item!r}")
            return None
    return items
