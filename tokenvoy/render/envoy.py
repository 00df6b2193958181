"""Render the Envoy bootstrap for a ``GatewayConfig``.

Wiring (DESIGN.md §3): listener → router-level ext_proc → ratelimit → router → one cluster per route
rule whose endpoints are the rule's backends (priority = fallback order, locality weight = split), each
cluster carrying the upstream ext_proc filter that translates and signs for whichever backend the
attempt reached.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from tokenvoy.config.model import (
    AI_GATEWAY_METADATA_NAMESPACE,
    MODEL_HEADER,
    Budget,
    BudgetSelectorType,
    Endpoint,
    GatewayConfig,
    HeaderMatchType,
    Rule,
)

EXTPROC_CLUSTER = "tokenvoy_extproc"
RATELIMIT_CLUSTER = "tokenvoy_ratelimit"
RATELIMIT_DOMAIN = "tokenvoy"
ROLE_METADATA_KEY = "x-tokenvoy-role"
HOST_METADATA_NAMESPACE = "tokenvoy"
# One scalar attribute (a CEL path) is far cheaper for extproc than the whole metadata message,
# which Envoy sends as protobuf text.
ENDPOINT_ATTRIBUTE = f"xds.upstream_host_metadata.filter_metadata['{HOST_METADATA_NAMESPACE}']['endpoint']"
BUDGET_DESCRIPTOR_KEY = "budget"
_TYPE = "@type"
# Sent by Envoy to both ext_proc filters; together they identify a request (see extproc/registry.py).
IDENTITY_ATTRIBUTES = ("connection.id", "request.time", "request.id")


@dataclass(frozen=True)
class EnvoyOptions:
    extproc_address: str  # "unix:/path" or "host:port"
    ratelimit_address: str
    admin_port: int = 9901
    access_log_path: str = "/dev/stdout"
    ratelimit_timeout_ms: int = 200
    extproc_message_timeout_ms: int = 10_000
    route_timeout_s: int = 300
    max_downstream_connections: int = 50_000


def _address(spec: str) -> dict[str, Any]:
    if spec.startswith("unix:"):
        return {"pipe": {"path": spec[len("unix:") :]}}
    host, _, port = spec.rpartition(":")
    return {"socket_address": {"address": host or "127.0.0.1", "port_value": int(port)}}


def _grpc_cluster(name: str, address: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                _TYPE: "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(address)}}]}],
        },
    }


def _ext_proc_filter(options: EnvoyOptions, role: str, processing_mode: dict[str, str], **extra: Any) -> dict:
    return {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": {
            _TYPE: "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {
                "envoy_grpc": {"cluster_name": EXTPROC_CLUSTER},
                "timeout": "30s",
                "initial_metadata": [{"key": ROLE_METADATA_KEY, "value": role}],
            },
            "failure_mode_allow": False,
            "allow_mode_override": True,
            "message_timeout": f"{options.extproc_message_timeout_ms / 1000}s",
            "processing_mode": processing_mode,
            **extra,
        },
    }


def _router_ext_proc(options: EnvoyOptions) -> dict[str, Any]:
    mode = {
        "request_header_mode": "SEND",
        "response_header_mode": "SEND",
        "request_body_mode": "BUFFERED",
        "response_body_mode": "BUFFERED",
        "request_trailer_mode": "SKIP",
        "response_trailer_mode": "SKIP",
    }
    return _ext_proc_filter(
        options,
        "router",
        mode,
        metadata_options={"receiving_namespaces": {"untyped": [AI_GATEWAY_METADATA_NAMESPACE]}},
        request_attributes=list(IDENTITY_ATTRIBUTES),
    )


def _upstream_ext_proc(options: EnvoyOptions) -> dict[str, Any]:
    mode = {
        "request_header_mode": "SEND",
        "response_header_mode": "SKIP",
        "request_body_mode": "NONE",
        "response_body_mode": "NONE",
        "request_trailer_mode": "SKIP",
        "response_trailer_mode": "SKIP",
    }
    return _ext_proc_filter(options, "upstream", mode, request_attributes=[*IDENTITY_ATTRIBUTES, ENDPOINT_ATTRIBUTE])


def _budget_actions(budget: Budget) -> list[dict[str, Any]]:
    actions: list[dict[str, Any]] = [
        {"generic_key": {"descriptor_key": BUDGET_DESCRIPTOR_KEY, "descriptor_value": budget.name}}
    ]
    for selector in budget.selectors:
        if selector.type is BudgetSelectorType.DISTINCT:
            actions.append({"request_headers": {"header_name": selector.header, "descriptor_key": selector.header}})
        else:
            actions.append(
                {
                    "header_value_match": {
                        "descriptor_key": selector.header,
                        "descriptor_value": selector.value,
                        "headers": [{"name": selector.header, "string_match": {"exact": selector.value}}],
                    }
                }
            )
    return actions


def _metadata_format(key: str) -> str:
    return f"%DYNAMIC_METADATA({AI_GATEWAY_METADATA_NAMESPACE}:{key})%"


def budget_rate_limits(budgets: list[Budget]) -> list[dict[str, Any]]:
    """Check-then-charge: check at request time (hits = request cost, 0 is a pure read), charge the tokens
    at stream done. Reservation: reserve extproc's estimate at request time (OVER_LIMIT iff it does not fit),
    at stream done refund it (``is_negative_hits``) and charge the actual (docs/ratelimit.md)."""
    rate_limits = []
    for budget in budgets:
        actions = _budget_actions(budget)
        reserved = budget.reserved_metadata_key
        if reserved and budget.response_cost_key:
            estimate = _metadata_format(reserved)
            rate_limits.append({"actions": actions, "hits_addend": {"format": estimate}})
            refund = {"format": estimate, "is_negative_hits": True}
            rate_limits.append({"actions": actions, "apply_on_stream_done": True, "hits_addend": refund})
            actual = {"format": _metadata_format(budget.response_cost_key)}
            rate_limits.append({"actions": actions, "apply_on_stream_done": True, "hits_addend": actual})
            continue
        rate_limits.append({"actions": actions, "hits_addend": {"number": budget.request_cost}})
        if budget.response_cost_key:
            metadata = _metadata_format(budget.response_cost_key)
            rate_limits.append({"actions": actions, "apply_on_stream_done": True, "hits_addend": {"format": metadata}})
    return rate_limits


def _header_matcher(match: Any) -> dict[str, Any]:
    if match.type is HeaderMatchType.REGULAR_EXPRESSION:
        return {"name": match.name, "string_match": {"safe_regex": {"regex": match.value}}}
    return {"name": match.name, "string_match": {"exact": match.value}}


def endpoint_id(rule: Rule, ref_index: int) -> str:
    """Names one backendRef of one rule: what the upstream filter gets to know which backend was picked."""
    return f"{rule.name}/ref/{ref_index}"


def cluster_name(rule: Rule) -> str:
    return f"rule/{rule.name}"


# Failures worth another backend: provider errors and overload, resets, refused connections.
RETRY_ON = "5xx,reset,connect-failure,refused-stream,retriable-status-codes"
RETRIABLE_STATUS_CODES = [429]


def duration(milliseconds: int) -> str:
    """A protobuf JSON duration: ``30s``, ``0.5s``."""
    if milliseconds % 1000 == 0:
        return f"{milliseconds // 1000}s"
    return f"{milliseconds / 1000:.3f}s"


# Envoy Gateway's `numRetries` default, for a one-backend rule whose policy sets no number.
DEFAULT_NUM_RETRIES = 2
DEFAULT_BACKOFF_MS = (10, 100)


def retry_policy(rule: Rule) -> dict[str, Any] | None:
    """Fallback: each retry goes to a host not tried yet, the next priority once one has failed.

    The upstream ext_proc filter runs again on every attempt, so the retried request is translated and
    signed for whichever backend it reaches. Bounded by the number of backends of the rule unless a
    BackendTrafficPolicy ``retry`` (``rule.retry``) says otherwise; each of its fields overrides one
    default. ``timeouts.backendRequest`` (else ``perRetry.timeout``) is the per-attempt timeout.
    """
    retry = rule.retry
    fallback = len(rule.backend_refs) > 1
    per_try = rule.backend_request_timeout_ms
    if per_try is None and retry is not None:
        per_try = retry.per_try_timeout_ms
    if retry is None and not fallback:
        return None if per_try is None else {"num_retries": 0, "per_try_timeout": duration(per_try)}
    triggers = RETRY_ON.split(",") if retry is None or retry.triggers is None else list(retry.triggers)
    if retry is not None and retry.num_retries is not None:
        num_retries = retry.num_retries
    else:
        num_retries = len(rule.backend_refs) - 1 if fallback else DEFAULT_NUM_RETRIES
    policy: dict[str, Any] = {"retry_on": ",".join(triggers), "num_retries": num_retries}
    if "retriable-status-codes" in triggers:
        codes = retry.http_status_codes if retry is not None and retry.http_status_codes is not None else None
        policy["retriable_status_codes"] = list(codes if codes is not None else RETRIABLE_STATUS_CODES)
    if per_try is not None:
        policy["per_try_timeout"] = duration(per_try)
    if fallback:
        per_priority = retry.num_attempts_per_priority if retry is not None else None
        policy["retry_priority"] = {
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": {
                _TYPE: "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3."
                "PreviousPrioritiesConfig",
                "update_frequency": per_priority or 1,
            },
        }
        policy["retry_host_predicate"] = [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    _TYPE: "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ]
        policy["host_selection_retry_max_attempts"] = 5
    base, maximum = DEFAULT_BACKOFF_MS
    if retry is not None and retry.backoff_base_ms is not None:
        base = retry.backoff_base_ms
        maximum = max(maximum, 10 * base)  # Envoy's own default maximum is 10x the base
    if retry is not None and retry.backoff_max_ms is not None:
        maximum = retry.backoff_max_ms
        base = min(base, maximum)
    policy["retry_back_off"] = {"base_interval": duration(base), "max_interval": duration(maximum)}
    return policy


def _routes(config: GatewayConfig, options: EnvoyOptions) -> list[dict[str, Any]]:
    routes = []
    for route, rule in config.rules():
        budgets = [b for b in config.budgets if not b.routes or route.name in b.routes]
        per_filter: dict[str, Any] = {}
        if budgets:
            per_filter["envoy.filters.http.ratelimit"] = {
                _TYPE: "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute",
                "rate_limits": budget_rate_limits(budgets),
            }
        for match_index, headers in enumerate(rule.matches or ((),)):
            entry: dict[str, Any] = {
                "name": f"{rule.name}/match/{match_index}",
                "match": {"prefix": "/", "headers": [_header_matcher(h) for h in headers]},
                "route": {
                    "cluster": cluster_name(rule),
                    "timeout": _route_timeout(rule, options),
                    "auto_host_rewrite": True,
                },
            }
            if not headers:
                entry["match"].pop("headers")
            if policy := retry_policy(rule):
                entry["route"]["retry_policy"] = policy
            if per_filter:
                entry["typed_per_filter_config"] = per_filter
            routes.append(entry)
    return routes


def _route_timeout(rule: Rule, options: EnvoyOptions) -> str:
    """``timeouts.request`` (0 disables it, as in Envoy), else the gateway's default."""
    if rule.request_timeout_ms is not None:
        return duration(rule.request_timeout_ms)
    return f"{options.route_timeout_s}s"


