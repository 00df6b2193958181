"""The normalised gateway configuration every tokenvoy component is built from.

Users write Envoy AI Gateway / Envoy Gateway resources (read by ``tokenvoy.config.loader``, one module per
kind); they are resolved once into these immutable objects, so renderers and the ext_proc hot path never look
at YAML again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

# AI_GATEWAY_METADATA_NAMESPACE is re-exported for the loader, which reads it from here; new code imports
# tokenvoy.contract.
from tokenvoy.contract import AI_GATEWAY_METADATA_NAMESPACE as AI_GATEWAY_METADATA_NAMESPACE
from tokenvoy.contract import MODEL_HEADER, RESERVED_SUFFIX, TOTAL_TOKEN_KEY


class CostType(StrEnum):
    INPUT_TOKEN = "InputToken"
    CACHED_INPUT_TOKEN = "CachedInputToken"
    CACHE_CREATION_INPUT_TOKEN = "CacheCreationInputToken"
    OUTPUT_TOKEN = "OutputToken"
    TOTAL_TOKEN = "TotalToken"
    REASONING_TOKEN = "ReasoningToken"
    CEL = "CEL"


class HeaderMatchType(StrEnum):
    EXACT = "Exact"
    REGULAR_EXPRESSION = "RegularExpression"


@dataclass(frozen=True)
class HeaderMatch:
    name: str
    value: str
    type: HeaderMatchType = HeaderMatchType.EXACT


@dataclass(frozen=True)
class HeaderMutation:
    """``headerMutation``: request headers set (lower-case name, value) and removed toward a backend."""

    set: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class BodyMutation:
    """``bodyMutation``: top-level JSON fields of the request set (field, encoded JSON value) and removed."""

    set: tuple[tuple[str, bytes], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class RetrySettings:
    """Envoy Gateway ``BackendTrafficPolicy.spec.retry``; None fields keep tokenvoy's fallback defaults."""

    policy: str  # "BackendTrafficPolicy/name", for messages
    num_retries: int | None = None
    num_attempts_per_priority: int | None = None
    triggers: tuple[str, ...] | None = None  # Envoy `retry_on` conditions
    http_status_codes: tuple[int, ...] | None = None
    per_try_timeout_ms: int | None = None
    backoff_base_ms: int | None = None
    backoff_max_ms: int | None = None


@dataclass(frozen=True)
class RequestCost:
    """One ``llmRequestCosts`` entry: a metadata key and how its value is computed from usage."""

    metadata_key: str
    type: CostType
    cel: str | None = None


@dataclass(frozen=True)
class Secret:
    """A credential resolved lazily, so ``render`` and ``validate`` never read or print it."""

    source: str  # "literal", "env" or "file"
    reference: str  # the literal, the variable name or the path
    origin: str  # "Secret/name key" for error messages (never the value)

    def read(self) -> str:
        import os

        if self.source == "literal":
            return self.reference
        if self.source == "env":
            value = os.environ.get(self.reference)
            if value is None:
                raise ValueError(f"{self.origin}: environment variable {self.reference} is not set")
            return value
        try:
            with open(self.reference, encoding="utf-8") as handle:
                return handle.read().strip()
        except OSError as exc:
            raise ValueError(f"{self.origin}: cannot read {self.reference}: {exc.strerror}") from exc

    def __repr__(self) -> str:  # never leak a literal secret through logs or tracebacks
        return f"Secret({self.source}:{self.origin})"


@dataclass(frozen=True)
class AWSCredentials:
    """``awsCredentials``: SigV4 signing for ``region``. Without ``credentials_file`` (the Secret's
    ``credentials`` key, an AWS shared-credentials file), botocore's default chain is used (AWS_* env vars …)."""

    region: str
    credentials_file: Secret | None = None
    profile: str = "default"


@dataclass(frozen=True)
class GCPCredentials:
    """``gcpCredentials``: an OAuth2 token from a service-account key (the Secret's ``service_account.json``
    key); without one, Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS …)."""

    project: str
    region: str
    service_account: Secret | None = None


@dataclass(frozen=True)
class AzureCredentials:
    """``azureCredentials``: an Entra ID token for a client secret (the Secret's ``client-secret`` key)."""

    client_id: str
    tenant_id: str
    client_secret: Secret


