"""``TokenvoyConfig`` (tokenvoy's own resource, optional, one per gateway): metrics labels, prices, cost
settings, tracing, Anthropic beta flags and per-client model access."""

from __future__ import annotations

import re
from dataclasses import replace

from tokenvoy.apis.backend_schemas import BACKEND_SCHEMAS
from tokenvoy.config.loader.cursor import Cursor, Problems, Resource
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
ANTHROPIC_BETA_SCHEMAS = tuple(name for name, schema in BACKEND_SCHEMAS.items() if schema.anthropic_betas)
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


def _first_spec(items: dict[str, Resource], problems: Problems) -> Cursor | None:
    """The ``spec`` of the TokenvoyConfig (the first: read_settings reports any other)."""
    resource = next(iter(items.values()), None)
    return None if resource is None else Cursor.spec(resource, problems)


def read_settings(items: dict[str, Resource], problems: Problems) -> tuple[MetricsSettings, tuple[ModelPrice, ...]]:
    """tokenvoy's own settings (metrics labels, prices): one ``TokenvoyConfig`` per gateway, optional."""
    if not items:
        return MetricsSettings(), ()
    first, *others = items.values()
    for extra in others:
        problems.add(extra, "", f"only one TokenvoyConfig is allowed, also defined: {first.ref} ({first.source})")
    root = Cursor.root(first, problems)
    if root.get("apiVersion") != TOKENVOY_API_VERSION:
        root["apiVersion"].report(f"must be {TOKENVOY_API_VERSION}, got {root.get('apiVersion')!r}")
    if not root["spec"].fields(_TOKENVOY_CONFIG_FIELDS):
        return MetricsSettings(), ()
    return _metrics_settings(root["spec"]["metrics"]), _pricing(root["spec"]["pricing"])


def read_cost_settings(items: dict[str, Resource], problems: Problems) -> CostSettings:
    """``spec.cost`` of the (first) TokenvoyConfig: ``catalog: bundled | none``, ``responseHeader: bool``."""
    spec = _first_spec(items, problems)
    if spec is None or not spec["cost"].present or not spec["cost"].fields(_COST_SETTINGS_FIELDS):
        return CostSettings()
    cost = spec["cost"]
    catalog = cost.get("catalog", "bundled")
    if catalog not in ("bundled", "none"):
        cost["catalog"].report(f"must be bundled or none, got {catalog!r}")
    return CostSettings(catalog=catalog != "none", response_header=cost["responseHeader"].boolean())


def read_tracing_settings(items: dict[str, Resource], problems: Problems) -> TracingSettings:
    """``spec.tracing`` of the (first) TokenvoyConfig; read_settings reports the rest of the resource."""
    spec = _first_spec(items, problems)
    if spec is None or not spec["tracing"].present or not spec["tracing"].fields(_TRACING_FIELDS):
        return TracingSettings()
    field = spec["tracing"]["sessionIdHeader"]
    header = field.string(required=False)
    if header is not None and not HEADER_NAME.fullmatch(header):
        field.report(f"must be an HTTP header name, got {header!r}")
        header = None
    return TracingSettings(header.lower() if header else None)


def read_anthropic_betas(items: dict[str, Resource], problems: Problems) -> dict[str, frozenset[str]]:
    """``spec.anthropicBetas``: schema → the ``anthropic-beta`` flags its backends are sent (``*``: all)."""
    spec = _first_spec(items, problems)
    if spec is None or not spec["anthropicBetas"].present:
        return {}
    betas = spec["anthropicBetas"]
    if not betas.fields(set(ANTHROPIC_BETA_SCHEMAS)):
        return {}
    allowed: dict[str, frozenset[str]] = {}
    for schema, flags in betas.entries():
        entries = [item.value for item in flags.items()]
        if not flags.present:
            flags.report("must be a list of beta flags (`*` for all), got nothing")
            continue
        bad = [flag for flag in entries if not isinstance(flag, str) or not flag.strip() or "," in flag]
        if bad:
            flags.report(f"each entry must be one beta flag (no commas), got {bad[0]!r}")
            continue
        allowed[schema] = frozenset(flag.strip() for flag in entries)
    return allowed