def _backend_cluster(config: GatewayConfig, rule: Rule, options: EnvoyOptions) -> dict[str, Any]:
    localities = []
    socket_matches = []
    any_dns = False
    for ref_index, ref in enumerate(rule.backend_refs):
        if ref.weight == 0:
            continue  # Gateway API: a backendRef with weight 0 gets no traffic
        backend = config.backends[ref.backend]
        endpoint = backend.endpoint
        host_metadata: dict[str, Any] = {
            HOST_METADATA_NAMESPACE: {"endpoint": endpoint_id(rule, ref_index), "backend": backend.name}
        }
        if endpoint.tls:
            host_metadata["envoy.transport_socket_match"] = {"tokenvoy_tls": backend.name}
        if endpoint.tls and all(m["name"] != f"tls/{backend.name}" for m in socket_matches):
            socket_matches.append(
                {
                    "name": f"tls/{backend.name}",
                    "match": {"tokenvoy_tls": backend.name},
                    "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": _tls_context(endpoint)},
                }
            )
        any_dns = any_dns or not _is_ip(endpoint.host)
        localities.append(
            {
                "locality": {"region": f"{rule.name}/ref/{ref_index}"},
                "priority": ref.priority,
                "load_balancing_weight": ref.weight,
                "lb_endpoints": [
                    {
                        "endpoint": {
                            "address": {"socket_address": {"address": endpoint.host, "port_value": endpoint.port}},
                            "hostname": endpoint.host,
                        },
                        "metadata": {"filter_metadata": host_metadata},
                    }
                ],
            }
        )
    cluster: dict[str, Any] = {
        "name": cluster_name(rule),
        "type": "STRICT_DNS" if any_dns else "STATIC",
        "connect_timeout": "10s",
        "dns_lookup_family": "V4_PREFERRED",
        "common_lb_config": {"locality_weighted_lb_config": {}},
        "load_assignment": {"cluster_name": cluster_name(rule), "endpoints": localities},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                _TYPE: "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http_protocol_options": {}},
                "http_filters": [
                    _upstream_ext_proc(options),
                    {
                        "name": "envoy.filters.http.upstream_codec",
                        "typed_config": {
                            _TYPE: "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"
                        },
                    },
                ],
            }
        },
    }
    if socket_matches:
        cluster["transport_socket_matches"] = socket_matches
    return cluster


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
    import os
    import ssl

    for path in (*_SYSTEM_CA_BUNDLES, ssl.get_default_verify_paths().cafile):
        if path and os.path.isfile(path):
            return path
    return _SYSTEM_CA_BUNDLES[0]