@dataclass(frozen=True)
class SecurityPolicy:
    name: str
    type: str  # APIKey | AzureAPIKey | AnthropicAPIKey | AWSCredentials | GCPCredentials | AzureCredentials
    api_key: Secret | None = None
    aws: AWSCredentials | None = None
    gcp: GCPCredentials | None = None
    azure: AzureCredentials | None = None

    @property
    def ref(self) -> str:
        return f"BackendSecurityPolicy/{self.name}"


@dataclass(frozen=True)
class TLSValidation:
    """How the provider's certificate is checked (``BackendTLSPolicy`` / ``Backend.spec.tls``)."""

    server_name: str  # SNI, and the name the certificate must carry when ``subject_alt_names`` is empty
    ca_certificates: str | None = None  # PEM bundle; None: the system CA bundle
    subject_alt_names: tuple[str, ...] = ()  # DNS names accepted instead of ``server_name``
    origin: str = ""  # "BackendTLSPolicy/name" (or "Backend/name"), for messages


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    tls: bool = False
    tls_validation: TLSValidation | None = None  # None: SNI and the verified name are ``host``, system CAs

    @property
    def server_name(self) -> str:
        return self.tls_validation.server_name if self.tls_validation else self.host

    @property
    def verified_names(self) -> tuple[str, ...]:
        """The DNS names the provider's certificate may carry; any other is refused."""
        validation = self.tls_validation
        if validation is None:
            return (self.host,)
        return validation.subject_alt_names or (validation.server_name,)


@dataclass(frozen=True)
class Backend:
    """An ``AIServiceBackend`` joined with the Envoy Gateway ``Backend`` it points to."""

    name: str
    schema: str  # OpenAI | Anthropic | AWSBedrock | ...
    schema_version: str | None
    path_prefix: str
    endpoint: Endpoint
    security: SecurityPolicy | None = None
    fake_provider: bool = False  # served by `tokenvoy testupstream` under `tokenvoy run`
    header_mutation: HeaderMutation | None = None
    body_mutation: BodyMutation | None = None
    # `tokenvoy.io/responses-api: chat-completions` on the AIServiceBackend: an OpenAI-compatible server without
    # the Responses API; `/v1/responses` requests reach it translated to Chat Completions.
    responses_via_chat: bool = False
    # The ``anthropic-beta`` flags this backend is sent (``TokenvoyConfig`` ``spec.anthropicBetas`` for its
    # schema; ``*`` lets every flag through); None: the schema's default (extproc/translate/anthropic_common.py).
    anthropic_betas: frozenset[str] | None = None


@dataclass(frozen=True)
class BackendRef:
    backend: str
    weight: int = 1
    priority: int = 0
    model_name_override: str | None = None
    header_mutation: HeaderMutation | None = None  # on top of the backend's (this one wins a conflict)
    body_mutation: BodyMutation | None = None


DEFAULT_MODELS_OWNED_BY = "Envoy AI Gateway"


@dataclass(frozen=True)
class Rule:
    """One ``AIGatewayRoute`` rule; ``name`` is unique across the gateway and names its Envoy cluster."""

    name: str
    matches: tuple[tuple[HeaderMatch, ...], ...]  # OR of ANDs; empty = match everything
    backend_refs: tuple[BackendRef, ...]
    request_timeout_ms: int | None = None  # `timeouts.request` (0 = none); None = the gateway default
    backend_request_timeout_ms: int | None = None  # `timeouts.backendRequest`: per attempt
    models_owned_by: str = DEFAULT_MODELS_OWNED_BY  # `/v1/models` owned_by
    models_created_at: int | None = None  # unix seconds for `/v1/models`; None = when the config was loaded
    retry: RetrySettings | None = None  # from a BackendTrafficPolicy `retry` targeting the route
    # `streamIdleTimeout`: an attempt that receives no byte for this long is reset (before the first byte: the
    # retry policy falls over to the next backend; mid-stream: the client gets a 504 / a cut stream).
    stream_idle_timeout_ms: int | None = None


