"""Names and helpers of the rendered Envoy config that extproc, ratelimit and tests share.

The config itself is built from envoy-data-plane's typed messages in ``tokenvoy/render/bootstrap.py``.
That module takes about a second to import, so this one stays light: extproc imports the names below
(the endpoint attribute, the request identity, metadata keys) and must not pay for it. The functions
here that return rendered pieces (``render_bootstrap``, ``budget_rate_limits``, ``retry_policy``) import
it on first use and give the proto3 JSON Envoy reads.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from tokenvoy.config.model import Budget, GatewayConfig, Rule

EXTPROC_CLUSTER = "tokenvoy_extproc"
RATELIMIT_CLUSTER = "tokenvoy_ratelimit"
RATELIMIT_DOMAIN = "tokenvoy"
ROUTE_CONFIG_NAME = "tokenvoy"
ROLE_METADATA_KEY = "x-tokenvoy-role"
HOST_METADATA_NAMESPACE = "tokenvoy"
# One scalar attribute (a CEL path) is far cheaper for extproc than the whole metadata message,
# which Envoy sends as protobuf text.
ENDPOINT_ATTRIBUTE = f"xds.upstream_host_metadata.filter_metadata['{HOST_METADATA_NAMESPACE}']['endpoint']"
BUDGET_DESCRIPTOR_KEY = "budget"
# Envoy Gateway's default (`shared: false`): a budget counts per route, by this entry after `budget=<name>`.
ROUTE_DESCRIPTOR_KEY = "route"
# The trailing entry of a hold (reservation, concurrency) and where Envoy's ratelimit filter keeps the
# RLS's answer metadata (the hold tokens): ratelimit/limiter.py.
HOLD_DESCRIPTOR_KEY = "tokenvoy_hold"
RATELIMIT_FILTER_METADATA_NAMESPACE = "envoy.filters.http.ratelimit"
# Sent by Envoy to both ext_proc filters; together they identify a request (see extproc/registry.py).
IDENTITY_ATTRIBUTES = ("connection.id", "request.time", "request.id")
# Set by the upstream extproc on each attempt: the length of the body it sends, which an upstream
# header_mutation filter turns back into ``content-length`` (Envoy removes it when ext_proc replaces a body).
CONTENT_LENGTH_METADATA_KEY = "content_length"
# The largest request (and buffered answer) body the gateway takes: Envoy's buffer limit per connection.
# A larger request is answered 413 before any provider is contacted; LLM bodies (long histories, images,
# batches of embeddings) are far larger than Envoy's 1 MiB default.
MAX_BODY_BYTES = 50 * 1024 * 1024
# gRPC messages between Envoy and extproc carry a whole body (the client's, the translated one, the
# provider's answer or its translation) plus headers and attributes; a translation may grow a body. Both
# ends allow twice the body limit, so no body Envoy accepts fails on grpcio's 4 MiB default.
EXTPROC_MAX_MESSAGE_BYTES = 2 * MAX_BODY_BYTES + 1024 * 1024


# Client API keys (SecurityPolicy apiKeyAuth): Envoy's api_key_auth filter gets its config, plaintext keys
# included, from extproc over ECDS (gRPC), never from a rendered file (docs/auth.md).
CLIENT_KEYS_FILTER = "tokenvoy.client_api_keys"
API_KEY_AUTH_TYPE_URL = "type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth"


@dataclass(frozen=True)
class EnvoyOptions:
    extproc_address: str  # "unix:/path" or "host:port"
    ratelimit_address: str
    admin_port: int = 9901
    # Envoy's admin on this Unix socket (mode 0600) instead of 127.0.0.1:admin_port (tokenvoy run)
    admin_socket: str | None = None
    access_log_path: str = "/dev/stdout"
    ratelimit_timeout_ms: int = 200
    extproc_message_timeout_ms: int = 10_000
    route_timeout_s: int = 300
    max_downstream_connections: int = 50_000


def endpoint_id(rule: Rule, ref_index: int) -> str:
    """Names one backendRef of one rule: what the upstream filter gets to know which backend was picked.

    The backend's name is part of it, so across a config reload one id never means two backends: an
    Envoy still on the previous config and an extproc already on the next agree on where a request goes.
    """
    return f"{rule.name}/ref/{ref_index}/{rule.backend_refs[ref_index].backend}"


def cluster_name(rule: Rule) -> str:
    return f"rule/{rule.name}"


# Failures worth another backend: provider errors and overload, resets, refused connections.
RETRY_ON = "5xx,reset,connect-failure,refused-stream,retriable-status-codes"
RETRIABLE_STATUS_CODES = [429]
# Envoy Gateway's `numRetries` default, for a one-backend rule whose policy sets no number.
DEFAULT_NUM_RETRIES = 2
DEFAULT_BACKOFF_MS = (10, 100)


def duration(milliseconds: int) -> str:
    """A protobuf JSON duration: ``30s``, ``0.500s`` (what the rendered config holds)."""
    if milliseconds % 1000 == 0:
        return f"{milliseconds // 1000}s"
    return f"{milliseconds / 1000:.3f}s"


# Where distributions keep the system CA bundle (Debian/Ubuntu/Alpine, RHEL/Fedora, openSUSE, macOS).
_SYSTEM_CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
)


def system_ca_bundle() -> str:
    """The system CA bundle Envoy verifies providers with: the first that exists here (Envoy runs on the
    machine that renders), else Python's default, else the Debian path (the container image's)."""
    for path in (*_SYSTEM_CA_BUNDLES, ssl.get_default_verify_paths().cafile):
        if path and os.path.isfile(path):
            return path
    return _SYSTEM_CA_BUNDLES[0]


def _typed() -> ModuleType:
    """``tokenvoy.render.bootstrap``, imported on first use."""
    from tokenvoy.render import bootstrap

    return bootstrap


def render_bootstrap(config: GatewayConfig, options: EnvoyOptions) -> dict[str, Any]:
    """The self-contained bootstrap (everything static) as the JSON Envoy reads."""
    typed = _typed()
    return typed.to_json(typed.static_bootstrap(config, options))


def budget_rate_limits(budgets: list[Budget], route_name: str = "llm") -> list[dict[str, Any]]:
    """The ``RateLimitPerRoute.rate_limits`` entries of these budgets on one route (``budgets.rate_limits``)."""
    typed = _typed()
    return [typed.to_json(entry) for entry in typed.rate_limits(budgets, route_name)]


def retry_policy(rule: Rule) -> dict[str, Any] | None:
    """The route's retry policy (fallback across the rule's backends), see ``bootstrap.retry_policy``."""
    typed = _typed()
    policy = typed.retry_policy(rule)
    return None if policy is None else typed.to_json(policy)


def _local_reply_config() -> dict[str, Any]:
    typed = _typed()
    return typed.to_json(typed.local_reply_config())