def _tls_context(endpoint: Endpoint) -> dict[str, Any]:
    """UpstreamTlsContext: SNI, and a certificate that chains to the trusted CAs AND names the provider
    (Envoy checks no name unless told to)."""
    validation = endpoint.tls_validation
    trusted_ca = (
        {"inline_string": validation.ca_certificates}
        if validation is not None and validation.ca_certificates
        else {"filename": system_ca_bundle()}
    )
    context: dict[str, Any] = {
        _TYPE: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": {
            "validation_context": {
                "trusted_ca": trusted_ca,
                "match_typed_subject_alt_names": [
                    {"san_type": "IP_ADDRESS" if _is_ip(name) else "DNS", "matcher": {"exact": name}}
                    for name in endpoint.verified_names
                ],
            }
        },
    }
    if not _is_ip(endpoint.server_name):  # SNI carries host names only
        context["sni"] = endpoint.server_name
    return context


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _access_log(options: EnvoyOptions) -> list[dict[str, Any]]:
    ns = AI_GATEWAY_METADATA_NAMESPACE
    fields = {
        "start_time": "%START_TIME%",
        "method": "%REQ(:METHOD)%",
        # the path the client called, recorded by extproc (the upstream filter rewrites :path in place)
        "x-envoy-origin-path": f"%DYNAMIC_METADATA({ns}:original_path)%",
        "upstream_path": "%REQ(:PATH)%",
        "protocol": "%PROTOCOL%",
        "response_code": "%RESPONSE_CODE%",
        "response_flags": "%RESPONSE_FLAGS%",
        "response_code_details": "%RESPONSE_CODE_DETAILS%",
        "bytes_received": "%BYTES_RECEIVED%",
        "bytes_sent": "%BYTES_SENT%",
        "duration": "%DURATION%",
        "x-envoy-upstream-service-time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
        "user-agent": "%REQ(USER-AGENT)%",
        "x-request-id": "%REQ(X-REQUEST-ID)%",
        "x-user-id": "%REQ(X-USER-ID)%",
        ":authority": "%REQ(:AUTHORITY)%",
        "upstream_host": "%UPSTREAM_HOST%",
        "upstream_cluster": "%UPSTREAM_CLUSTER%",
        "route_name": "%ROUTE_NAME%",
        "genai_model_name": f"%REQ({MODEL_HEADER.upper()})%",
        "genai_model_name_override": f"%DYNAMIC_METADATA({ns}:model_name_override)%",
        "genai_response_model": f"%DYNAMIC_METADATA({ns}:response_model)%",
        "genai_backend_name": f"%DYNAMIC_METADATA({ns}:backend_name)%",
        "genai_tokens_input": f"%DYNAMIC_METADATA({ns}:llm_input_token)%",
        "genai_tokens_output": f"%DYNAMIC_METADATA({ns}:llm_output_token)%",
        "genai_tokens_total": f"%DYNAMIC_METADATA({ns}:llm_total_token)%",
        "genai_tokens_cached_input": f"%DYNAMIC_METADATA({ns}:llm_cached_input_token)%",
    }
    return [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                _TYPE: "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": options.access_log_path,
                "log_format": {"json_format": fields},
            },
        }
    ]