@dataclass(frozen=True)
class Route:
    name: str
    rules: tuple[Rule, ...]
    costs: tuple[RequestCost, ...] = ()
    # `hostnames`: the Host values (lower case, `*.` a suffix wildcard) the route serves; empty = every host
    hostnames: tuple[str, ...] = ()


class BudgetSelectorType(StrEnum):
    DISTINCT = "Distinct"
    EXACT = "Exact"


@dataclass(frozen=True)
class BudgetSelector:
    header: str
    type: BudgetSelectorType
    value: str | None = None


@dataclass(frozen=True)
class Budget:
    """A token budget (``BackendTrafficPolicy`` global rate-limit rule) charged from a metadata key."""

    name: str
    selectors: tuple[BudgetSelector, ...]
    limit: int
    unit: str  # Second | Minute | Hour | Day | Month | Year
    request_cost: int = 0
    response_cost_key: str | None = TOTAL_TOKEN_KEY
    routes: tuple[str, ...] = ()  # empty = every route
    # Reservation mode (annotation `tokenvoy.io/budget-mode: reservation`): the request-time call reserves an
    # estimate (written by extproc under `reserved_metadata_key`), stream done refunds it and charges the actual.
    reservation: bool = False
    default_max_tokens: int = 4096  # the output estimate when a request names no max_tokens
    # Envoy Gateway's `shared`: False (the default) = one counter per route the policy targets; True = one
    # counter for all of them.
    shared: bool = False
    # `tokenvoy.io/budget-mode: concurrency`: `limit` is the number of requests in flight at once (per
    # selected client); each holds one slot from its request until its stream ends (docs/budgets.md).
    concurrency: bool = False

    @property
    def reserved_metadata_key(self) -> str | None:
        return f"{self.response_cost_key}{RESERVED_SUFFIX}" if self.reservation and self.response_cost_key else None


@dataclass(frozen=True)
class MetricsSettings:
    """``TokenvoyConfig`` ``spec.metrics``: which request headers become metric labels, and how many values each
    label may take (the rest are reported as ``other``) so a header cannot blow up Prometheus."""

    request_header_labels: tuple[tuple[str, str], ...] = ()  # (lower-case header name, label name), in config order
    max_label_values: int = 100
    client_from_user_agent: bool = False  # a `client` label: claude-code, cline, openai-python, curl, other…


@dataclass(frozen=True)
class TracingSettings:
    """``TokenvoyConfig`` ``spec.tracing``: where the OpenInference ``session.id`` comes from. Whether spans
    are exported at all is the standard ``OTEL_*`` variables' business (tokenvoy.extproc.tracing)."""

    session_id_header: str | None = None  # lower-case request header; None: x-session-id (or the env)


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens for one model (``TokenvoyConfig`` ``spec.pricing``), for the cost counter."""

    model: str
    input_per_million: float
    output_per_million: float
    cached_input_per_million: float | None = None  # None: cached input tokens cost the input price
    cache_creation_input_per_million: float | None = None  # None: cache writes cost the input price


@dataclass(frozen=True)
class CostSettings:
    """``TokenvoyConfig`` ``spec.cost``: which prices apply and whether clients see a request's cost."""

    catalog: bool = True  # the bundled catalog (tokenvoy/config/catalog.py) under `spec.pricing`'s overrides
    response_header: bool = False  # x-tokenvoy-cost-usd on answers whose cost is known before their headers


@dataclass(frozen=True)
class ApiKeyCredential:
    """One client key of an ``apiKeyAuth``: the client id (the Secret's key) and its API key (read lazily)."""

    client: str
    key: Secret


@dataclass(frozen=True)
class ApiKeyAuth:
    """Envoy Gateway ``SecurityPolicy.spec.apiKeyAuth``, rendered to Envoy's ``api_key_auth`` filter."""

    credentials: tuple[ApiKeyCredential, ...]
    headers: tuple[str, ...]  # lower-case; ``Bearer `` is stripped from a header value by Envoy
    client_id_header: str  # where Envoy writes the authenticated client id (budgets, metrics, model access)


