"""The names Envoy's rendered config and the services (extproc, ratelimit) must agree on.

Envoy sits between the two sides: ``tokenvoy/render/`` writes a name into Envoy's config (a metadata key
the access log reads, an attribute the ext_proc filter sends, a cluster, a descriptor key), and
``extproc/`` or ``ratelimit/`` reads or writes the same name at run time. A name spelt differently on one
side fails silently (an empty access-log field, a budget charged 0), so each lives here once and both
sides import it. This module imports nothing from tokenvoy (docs/architecture.md, "The contract").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

# ---- dynamic metadata: what extproc writes, what Envoy's access log, rate limits and local replies read ----

# Envoy AI Gateway's namespace: access logs and policies written for it read the same keys here.
AI_GATEWAY_METADATA_NAMESPACE = "io.envoy.ai_gateway"
ORIGINAL_PATH_KEY = "original_path"  # the path the client called (the upstream filter rewrites :path)
BACKEND_NAME_KEY = "backend_name"  # the backend of the attempt that answered
ROUTE_NAME_KEY = "route_name"
MODEL_NAME_OVERRIDE_KEY = "model_name_override"  # the backendRef's modelNameOverride, when it has one
RESPONSE_MODEL_KEY = "response_model"  # the model the provider says answered
TOKEN_LATENCY_TTFT_KEY = "token_latency_ttft"  # ms to the first streamed chunk
TOKEN_LATENCY_ITL_KEY = "token_latency_itl"  # ms between output tokens
# The default llmRequestCosts keys (Envoy AI Gateway's names), which the rendered access log reads.
INPUT_TOKEN_KEY = "llm_input_token"
CACHED_INPUT_TOKEN_KEY = "llm_cached_input_token"
OUTPUT_TOKEN_KEY = "llm_output_token"
TOTAL_TOKEN_KEY = "llm_total_token"
RESERVED_SUFFIX = "_reserved"  # llm_total_token -> llm_total_token_reserved (reservation mode)
# The cost of a request from the price catalog, written by extproc on every route (no llmRequestCosts entry
# needed): exact micro-dollars for logs and dashboards, centi-cents (10^-4 USD) for USD budgets, whose limits
# then reach ~$429,496 where micro-dollars end at 2^32-1 µ$ ~ $4,294 (extproc/pricing.py).
COST_USD_MICROS_KEY = "llm_cost_usd_micros"
COST_USD_CENTICENTS_KEY = "llm_cost_usd_centicents"
COST_USD_KEY = "llm_cost_usd"  # the same cost in USD (a number), for the access log's genai_cost_usd
USD_COST_KEYS = (COST_USD_MICROS_KEY, COST_USD_CENTICENTS_KEY)
# Set by the upstream extproc on each attempt: the length of the body it sends, which an upstream
# header_mutation filter turns back into ``content-length`` (Envoy removes it when ext_proc replaces a body).
CONTENT_LENGTH_METADATA_KEY = "content_length"
# With several extproc processes (``tokenvoy run --extproc-workers N``) a request's router stream and its
# upstream attempts may reach different processes, so what one stream knows travels in Envoy's dynamic
# metadata instead of process memory (extproc/carried.py). The router stream writes the request's namespace
# (client API, path, model, stream, usage wanted, trace headers) with its request body answer; each attempt's
# upstream stream writes the attempt's (the endpoint it translated for, the client's values of the headers
# attempts changed), read by the next attempt and by the router stream when the answer comes back.
REQUEST_METADATA_NAMESPACE = "tokenvoy.request"
ATTEMPT_METADATA_NAMESPACE = "tokenvoy.attempt"

# ---- headers ------------------------------------------------------------------------------------------------

MODEL_HEADER = "x-ai-eg-model"  # set by the router extproc from the body; Envoy's routes match on it
ORIGINAL_PATH_HEADER = "x-ai-eg-original-path"
COST_HEADER = "x-tokenvoy-cost-usd"
# Set by the router extproc on a request it edited itself for a direct rule (tokenvoy/config/direct.py): the
# direct route matches on it and strips it; absent, the request takes the rule's route with the upstream filter.
DIRECT_HEADER = "x-tokenvoy-direct"  # the answer's cost, when cost.responseHeader asks for it
# The client identity header of the default config (budgets per user, the access log, traces' user.id).
USER_ID_HEADER = "x-user-id"
# gRPC initial metadata of each ext_proc filter: which of the two streams extproc serves.
ROLE_METADATA_KEY = "x-tokenvoy-role"
ROUTER_ROLE = "router"  # the router-level filter: one stream per request
UPSTREAM_ROLE = "upstream"  # the filter in each backend cluster: one stream per attempt

# ---- ext_proc attributes --------------------------------------------------------------------------------------

EXT_PROC_FILTER = "envoy.filters.http.ext_proc"  # the filter's name, also the key Envoy sends attributes under
# Sent by Envoy to both ext_proc filters; together they identify a request (see extproc/registry.py).
IDENTITY_ATTRIBUTES = ("connection.id", "request.time", "request.id")
# The backend cluster's endpoint metadata: which backendRef Envoy picked for this attempt.
HOST_METADATA_NAMESPACE = "tokenvoy"
ENDPOINT_METADATA_KEY = "endpoint"
BACKEND_METADATA_KEY = "backend"
# One scalar attribute (a CEL path) is far cheaper for extproc than the whole metadata message,
# which Envoy sends as protobuf text.
ENDPOINT_ATTRIBUTE = (
    f"xds.upstream_host_metadata.filter_metadata['{HOST_METADATA_NAMESPACE}']['{ENDPOINT_METADATA_KEY}']"
)

# ---- clusters, domain, rate-limit descriptors ---------------------------------------------------------------

EXTPROC_CLUSTER = "tokenvoy_extproc"
RATELIMIT_CLUSTER = "tokenvoy_ratelimit"
RATELIMIT_DOMAIN = "tokenvoy"
BUDGET_DESCRIPTOR_KEY = "budget"
# Envoy Gateway's default (`shared: false`): a budget counts per route, by this entry after `budget=<name>`.
ROUTE_DESCRIPTOR_KEY = "route"
# The trailing entry of a hold (reservation, concurrency): ``reserve`` at request time, ``release:<slot>`` at
# stream done, read back from where Envoy's ratelimit filter keeps the RLS's answer metadata
# (ratelimit/limiter.py).
HOLD_DESCRIPTOR_KEY = "tokenvoy_hold"
HOLD_RESERVE = "reserve"
HOLD_RELEASE = "release"
RATELIMIT_FILTER = "envoy.filters.http.ratelimit"
RATELIMIT_FILTER_METADATA_NAMESPACE = RATELIMIT_FILTER  # a filter keeps its metadata under its own name


def hold_metadata_key(budget_name: str) -> str:
    """Where the RLS puts a hold's release entry in the ratelimit filter's metadata (the amount goes under
    the budget's own name)."""
    return f"{budget_name}_hold"


# ---- client API keys over ECDS --------------------------------------------------------------------------------

# Client API keys (SecurityPolicy apiKeyAuth): Envoy's api_key_auth filter gets its config, plaintext keys
# included, from extproc over ECDS (gRPC), never from a rendered file (docs/auth.md).
CLIENT_KEYS_FILTER = "tokenvoy.client_api_keys"
API_KEY_AUTH_TYPE_URL = "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth"
TYPED_EXTENSION_CONFIG_TYPE_URL = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"

# ---- sizes ---------------------------------------------------------------------------------------------------

# The largest request (and buffered answer) body the gateway takes: Envoy's buffer limit per connection.
# A larger request is answered 413 before any provider is contacted; LLM bodies (long histories, images,
# batches of embeddings) are far larger than Envoy's 1 MiB default.
MAX_BODY_BYTES = 50 * 1024 * 1024
# gRPC messages between Envoy and extproc carry a whole body (the client's, the translated one, the
# provider's answer or its translation) plus headers and attributes; a translation may grow a body. Both
# ends allow twice the body limit, so no body Envoy accepts fails on grpcio's 4 MiB default.
EXTPROC_MAX_MESSAGE_BYTES = 2 * MAX_BODY_BYTES + 1024 * 1024


# ---- endpoint ids -------------------------------------------------------------------------------------------


class _BackendRef(Protocol):
    @property
    def backend(self) -> str: ...


class _Rule(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def backend_refs(self) -> Sequence[_BackendRef]: ...


def endpoint_id(rule: _Rule, ref_index: int) -> str:
    """Names one backendRef of one rule: what the upstream filter gets to know which backend was picked.

    The backend's name is part of it, so across a config reload one id never means two backends: an
    Envoy still on the previous config and an extproc already on the next agree on where a request goes.
    """
    return f"{rule.name}/ref/{ref_index}/{rule.backend_refs[ref_index].backend}"