def _error_mapper(flags: list[str], status: int, error_type: str, message: str) -> dict[str, Any]:
    """Envoy's own replies (budget exceeded, provider unreachable) in the OpenAI error shape."""
    return {
        "filter": {"response_flag_filter": {"flags": flags}},
        "status_code": status,
        "body_format_override": {
            "json_format": {
                "type": "error",
                "error": {"type": error_type, "code": str(status), "message": message},
            },
            "content_type": "application/json",
        },
    }


def _extproc_failure_mapper() -> dict[str, Any]:
    """Envoy answers an empty 500 when extproc is unreachable or fails; say what happened instead."""
    mapper = _error_mapper([], 500, "gateway_unavailable", "the tokenvoy extproc service is unavailable or failed")
    mapper["filter"] = {
        "extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {
                _TYPE: "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                "expression": "response.code_details.startsWith('ext_proc_error')",
            },
        }
    }
    return mapper


# Set by the router-level extproc for ``/anthropic/v1/messages`` requests (value: the ClientAPI), so Envoy's
# own replies can be given in Anthropic's error shape even after an upstream filter rewrote ``:path``.
CLIENT_API_METADATA_KEY = "client_api"
ANTHROPIC_CLIENT_API = "anthropic.messages"
_ANTHROPIC_TYPES = {500: "api_error", 429: "rate_limit_error", 503: "api_error", 504: "timeout_error"}