@dataclass(frozen=True)
class JwtProvider:
    """One ``SecurityPolicy.spec.jwt.providers`` entry, rendered to a ``jwt_authn`` provider."""

    name: str
    issuer: str | None
    audiences: tuple[str, ...]
    local_jwks: str | None = None  # the JWKS JSON (inline or a ConfigMap's value)
    local_jwks_file: str | None = None  # a JWKS file Envoy reads (a ConfigMap value `${file:/path}`)
    remote_jwks_uri: str | None = None
    remote_jwks_endpoint: Endpoint | None = None  # `backendRefs`: where the JWKS is fetched (else the URI's host)
    cache_duration_ms: int = 300_000  # how long Envoy keeps a fetched remote JWKS (Envoy Gateway's 5 minutes)
    failed_refetch_ms: int | None = None  # how soon a failed fetch is retried (None: Envoy's 1 s)
    headers: tuple[tuple[str, str], ...] = ()  # (lower-case header, value prefix); empty: Authorization Bearer
    claim_to_headers: tuple[tuple[str, str], ...] = ()  # (claim, lower-case header)


@dataclass(frozen=True)
class JwtAuth:
    providers: tuple[JwtProvider, ...]
    optional: bool = False  # a request without a JWT passes (one with a bad JWT never does)


@dataclass(frozen=True)
class ClientAuth:
    """How clients authenticate to the gateway (one ``SecurityPolicy`` targeting the Gateway or every route)."""

    policy: str  # "SecurityPolicy/name", for messages
    api_keys: ApiKeyAuth | None = None
    jwt: JwtAuth | None = None

    def identity_headers(self) -> tuple[str, ...]:
        """Headers only Envoy's auth filters may set: a client's own values are removed before them."""
        names = [self.api_keys.client_id_header] if self.api_keys else []
        for provider in self.jwt.providers if self.jwt else ():
            names += [header for _, header in provider.claim_to_headers]
        return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class ModelAccessRule:
    """``TokenvoyConfig`` ``spec.modelAccess`` entry: callers whose ``header`` (set by Envoy from the key or a
    JWT claim) is one of ``values`` may use only these models (exact names, or names starting with a prefix)."""

    header: str
    values: frozenset[str]
    models: frozenset[str]
    prefixes: tuple[str, ...] = ()

    def allows(self, model: str) -> bool:
        return model in self.models or any(model.startswith(prefix) for prefix in self.prefixes)

    def describe(self) -> str:
        return ", ".join([*sorted(self.models), *(f"{prefix}*" for prefix in self.prefixes)])


@dataclass(frozen=True)
class Listener:
    address: str = "127.0.0.1"
    port: int = 1975


@dataclass(frozen=True)
class GatewayConfig:
    listener: Listener = field(default_factory=Listener)
    routes: tuple[Route, ...] = ()
    backends: dict[str, Backend] = field(default_factory=dict)
    budgets: tuple[Budget, ...] = ()
    sources: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()  # "kind/name (file): why" for resources a standalone gateway skips
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    pricing: tuple[ModelPrice, ...] = ()  # `spec.pricing`: overrides of the bundled catalog
    cost: CostSettings = field(default_factory=CostSettings)
    tracing: TracingSettings = field(default_factory=TracingSettings)
    client_auth: ClientAuth | None = None  # None: no authentication (trusted networks, `tokenvoy run`'s default)
    model_access: tuple[ModelAccessRule, ...] = ()

    def rules(self) -> list[tuple[Route, Rule]]:
        return [(route, rule) for route in self.routes for rule in route.rules]

    def exact_models(self) -> list[str]:
        """Model names matched exactly by some rule (regular expressions name no model)."""
        return sorted(
            {
                match.value
                for _, rule in self.rules()
                for conjunction in rule.matches
                for match in conjunction
                if match.name == MODEL_HEADER and match.type is HeaderMatchType.EXACT
            }
        )

    def named_models(self) -> frozenset[str]:
        """Every model name the config spells out: exact rule matches, backend ``modelNameOverride`` values and
        priced models. Metrics label any other model (one a catch-all rule let through) as ``other``."""
        overrides = {ref.model_name_override for _, rule in self.rules() for ref in rule.backend_refs}
        priced = {price.model for price in self.pricing}
        return frozenset(self.exact_models()) | {model for model in overrides if model} | priced
