"""Prometheus metrics for every request extproc routes: the OpenTelemetry GenAI metrics, cost and overhead.

Names, units, attributes and bucket boundaries follow the OTel GenAI semantic conventions
(https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-metrics/), exported under the names, labels and
label values Envoy AI Gateway's extproc gives them. Its OpenTelemetry Prometheus exporter turns dots into
underscores and adds a unit suffix only for units it knows (``s`` → ``_seconds``); ``token`` is not one of
them, so the token histogram has no suffix. tokenvoy's own metrics carry a ``tokenvoy_`` prefix:

=========================================  =================================================  ============
OTel instrument (unit)                     Prometheus family                                  kind
=========================================  =================================================  ============
``gen_ai.client.token.usage`` (token)      ``gen_ai_client_token_usage``                      histogram
``gen_ai.server.request.duration`` (s)     ``gen_ai_server_request_duration_seconds``         histogram
``gen_ai.server.time_to_first_token``      ``gen_ai_server_time_to_first_token_seconds``      histogram
``gen_ai.server.time_per_output_token``    ``gen_ai_server_time_per_output_token_seconds``    histogram
(tokenvoy) cost in USD                     ``tokenvoy_cost_usd_total``                        counter
(tokenvoy) time inside tokenvoy            ``tokenvoy_gateway_overhead_seconds``              histogram
=========================================  =================================================  ============

The observer runs once per request on the event loop, so it does no I/O and little work: a few dict
lookups to build the label values and one ``observe`` per series.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

from tokenvoy.apis.backend_schemas import BACKEND_SCHEMAS
from tokenvoy.apis.client_apis import CLIENT_APIS, ClientAPI
from tokenvoy.config.model import MetricsSettings
from tokenvoy.extproc.observe import CompletedRequest

# `_created` series double the series count and most scrapers ignore them in the text format.
disable_created_metrics()

# Explicit bucket boundaries from the GenAI semantic conventions.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
REQUEST_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
# Time to first token: the conventions' boundaries, extended to 60 s as Envoy AI Gateway does (long prompts).
TIME_TO_FIRST_TOKEN_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    15.0, 20.0, 30.0, 45.0, 60.0,
)  # fmt: skip
TIME_PER_OUTPUT_TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
# tokenvoy's own: a request spends ~0.1-5 ms in the handlers, so the buckets start at 50 µs.
GATEWAY_OVERHEAD_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)

OPERATION = "gen_ai_operation_name"
PROVIDER = "gen_ai_provider_name"
ORIGINAL_MODEL = "gen_ai_original_model"
REQUEST_MODEL = "gen_ai_request_model"
RESPONSE_MODEL = "gen_ai_response_model"
TOKEN_TYPE = "gen_ai_token_type"
ERROR_TYPE = "error_type"
CLIENT = "client"
OTHER = "other"  # a model the config does not name, or a capped label past max_label_values distinct values
UNKNOWN = "unknown"  # a model or provider not known (yet) when the request ended, as Envoy AI Gateway says
MAX_LABEL_VALUE_LENGTH = 128

# gen_ai.operation.name per client API and gen_ai.provider.name per AIServiceBackend schema: Envoy AI Gateway's
# values (the semantic conventions' where they have one), from the catalogs (tokenvoy/apis/).
OPERATIONS: Mapping[ClientAPI, str] = {api: spec.operation for api, spec in CLIENT_APIS.items()}
PROVIDERS: Mapping[str, str] = {name: schema.otel_provider for name, schema in BACKEND_SCHEMAS.items()}

_BASE_LABELS = (OPERATION, PROVIDER, ORIGINAL_MODEL, REQUEST_MODEL, RESPONSE_MODEL)


class LabelLimiter:
    """Keeps the first ``cap`` distinct values of one label and reports every later one as ``other``.

    Without it a header such as ``x-user-id`` (or a model name a provider answers with) would create a new
    series per value, without bound. The empty value (header absent) is free and never counted.
    """

    __slots__ = ("_cap", "_seen")

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        if not value:
            return ""
        if len(value) > MAX_LABEL_VALUE_LENGTH:
            value = value[:MAX_LABEL_VALUE_LENGTH]
        if value in self._seen:
            return value
        if len(self._seen) < self._cap:
            self._seen.add(value)
            return value
        return OTHER


def named_model(model: str | None, named: frozenset[str]) -> str:
    """A model the client chose, as a label: kept only when the config names it (see
    ``GatewayConfig.named_models``). A catch-all rule accepts any name; counting those as ``other`` keeps junk
    names from taking the label values that configured models need."""
    if not model:
        return UNKNOWN
    return model if model in named else OTHER


# (user-agent substring, client class), first match wins; matched on the lower-cased user agent.
_USER_AGENT_CLASSES = (
    ("claude-cli/", "claude-code"),
    ("claude-code", "claude-code"),
    ("cline/", "cline"),
    ("codex_cli_rs", "codex"),
    ("openai/python", "openai-python"),
    ("openai/js", "openai-node"),
    ("anthropic/python", "anthropic-python"),
    ("anthropic/js", "anthropic-node"),
    ("curl/", "curl"),
    ("python-httpx/", "python-httpx"),
    ("python-requests/", "python-requests"),
    ("mozilla/", "browser"),
)
CLIENT_CLASSES = (*dict.fromkeys(name for _, name in _USER_AGENT_CLASSES), OTHER)


@lru_cache(maxsize=512)
def classify_client(user_agent: str, title: str = "") -> str:
    """The client family from ``user-agent`` (and Cline's ``x-title``), never the raw string: a bounded label.

    Cline talks through the OpenAI Node SDK, so its user agent says ``OpenAI/JS``; it names itself in
    ``x-title: Cline`` instead.
    """
    if title.strip().lower() == "cline":
        return "cline"
    agent = user_agent.lower()
    for needle, name in _USER_AGENT_CLASSES:
        if needle in agent:
            return name
    return OTHER


class _Children:
    """``metric.labels(*values)``, memoised: prometheus_client re-validates the labels on every call (~3 µs).

    Bounded like the series themselves, since every label value is capped or comes from a fixed set.
    """

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: Histogram | Counter) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, values: tuple[str, ...]) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class PrometheusObserver:
    """A ``RequestObserver`` that turns each ``CompletedRequest`` into metric updates in ``registry``."""

    def __init__(
        self,
        settings: MetricsSettings | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        settings = settings or MetricsSettings()
        self.registry = registry if registry is not None else CollectorRegistry()
        self._header_labels = settings.request_header_labels
        self._client = settings.client_from_user_agent
        cap = settings.max_label_values
        self._limiters = {header: LabelLimiter(cap) for header, _ in self._header_labels}
        self._response_models = LabelLimiter(cap)
        extra = tuple(label for _, label in self._header_labels) + ((CLIENT,) if self._client else ())
        self.extra_labels = extra
        registry = self.registry
        self.token_usage = Histogram(
            "gen_ai_client_token_usage",
            "Number of tokens processed.",
            (*_BASE_LABELS, TOKEN_TYPE, *extra),
            buckets=TOKEN_BUCKETS,
            registry=registry,
        )
        self.request_duration = Histogram(
            "gen_ai_server_request_duration",
            "Generative AI server request duration: from the request headers to the last byte of the answer.",
            (*_BASE_LABELS, ERROR_TYPE, *extra),
            unit="seconds",
            buckets=REQUEST_DURATION_BUCKETS,
            registry=registry,
        )
        self.time_to_first_token = Histogram(
            "gen_ai_server_time_to_first_token",
            "Time to generate first token for successful streamed responses.",
            (*_BASE_LABELS, *extra),
            unit="seconds",
            buckets=TIME_TO_FIRST_TOKEN_BUCKETS,
            registry=registry,
        )
        self.time_per_output_token = Histogram(
            "gen_ai_server_time_per_output_token",
            "Time per output token generated after the first token for successful streamed responses.",
            (*_BASE_LABELS, *extra),
            unit="seconds",
            buckets=TIME_PER_OUTPUT_TOKEN_BUCKETS,
            registry=registry,
        )
        self.cost = Counter(
            "tokenvoy_cost_usd",
            "Cost of the tokens used, in USD, from the TokenvoyConfig price table.",
            (*_BASE_LABELS, *extra),
            registry=registry,
        )
        self.unpriced = Counter(
            "tokenvoy_unpriced_requests",
            "Requests with token usage but no price in the catalog (their USD cost is unknown, not zero).",
            (OPERATION, PROVIDER, "gen_ai_request_model"),
            registry=registry,
        )
        self.gateway_overhead = Histogram(
            "tokenvoy_gateway_overhead",
            "Time spent inside tokenvoy's ext_proc handlers per request, excluding the provider and the network.",
            (OPERATION, PROVIDER, ERROR_TYPE),
            unit="seconds",
            buckets=GATEWAY_OVERHEAD_BUCKETS,
            registry=registry,
        )
        self.extproc_messages = Counter(
            "tokenvoy_extproc_messages",
            "ext_proc messages Envoy sent on the router-level streams, by phase (docs/architecture.md).",
            ("phase",),
            registry=registry,
        )
        self._tokens = _Children(self.token_usage)
        self._duration = _Children(self.request_duration)
        self._ttft = _Children(self.time_to_first_token)
        self._tpot = _Children(self.time_per_output_token)
        self._cost = _Children(self.cost)
        self._unpriced = _Children(self.unpriced)
        self._overhead = _Children(self.gateway_overhead)
        self._messages = _Children(self.extproc_messages)

    def request_completed(self, request: CompletedRequest) -> None:
        api = request.api
        operation = (OPERATIONS.get(api) or api.rpartition(".")[2]) if api is not None else ""
        schema = request.schema
        provider = PROVIDERS.get(schema, schema.lower()) if schema else UNKNOWN
        error_type = request.error_type or ""
        self._overhead((operation, provider, error_type)).observe(request.gateway_seconds)
        for phase, count in (request.messages or {}).items():
            self._messages((phase,)).inc(count)
        if api is None:
            return  # not a GenAI operation (unknown path): only the overhead is counted
        base = (operation, provider, *self._model_labels(request))
        extra = self._extra_label_values(request.request_headers)
        labels = base + extra
        self._duration((*base, error_type, *extra)).observe(request.finished - request.started)
        usage = request.usage
        if usage is not None:
            tokens = self._tokens
            tokens((*base, "input", *extra)).observe(usage.input)
            tokens((*base, "output", *extra)).observe(usage.output)
            # Types most requests don't have are recorded only when present, so `_count` says how many had them.
            if usage.cached_input:
                tokens((*base, "cached_input", *extra)).observe(usage.cached_input)
            if usage.cache_creation_input:
                tokens((*base, "cache_creation_input", *extra)).observe(usage.cache_creation_input)
            if usage.reasoning:
                tokens((*base, "reasoning", *extra)).observe(usage.reasoning)
            if request.cost_usd_micros is not None:
                self._cost(labels).inc(request.cost_usd_micros / 1_000_000)
            else:
                self._unpriced((operation, provider, named_model(request.request_model, request.named_models))).inc()
        first_chunk_at = request.first_chunk_at
        if request.stream and first_chunk_at is not None and 200 <= request.status < 300:
            self._ttft(labels).observe(first_chunk_at - request.started)
            if usage is not None and usage.output > 1:
                self._tpot(labels).observe((request.finished - first_chunk_at) / (usage.output - 1))

    def _model_labels(self, request: CompletedRequest) -> tuple[str, str, str]:
        """(original, request, response) model labels. The client's names count only when the config names
        them; a response model the provider chose (a dated snapshot, say) is kept up to the label cap, unless
        it merely echoes a name the client made up."""
        named = request.named_models
        original = request.original_model
        sent = request.request_model
        answered = request.response_model
        if not answered:
            response = UNKNOWN
        elif answered in named:
            response = answered
        elif answered in (original, sent):
            response = OTHER
        else:
            response = self._response_models(answered)
        return named_model(original, named), named_model(sent, named), response

    def _extra_label_values(self, headers: Mapping[str, str]) -> tuple[str, ...]:
        values = [self._limiters[header](headers.get(header)) for header, _ in self._header_labels]
        if self._client:
            values.append(classify_client(headers.get("user-agent", ""), headers.get("x-title", "")))
        return tuple(values)


class StreamCounter:
    """Streams opened per filter role and extproc process: with ``--extproc-workers`` it shows how Envoy
    spreads the streams (one scrape reads every process's counts, prometheus-client's multiprocess mode)."""

    def __init__(self, registry: CollectorRegistry, worker: str = "0") -> None:
        counter = Counter(
            "tokenvoy_extproc_streams",
            "ext_proc streams opened, by filter role (router: one per request; upstream: one per attempt) and "
            "extproc process (tokenvoy run --extproc-workers).",
            ("role", "worker"),
            registry=registry,
        )
        self._children = {role: counter.labels(role, worker) for role in ("router", "upstream")}

    def opened(self, role: str) -> None:
        child = self._children.get(role)
        if child is not None:
            child.inc()