def _anthropic_mapper(mapper: dict[str, Any], match_path: bool = False) -> dict[str, Any]:
    """The same reply in Anthropic's error shape, for requests the extproc marked as Anthropic clients'
    (and, with ``match_path``, for ``/anthropic/`` paths: extproc may have failed before marking)."""
    marked: dict[str, Any] = {
        "metadata_filter": {
            "matcher": {
                "filter": AI_GATEWAY_METADATA_NAMESPACE,
                "path": [{"key": CLIENT_API_METADATA_KEY}],
                "value": {"string_match": {"exact": ANTHROPIC_CLIENT_API}},
            },
            "match_if_key_not_found": False,
        }
    }
    if match_path:
        path = {"header_filter": {"header": {"name": ":path", "string_match": {"prefix": "/anthropic/"}}}}
        marked = {"or_filter": {"filters": [marked, path]}}
    status = mapper["status_code"]
    message = mapper["body_format_override"]["json_format"]["error"]["message"]
    return {
        "filter": {"and_filter": {"filters": [marked, copy.deepcopy(mapper["filter"])]}},  # no YAML anchors
        "status_code": status,
        "body_format_override": {
            "json_format": {"type": "error", "error": {"type": _ANTHROPIC_TYPES[status], "message": message}},
            "content_type": "application/json",
        },
    }