def with_anthropic_betas(backends: dict[str, Backend], allowed: dict[str, frozenset[str]]) -> dict[str, Backend]:
    if not allowed:
        return backends
    return {
        name: replace(backend, anthropic_betas=allowed[backend.schema]) if backend.schema in allowed else backend
        for name, backend in backends.items()
    }


def _metrics_settings(spec: Cursor) -> MetricsSettings:
    if not spec.present or not spec.fields(_METRICS_FIELDS):
        return MetricsSettings()
    client = spec["clientFromUserAgent"].boolean()
    taken = set(RESERVED_METRIC_LABELS) | ({CLIENT_LABEL} if client else set())
    labels: list[tuple[str, str]] = []
    for header, field in spec["requestHeaderLabels"].entries():
        label = field.value
        if not isinstance(header, str) or not header:
            field.report("the header name must be a non-empty string")
            continue
        if not isinstance(label, str) or not _LABEL_NAME.match(label) or label.startswith("__"):
            field.report(f"{label!r} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, no `__`)")
            continue
        if label in taken:
            field.report(f"label {label!r} is already used by tokenvoy's metrics or another header")
            continue
        taken.add(label)
        labels.append((header.lower(), label))
    max_values = spec["maxLabelValues"].integer(100, 1)
    return MetricsSettings(tuple(labels), max_values, client)


def _price(cursor: Cursor, required: bool) -> float | None:
    value = cursor.value
    if value is None:
        if required:
            cursor.report("required")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
        cursor.report(f"must be a number >= 0 (USD per million tokens), got {value!r}")
        return None
    return float(value)


def _pricing(cursor: Cursor) -> tuple[ModelPrice, ...]:
    prices: dict[str, ModelPrice] = {}
    for entry in cursor.items():
        if not entry.fields(_PRICE_FIELDS):
            continue
        model = entry["model"].string()
        input_price, output_price, cached_price, creation_price = (
            _price(entry[key], required)
            for key, required in (
                ("inputPerMillion", True),
                ("outputPerMillion", True),
                ("cachedInputPerMillion", False),
                ("cacheCreationInputPerMillion", False),
            )
        )
        if model is None or input_price is None or output_price is None:
            continue
        if model in prices:
            entry["model"].report(f"{model!r} is priced twice")
            continue
        prices[model] = ModelPrice(model, input_price, output_price, cached_price, creation_price)
    return tuple(prices.values())


_MODEL_ACCESS_FIELDS = {"header", "values", "models"}


def read_model_access(
    items: dict[str, Resource], client_auth: ClientAuth | None, problems: Problems
) -> tuple[ModelAccessRule, ...]:
    """``TokenvoyConfig`` ``spec.modelAccess``: per-client model allowlists (``name*``: a prefix)."""
    spec = _first_spec(items, problems)
    if spec is None or not spec["modelAccess"].present:
        return ()
    default_header = (
        client_auth.api_keys.client_id_header if client_auth and client_auth.api_keys else DEFAULT_CLIENT_ID_HEADER
    )
    rules = []
    for entry in spec["modelAccess"].items():
        if not entry.fields(_MODEL_ACCESS_FIELDS):
            continue
        header = entry.get("header", default_header)
        if not isinstance(header, str) or not HEADER_NAME.fullmatch(header):
            entry["header"].report(f"must be a header name, got {header!r}")
            continue
        values = _string_list(entry["values"])
        models = _string_list(entry["models"])
        if values is None or models is None:
            continue
        exact = frozenset(model for model in models if not model.endswith("*"))
        prefixes = tuple(model[:-1] for model in models if model.endswith("*"))
        if "" in prefixes:
            entry["models"].report("'*' alone allows every model: leave the client out instead")
            continue
        rules.append(ModelAccessRule(header.lower(), frozenset(values), exact, prefixes))
    return tuple(rules)


def _string_list(cursor: Cursor) -> list[str] | None:
    items = cursor.items()
    if not items:
        cursor.report("required: a non-empty list of strings")
        return None
    for item in items:
        if not isinstance(item.value, str) or not item.value:
            item.report(f"must be a non-empty string, got {item.value!r}")
            return None
    return [item.value for item in items]