def _local_reply_config() -> dict[str, Any]:
    config = _openai_local_reply_config()
    openai = config["mappers"]
    # First match wins: the Anthropic-shaped variants go first.
    anthropic = [_anthropic_mapper(openai[0], match_path=True), *(_anthropic_mapper(m) for m in openai[1:])]
    return {"mappers": [*anthropic, *openai]}


def _openai_local_reply_config() -> dict[str, Any]:
    return {
        "mappers": [
            _extproc_failure_mapper(),
            _error_mapper(
                ["RL"], 429, "rate_limit_exceeded", "token budget exceeded for this client; retry after the reset"
            ),
            _error_mapper(
                ["UF", "UH", "URX", "UO", "UC"],
                503,
                "upstream_unavailable",
                "the LLM provider could not be reached: %RESPONSE_CODE_DETAILS%",
            ),
            _error_mapper(["UT"], 504, "upstream_timeout", "the LLM provider did not answer in time"),
        ]
    }


def render_bootstrap(config: GatewayConfig, options: EnvoyOptions) -> dict[str, Any]:
    http_filters = [_router_ext_proc(options)]
    if config.budgets:
        http_filters.append(
            {
                "name": "envoy.filters.http.ratelimit",
                "typed_config": {
                    _TYPE: "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
                    "domain": RATELIMIT_DOMAIN,
                    "timeout": f"{options.ratelimit_timeout_ms / 1000}s",
                    "failure_mode_deny": False,
                    "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
                    "rate_limit_service": {
                        "grpc_service": {"envoy_grpc": {"cluster_name": RATELIMIT_CLUSTER}},
                        "transport_api_version": "V3",
                    },
                },
            }
        )
    http_filters.append(
        {
            "name": "envoy.filters.http.router",
            "typed_config": {_TYPE: "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        }
    )
    hcm = {
        _TYPE: "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "tokenvoy",
        "codec_type": "AUTO",
        "access_log": _access_log(options),
        "local_reply_config": _local_reply_config(),
        "route_config": {
            "name": "tokenvoy",
            "virtual_hosts": [{"name": "tokenvoy", "domains": ["*"], "routes": _routes(config, options)}],
        },
        "http_filters": http_filters,
        "stream_idle_timeout": f"{options.route_timeout_s}s",
    }
    listener = {
        "name": "tokenvoy",
        "address": {"socket_address": {"address": config.listener.address, "port_value": config.listener.port}},
        # LLM bodies (long histories, images) are far larger than Envoy's 1 MiB default buffer.
        "per_connection_buffer_limit_bytes": 50 * 1024 * 1024,
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }
    clusters = [_grpc_cluster(EXTPROC_CLUSTER, options.extproc_address)]
    if config.budgets:
        clusters.append(_grpc_cluster(RATELIMIT_CLUSTER, options.ratelimit_address))
    clusters.extend(_backend_cluster(config, rule, options) for _, rule in config.rules())
    return {
        "node": {"id": "tokenvoy", "cluster": "tokenvoy"},
        # A cap on client connections protects Envoy's memory; unset, Envoy warns at every start.
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        _TYPE: "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3."
                        "DownstreamConnectionsConfig",
                        "max_active_downstream_connections": options.max_downstream_connections,
                    },
                }
            ]
        },
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": options.admin_port}}},
        "static_resources": {"listeners": [listener], "clusters": clusters},
    }
