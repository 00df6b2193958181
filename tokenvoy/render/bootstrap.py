"""The Envoy config for a ``GatewayConfig``, built from envoy-data-plane's typed messages.

Every resource is a pydantic-validated betterproto2 message, so a misspelt field, a value of the wrong type
or two members of one oneof fail here, when the message is built, instead of in ``envoy --mode validate``
or at Envoy's start. :func:`to_json` turns a message into the proto3 JSON (snake_case names) Envoy reads.

Wiring: listener → router-level ext_proc → ratelimit → router → one cluster per route
rule whose endpoints are the rule's backends (priority = fallback order, locality weight = split), each
cluster carrying the upstream ext_proc filter that translates and signs for whichever backend the
attempt reached.

Two layouts share these builders. The static one (``tokenvoy render``, ``envoy/``) puts everything in
the bootstrap. The reloadable one (``tokenvoy run``) keeps only the extproc and ratelimit clusters static
and reads the listener, routes and backend clusters from files (filesystem LDS/RDS/CDS), which
``tokenvoy run`` replaces when the gateway config changes (docs/reload.md).

This module imports a large part of envoy-data-plane (about a second): extproc never imports it.
"""

from __future__ import annotations

import ipaddress
import warnings
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import betterproto2

with warnings.catch_warnings():
    # envoy-data-plane 2.2's generated validators use a form pydantic >= 2.12 deprecates; harmless here.
    warnings.simplefilter("ignore", DeprecationWarning)
    from envoy_data_plane.envoy.config.accesslog.v3 import (
        AccessLog,
    )
    from envoy_data_plane.envoy.config.bootstrap.v3 import (
        Admin,
        Bootstrap,
        BootstrapDynamicResources,
        BootstrapStaticResources,
    )
    from envoy_data_plane.envoy.config.cluster.v3 import (
        Cluster,
        ClusterCommonLbConfig,
        ClusterCommonLbConfigLocalityWeightedLbConfig,
        ClusterDiscoveryType,
        ClusterDnsLookupFamily,
        ClusterTransportSocketMatch,
        LoadBalancingPolicy,
        LoadBalancingPolicyPolicy,
        OutlierDetection,
    )
    from envoy_data_plane.envoy.config.common.mutation_rules.v3 import HeaderMutation as HeaderMutationRule
    from envoy_data_plane.envoy.config.core.v3 import (
        Address,
        ApiVersion,
        ConfigSource,
        DataSource,
        GrpcService,
        GrpcServiceEnvoyGrpc,
        HeaderValue,
        HeaderValueOption,
        HeaderValueOptionHeaderAppendAction,
        HealthCheck,
        HealthCheckGrpcHealthCheck,
        Http1ProtocolOptions,
        Http2ProtocolOptions,
        Locality,
        Metadata,
        Node,
        PathConfigSource,
        Pipe,
        SocketAddress,
        SubstitutionFormatString,
        TransportSocket,
        TypedExtensionConfig,
        WatchedDirectory,
    )
    from envoy_data_plane.envoy.config.endpoint.v3 import (
        ClusterLoadAssignment,
        Endpoint,
        LbEndpoint,
        LocalityLbEndpoints,
    )
    from envoy_data_plane.envoy.config.listener.v3 import Filter, FilterChain, Listener
    from envoy_data_plane.envoy.config.overload.v3 import OverloadManager, ResourceMonitor
    from envoy_data_plane.envoy.config.ratelimit.v3 import RateLimitServiceConfig
    from envoy_data_plane.envoy.config.route.v3 import (
        HeaderMatcher,
        RetryPolicy,
        RetryPolicyRetryBackOff,
        RetryPolicyRetryHostPredicate,
        RetryPolicyRetryPriority,
        Route,
        RouteAction,
        RouteConfiguration,
        RouteMatch,
        VirtualHost,
    )
    from envoy_data_plane.envoy.extensions.access_loggers.file.v3 import FileAccessLog
    from envoy_data_plane.envoy.extensions.filters.http.ext_proc.v3 import (
        ExternalProcessor,
        MetadataOptions,
        MetadataOptionsMetadataNamespaces,
        ProcessingMode,
        ProcessingModeBodySendMode,
        ProcessingModeHeaderSendMode,
    )
    from envoy_data_plane.envoy.extensions.filters.http.header_mutation.v3 import HeaderMutation, Mutations
    from envoy_data_plane.envoy.extensions.filters.http.ratelimit.v3 import (
        RateLimit as RateLimitFilter,
    )
    from envoy_data_plane.envoy.extensions.filters.http.ratelimit.v3 import (
        RateLimitPerRoute,
        RateLimitXRateLimitHeadersRfcVersion,
    )
    from envoy_data_plane.envoy.extensions.filters.http.router.v3 import Router
    from envoy_data_plane.envoy.extensions.filters.http.upstream_codec.v3 import UpstreamCodec
    from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
        HttpConnectionManager,
        HttpConnectionManagerCodecType,
        HttpFilter,
        Rds,
    )
    from envoy_data_plane.envoy.extensions.load_balancing_policies.least_request.v3 import (
        LeastRequest,
        LeastRequestSelectionMethod,
    )
    from envoy_data_plane.envoy.extensions.resource_monitors.downstream_connections.v3 import (
        DownstreamConnectionsConfig,
    )
    from envoy_data_plane.envoy.extensions.retry.host.previous_hosts.v3 import PreviousHostsPredicate
    from envoy_data_plane.envoy.extensions.retry.priority.previous_priorities.v3 import PreviousPrioritiesConfig
    from envoy_data_plane.envoy.extensions.transport_sockets.tls.v3 import (
        CertificateValidationContext,
        CommonTlsContext,
        SubjectAltNameMatcher,
        SubjectAltNameMatcherSanType,
        UpstreamTlsContext,
    )
    from envoy_data_plane.envoy.extensions.upstreams.http.v3 import (
        HttpProtocolOptions,
        HttpProtocolOptionsExplicitHttpConfig,
    )
    from envoy_data_plane.envoy.type.matcher.v3 import (
        RegexMatcher,
        StringMatcher,
    )
    from envoy_data_plane.google.protobuf import Any as AnyMessage
    from envoy_data_plane.google.protobuf import Struct

from tokenvoy.config.direct import direct_ref_index
from tokenvoy.config.model import (
    Budget,
    GatewayConfig,
    HeaderMatch,
    HeaderMatchType,
    Rule,
)
from tokenvoy.config.model import Endpoint as BackendEndpoint
from tokenvoy.contract import (
    AI_GATEWAY_METADATA_NAMESPACE,
    ATTEMPT_METADATA_NAMESPACE,
    BACKEND_METADATA_KEY,
    BACKEND_NAME_KEY,
    CACHED_INPUT_TOKEN_KEY,
    CONTENT_LENGTH_METADATA_KEY,
    COST_USD_KEY,
    DIRECT_HEADER,
    ENDPOINT_ATTRIBUTE,
    ENDPOINT_METADATA_KEY,
    EXT_PROC_FILTER,
    EXTPROC_CLUSTER,
    EXTPROC_MAX_MESSAGE_BYTES,
    HOST_METADATA_NAMESPACE,
    IDENTITY_ATTRIBUTES,
    INPUT_TOKEN_KEY,
    MAX_BODY_BYTES,
    MODEL_HEADER,
    MODEL_NAME_OVERRIDE_KEY,
    ORIGINAL_PATH_KEY,
    OUTPUT_TOKEN_KEY,
    RATELIMIT_CLUSTER,
    RATELIMIT_DOMAIN,
    RATELIMIT_FILTER,
    REQUEST_METADATA_NAMESPACE,
    RESPONSE_MODEL_KEY,
    ROLE_METADATA_KEY,
    ROUTER_ROLE,
    TOTAL_TOKEN_KEY,
    UPSTREAM_ROLE,
    USER_ID_HEADER,
    endpoint_id,
)
from tokenvoy.render.budgets import dynamic_metadata_format, rate_limits
from tokenvoy.render.client_auth import client_auth_filters, jwks_clusters
from tokenvoy.render.direct import direct_cluster_name, direct_headers_to_remove, direct_protocol_options
from tokenvoy.render.envoy import (
    DEFAULT_BACKOFF_MS,
    DEFAULT_NUM_RETRIES,
    RETRIABLE_STATUS_CODES,
    RETRY_ON,
    ROUTE_CONFIG_NAME,
    EnvoyOptions,
    cluster_name,
    system_ca_bundle,
)
from tokenvoy.render.local_replies import local_reply_config

_SNAKE = betterproto2.Casing.SNAKE
HCM_FILTER = "envoy.filters.network.http_connection_manager"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
LISTENER_NAME = "tokenvoy"


def to_json(message: betterproto2.Message) -> dict[str, Any]:
    """Proto3 JSON with the proto field names (snake_case), as in Envoy's docs; Envoy reads either casing."""
    return message.to_dict(casing=_SNAKE)


def _ms(milliseconds: int) -> timedelta:
    return timedelta(milliseconds=milliseconds)


def _any(message: betterproto2.Message) -> AnyMessage:
    return AnyMessage.pack(message)


def _struct(value: dict[str, Any]) -> Struct:
    return Struct.from_dict(value)


def _address(spec: str) -> Address:
    """``unix:/path`` or ``host:port`` (host defaults to loopback)."""
    if spec.startswith("unix:"):
        return Address(pipe=Pipe(path=spec[len("unix:") :]))
    host, _, port = spec.rpartition(":")
    return Address(socket_address=SocketAddress(address=host or "127.0.0.1", port_value=int(port)))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# ---- the gRPC services: extproc and ratelimit ------------------------------------------------------------


def _grpc_cluster(name: str, address: str) -> Cluster:
    http2 = HttpProtocolOptions(
        explicit_http_config=HttpProtocolOptionsExplicitHttpConfig(http2_protocol_options=Http2ProtocolOptions())
    )
    return Cluster(
        name=name,
        type=ClusterDiscoveryType.STATIC,
        connect_timeout=_ms(1000),
        typed_extension_protocol_options={HTTP_PROTOCOL_OPTIONS: _any(http2)},
        load_assignment=ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[LocalityLbEndpoints(lb_endpoints=[LbEndpoint(endpoint=Endpoint(address=_address(address)))])],
        ),
    )


def extproc_workers_cluster(addresses: tuple[str, ...]) -> Cluster:
    """Several extproc processes as the endpoints of one cluster (``tokenvoy run --extproc-workers``): each
    stream goes to the one with the fewest streams open (a full scan: N is small). One that refuses a
    connection (it died) is left out at once, for a second at first (outlier detection, local origin errors),
    and one that stops answering its gRPC health until it answers again (the runner restarts it)."""
    cluster = _grpc_cluster(EXTPROC_CLUSTER, addresses[0])
    endpoints = [LbEndpoint(endpoint=Endpoint(address=_address(address))) for address in addresses]
    cluster.load_assignment.endpoints = [LocalityLbEndpoints(lb_endpoints=endpoints)]
    least = LeastRequest(selection_method=LeastRequestSelectionMethod.FULL_SCAN)
    extension = TypedExtensionConfig(name="envoy.load_balancing_policies.least_request", typed_config=_any(least))
    policy = LoadBalancingPolicyPolicy(typed_extension_config=extension)
    cluster.load_balancing_policy = LoadBalancingPolicy(policies=[policy])
    cluster.outlier_detection = OutlierDetection(
        split_external_local_origin_errors=True,
        consecutive_local_origin_failure=1,
        enforcing_consecutive_local_origin_failure=100,
        base_ejection_time=_ms(1000),
        max_ejection_percent=100,
        successful_active_health_check_uneject_host=True,
    )
    cluster.health_checks = [
        HealthCheck(
            timeout=_ms(1000),
            interval=_ms(1000),
            unhealthy_threshold=1,
            healthy_threshold=1,
            no_traffic_interval=_ms(1000),
            grpc_health_check=HealthCheckGrpcHealthCheck(),
        )
    ]
    return cluster


def service_clusters(config: GatewayConfig, options: EnvoyOptions) -> list[Cluster]:
    """extproc always; ratelimit when there are budgets (no process serves it otherwise)."""
    workers = options.extproc_worker_addresses
    extproc = extproc_workers_cluster(workers) if workers else _grpc_cluster(EXTPROC_CLUSTER, options.extproc_address)
    clusters = [extproc]
    if config.budgets:
        clusters.append(_grpc_cluster(RATELIMIT_CLUSTER, options.ratelimit_address))
    return clusters


_SEND, _SKIP = ProcessingModeHeaderSendMode.SEND, ProcessingModeHeaderSendMode.SKIP

# Router level: headers both ways, bodies buffered (extproc switches a 200 stream to STREAMED).
ROUTER_PROCESSING_MODE = ProcessingMode(
    request_header_mode=_SEND,
    response_header_mode=_SEND,
    request_body_mode=ProcessingModeBodySendMode.BUFFERED,
    response_body_mode=ProcessingModeBodySendMode.BUFFERED,
    request_trailer_mode=_SKIP,
    response_trailer_mode=_SKIP,
)
# Upstream (per attempt): the request headers only; the translated body comes back with them.
UPSTREAM_PROCESSING_MODE = ProcessingMode(
    request_header_mode=_SEND,
    response_header_mode=_SKIP,
    request_body_mode=ProcessingModeBodySendMode.NONE,
    response_body_mode=ProcessingModeBodySendMode.NONE,
    request_trailer_mode=_SKIP,
    response_trailer_mode=_SKIP,
)


def _ext_proc(options: EnvoyOptions, role: str, mode: ProcessingMode, **extra: Any) -> HttpFilter:
    processor = ExternalProcessor(
        grpc_service=GrpcService(
            envoy_grpc=GrpcServiceEnvoyGrpc(
                cluster_name=EXTPROC_CLUSTER, max_receive_message_length=EXTPROC_MAX_MESSAGE_BYTES
            ),
            timeout=_ms(30_000),
            initial_metadata=[HeaderValue(key=ROLE_METADATA_KEY, value=role)],
        ),
        failure_mode_allow=False,
        allow_mode_override=True,
        message_timeout=_ms(options.extproc_message_timeout_ms),
        processing_mode=mode,
        **extra,
    )
    return HttpFilter(name=EXT_PROC_FILTER, typed_config=_any(processor))


# Several extproc processes (extproc/carried.py): the upstream filter gets the client's body (buffered) and
# the request's and previous attempt's metadata; the router filter, the answering attempt's. (The body as a
# tokenvoy.request metadata string instead, one message fewer, made Envoy 1.40 crash with SIGSEGV on ~140 kB
# prompts in tests/integration/test_cut_streams.py's config.)
UPSTREAM_STATELESS_PROCESSING_MODE = ProcessingMode(
    request_header_mode=_SEND,
    response_header_mode=_SKIP,
    request_body_mode=ProcessingModeBodySendMode.BUFFERED,
    response_body_mode=ProcessingModeBodySendMode.NONE,
    request_trailer_mode=_SKIP,
    response_trailer_mode=_SKIP,
)


def _metadata_options(writes: str | None = None, reads: tuple[str, ...] = ()) -> MetadataOptions:
    """What the filter's streams may write into the dynamic metadata and what Envoy forwards to them."""
    written = [AI_GATEWAY_METADATA_NAMESPACE, *([writes] if writes else [])]
    receiving = MetadataOptionsMetadataNamespaces(untyped=written)
    if not reads:
        return MetadataOptions(receiving_namespaces=receiving)
    forwarding = MetadataOptionsMetadataNamespaces(untyped=list(reads))
    return MetadataOptions(receiving_namespaces=receiving, forwarding_namespaces=forwarding)


def router_ext_proc(options: EnvoyOptions) -> HttpFilter:
    stateless = bool(options.extproc_worker_addresses)
    return _ext_proc(
        options,
        ROUTER_ROLE,
        ROUTER_PROCESSING_MODE,
        metadata_options=(
            _metadata_options(REQUEST_METADATA_NAMESPACE, (ATTEMPT_METADATA_NAMESPACE,))
            if stateless
            else _metadata_options()
        ),
        request_attributes=[] if stateless else list(IDENTITY_ATTRIBUTES),
    )


def upstream_ext_proc(options: EnvoyOptions) -> HttpFilter:
    if options.extproc_worker_addresses:
        mode = UPSTREAM_STATELESS_PROCESSING_MODE
        reads = (REQUEST_METADATA_NAMESPACE, ATTEMPT_METADATA_NAMESPACE)
        metadata = _metadata_options(ATTEMPT_METADATA_NAMESPACE, reads)
        attributes = [ENDPOINT_ATTRIBUTE]
    else:
        mode, metadata = UPSTREAM_PROCESSING_MODE, _metadata_options()
        attributes = [*IDENTITY_ATTRIBUTES, ENDPOINT_ATTRIBUTE]
    return _ext_proc(options, UPSTREAM_ROLE, mode, metadata_options=metadata, request_attributes=attributes)


def content_length_filter() -> HttpFilter:
    """Gives the provider a ``content-length`` again: Envoy drops it when ext_proc replaces the body and
    would send the new one chunked, which botocore and the SDKs never do and some provider front ends
    refuse. The upstream ext_proc puts the length of the body it sends in this attempt's metadata
    (``CONTENT_LENGTH_METADATA_KEY``); a request whose header is still there keeps it (ADD_IF_ABSENT),
    and one without the metadata gets no header (measured with Envoy 1.40: a header whose value renders
    empty is not added; the body then goes chunked)."""
    header = HeaderValue(key="content-length", value=dynamic_metadata_format(CONTENT_LENGTH_METADATA_KEY))
    add = HeaderValueOption(header=header, append_action=HeaderValueOptionHeaderAppendAction.ADD_IF_ABSENT)
    mutation = HeaderMutation(mutations=Mutations(request_mutations=[HeaderMutationRule(append=add)]))
    return HttpFilter(name="envoy.filters.http.header_mutation", typed_config=_any(mutation))


def _ratelimit_filter(options: EnvoyOptions) -> HttpFilter:
    ratelimit = RateLimitFilter(
        domain=RATELIMIT_DOMAIN,
        timeout=_ms(options.ratelimit_timeout_ms),
        failure_mode_deny=False,
        enable_x_ratelimit_headers=RateLimitXRateLimitHeadersRfcVersion.DRAFT_VERSION_03,
        rate_limit_service=RateLimitServiceConfig(
            grpc_service=GrpcService(envoy_grpc=GrpcServiceEnvoyGrpc(cluster_name=RATELIMIT_CLUSTER)),
            transport_api_version=ApiVersion.V3,
        ),
    )
    return HttpFilter(name=RATELIMIT_FILTER, typed_config=_any(ratelimit))


# ---- routes ----------------------------------------------------------------------------------------------


def _header_matcher(match: HeaderMatch) -> HeaderMatcher:
    if match.type is HeaderMatchType.REGULAR_EXPRESSION:
        return HeaderMatcher(name=match.name, string_match=StringMatcher(safe_regex=RegexMatcher(regex=match.value)))
    return HeaderMatcher(name=match.name, string_match=StringMatcher(exact=match.value))


def retry_policy(rule: Rule) -> RetryPolicy | None:
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
    idle = _ms(rule.stream_idle_timeout_ms) if rule.stream_idle_timeout_ms else None  # `streamIdleTimeout`
    if retry is None and not fallback:
        if per_try is None and idle is None:
            return None
        return RetryPolicy(
            num_retries=0, per_try_timeout=_ms(per_try) if per_try is not None else None, per_try_idle_timeout=idle
        )
    triggers = RETRY_ON.split(",") if retry is None or retry.triggers is None else list(retry.triggers)
    if retry is not None and retry.num_retries is not None:
        num_retries = retry.num_retries
    else:
        num_retries = len(rule.backend_refs) - 1 if fallback else DEFAULT_NUM_RETRIES
    codes: list[int] = []
    if "retriable-status-codes" in triggers:
        configured = retry.http_status_codes if retry is not None else None
        codes = list(configured if configured is not None else RETRIABLE_STATUS_CODES)
    base, maximum = DEFAULT_BACKOFF_MS
    if retry is not None and retry.backoff_base_ms is not None:
        base = retry.backoff_base_ms
        maximum = max(maximum, 10 * base)  # Envoy's own default maximum is 10x the base
    if retry is not None and retry.backoff_max_ms is not None:
        maximum = retry.backoff_max_ms
        base = min(base, maximum)
    fallback_fields: dict[str, Any] = {}
    if fallback:
        per_priority = retry.num_attempts_per_priority if retry is not None else None
        fallback_fields = {
            "retry_priority": RetryPolicyRetryPriority(
                name="envoy.retry_priorities.previous_priorities",
                typed_config=_any(PreviousPrioritiesConfig(update_frequency=per_priority or 1)),
            ),
            "retry_host_predicate": [
                RetryPolicyRetryHostPredicate(
                    name="envoy.retry_host_predicates.previous_hosts", typed_config=_any(PreviousHostsPredicate())
                )
            ],
            "host_selection_retry_max_attempts": 5,
        }
    return RetryPolicy(
        retry_on=",".join(triggers),
        num_retries=num_retries,
        retriable_status_codes=codes,
        per_try_timeout=_ms(per_try) if per_try is not None else None,
        per_try_idle_timeout=idle,
        retry_back_off=RetryPolicyRetryBackOff(base_interval=_ms(base), max_interval=_ms(maximum)),
        **fallback_fields,
    )


def _route_timeout(rule: Rule, options: EnvoyOptions) -> timedelta:
    """``timeouts.request`` (0 disables it, as in Envoy), else the gateway's default."""
    if rule.request_timeout_ms is not None:
        return _ms(rule.request_timeout_ms)
    return timedelta(seconds=options.route_timeout_s)


def _routes(config: GatewayConfig, options: EnvoyOptions, host: str | None = None) -> list[Route]:
    """The Envoy routes of every rule, or (``host``) of the rules a virtual host for that domain serves."""
    routes = []
    for route, rule in config.rules():
        if route.hostnames and host not in route.hostnames:
            continue
        budgets = [b for b in config.budgets if not b.routes or route.name in b.routes]
        per_filter = {}
        if budgets:
            limits = rate_limits(budgets, route.name)
            per_filter[RATELIMIT_FILTER] = _any(RateLimitPerRoute(rate_limits=limits))
        direct = _is_direct(config, rule, options)
        for match_index, headers in enumerate(rule.matches or ((),)):
            matchers = [_header_matcher(h) for h in headers]
            if direct:  # first: the request the router edited itself goes to the cluster without upstream ext_proc
                routes.append(
                    Route(
                        name=f"{rule.name}/match/{match_index}/direct",
                        match=RouteMatch(
                            prefix="/", headers=[*matchers, HeaderMatcher(name=DIRECT_HEADER, present_match=True)]
                        ),
                        route=_route_action(rule, options, direct_cluster_name(rule)),
                        request_headers_to_remove=direct_headers_to_remove(config, rule),
                        typed_per_filter_config=per_filter,
                    )
                )
            routes.append(
                Route(
                    name=f"{rule.name}/match/{match_index}",
                    match=RouteMatch(prefix="/", headers=matchers),
                    route=_route_action(rule, options, cluster_name(rule)),
                    typed_per_filter_config=per_filter,
                )
            )
    return routes


def _route_action(rule: Rule, options: EnvoyOptions, cluster: str) -> RouteAction:
    return RouteAction(
        cluster=cluster, timeout=_route_timeout(rule, options), auto_host_rewrite=True, retry_policy=retry_policy(rule)
    )


def _is_direct(config: GatewayConfig, rule: Rule, options: EnvoyOptions) -> bool:
    """Whether ``rule`` gets a direct route and cluster too (tokenvoy/config/direct.py, tokenvoy run only)."""
    return options.secrets_dir is not None and direct_ref_index(config, rule) is not None


def route_configuration(config: GatewayConfig, options: EnvoyOptions) -> RouteConfiguration:
    """One virtual host for every Host; with AIGatewayRoute ``hostnames``, one more per hostname, serving
    the routes that list it and those that list none (Envoy picks the most specific domain; the port of
    the Host is ignored, as Gateway API hostnames have none). extproc picks rules the same way (runtime.py)."""
    hostnames = list(dict.fromkeys(name for route in config.routes for name in route.hostnames))
    virtual_hosts = [
        VirtualHost(name=f"tokenvoy/{host}", domains=[host], routes=_routes(config, options, host))
        for host in hostnames
    ]
    virtual_hosts.append(VirtualHost(name="tokenvoy", domains=["*"], routes=_routes(config, options)))
    return RouteConfiguration(
        name=ROUTE_CONFIG_NAME, virtual_hosts=virtual_hosts, ignore_port_in_host_matching=bool(hostnames)
    )


# ---- backend clusters ------------------------------------------------------------------------------------


def _tls_context(endpoint: BackendEndpoint) -> UpstreamTlsContext:
    """SNI, and a certificate that chains to the trusted CAs AND names the provider (Envoy checks no name
    unless told to)."""
    validation = endpoint.tls_validation
    trusted_ca = (
        DataSource(inline_string=validation.ca_certificates)
        if validation is not None and validation.ca_certificates
        else DataSource(filename=system_ca_bundle())
    )
    names = [
        SubjectAltNameMatcher(
            san_type=SubjectAltNameMatcherSanType.IP_ADDRESS if _is_ip(name) else SubjectAltNameMatcherSanType.DNS,
            matcher=StringMatcher(exact=name),
        )
        for name in endpoint.verified_names
    ]
    return UpstreamTlsContext(
        common_tls_context=CommonTlsContext(
            validation_context=CertificateValidationContext(trusted_ca=trusted_ca, match_typed_subject_alt_names=names)
        ),
        sni="" if _is_ip(endpoint.server_name) else endpoint.server_name,  # SNI carries host names only
    )


def upstream_protocol_options(options: EnvoyOptions) -> HttpProtocolOptions:
    """HTTP/1.1 to the provider, through the upstream filters that run on every attempt: extproc translates
    and signs for the backend the attempt reached, ``content-length`` is restored, the codec comes last.
    Also what the Envoy Gateway extension server puts on EG's clusters (tokenvoy/egext)."""
    return HttpProtocolOptions(
        explicit_http_config=HttpProtocolOptionsExplicitHttpConfig(http_protocol_options=Http1ProtocolOptions()),
        http_filters=[
            upstream_ext_proc(options),
            content_length_filter(),
            HttpFilter(name="envoy.filters.http.upstream_codec", typed_config=_any(UpstreamCodec())),
        ],
    )


def backend_cluster(config: GatewayConfig, rule: Rule, options: EnvoyOptions, direct: bool = False) -> Cluster:
    """The rule's cluster; ``direct``: its twin without the upstream ext_proc filter (render/direct.py)."""
    localities = []
    socket_matches: dict[str, ClusterTransportSocketMatch] = {}
    any_dns = False
    for ref_index, ref in enumerate(rule.backend_refs):
        if ref.weight == 0:
            continue  # Gateway API: a backendRef with weight 0 gets no traffic
        backend = config.backends[ref.backend]
        endpoint = backend.endpoint
        names = {ENDPOINT_METADATA_KEY: endpoint_id(rule, ref_index), BACKEND_METADATA_KEY: backend.name}
        host_metadata = {HOST_METADATA_NAMESPACE: _struct(names)}
        if endpoint.tls:
            host_metadata["envoy.transport_socket_match"] = _struct({"tokenvoy_tls": backend.name})
            if backend.name not in socket_matches:
                socket_matches[backend.name] = ClusterTransportSocketMatch(
                    name=f"tls/{backend.name}",
                    match=_struct({"tokenvoy_tls": backend.name}),
                    transport_socket=TransportSocket(
                        name="envoy.transport_sockets.tls", typed_config=_any(_tls_context(endpoint))
                    ),
                )
        any_dns = any_dns or not _is_ip(endpoint.host)
        address = Address(socket_address=SocketAddress(address=endpoint.host, port_value=endpoint.port))
        localities.append(
            LocalityLbEndpoints(
                locality=Locality(region=f"{rule.name}/ref/{ref_index}"),
                priority=ref.priority,
                load_balancing_weight=ref.weight,
                lb_endpoints=[
                    LbEndpoint(
                        endpoint=Endpoint(address=address, hostname=endpoint.host),
                        metadata=Metadata(filter_metadata=host_metadata),
                    )
                ],
            )
        )
    if direct:
        assert options.secrets_dir is not None
        upstream_http = direct_protocol_options(config, rule, options.secrets_dir)
    else:
        upstream_http = upstream_protocol_options(options)
    name = direct_cluster_name(rule) if direct else cluster_name(rule)
    return Cluster(
        name=name,
        type=ClusterDiscoveryType.STRICT_DNS if any_dns else ClusterDiscoveryType.STATIC,
        connect_timeout=_ms(10_000),
        dns_lookup_family=ClusterDnsLookupFamily.V4_PREFERRED,
        common_lb_config=ClusterCommonLbConfig(
            locality_weighted_lb_config=ClusterCommonLbConfigLocalityWeightedLbConfig()
        ),
        load_assignment=ClusterLoadAssignment(cluster_name=name, endpoints=localities),
        typed_extension_protocol_options={HTTP_PROTOCOL_OPTIONS: _any(upstream_http)},
        transport_socket_matches=list(socket_matches.values()),
    )


def backend_clusters(config: GatewayConfig, options: EnvoyOptions) -> list[Cluster]:
    """Every rule's cluster, and the remote JWKS hosts of client authentication (reloaded with them)."""
    return [
        *(backend_cluster(config, rule, options) for _, rule in config.rules()),
        *(
            backend_cluster(config, rule, options, True)
            for _, rule in config.rules()
            if _is_direct(config, rule, options)
        ),
        *jwks_clusters(config, _tls_context),
    ]


# ---- access log and Envoy's own replies ------------------------------------------------------------------


def _access_log(options: EnvoyOptions) -> list[AccessLog]:
    ns = AI_GATEWAY_METADATA_NAMESPACE
    fields = {
        "start_time": "%START_TIME%",
        "method": "%REQ(:METHOD)%",
        # the path the client called, recorded by extproc (the upstream filter rewrites :path in place)
        "x-envoy-origin-path": f"%DYNAMIC_METADATA({ns}:{ORIGINAL_PATH_KEY})%",
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
        USER_ID_HEADER: f"%REQ({USER_ID_HEADER.upper()})%",
        ":authority": "%REQ(:AUTHORITY)%",
        "upstream_host": "%UPSTREAM_HOST%",
        "upstream_cluster": "%UPSTREAM_CLUSTER%",
        "route_name": "%ROUTE_NAME%",
        "genai_model_name": f"%REQ({MODEL_HEADER.upper()})%",
        "genai_model_name_override": f"%DYNAMIC_METADATA({ns}:{MODEL_NAME_OVERRIDE_KEY})%",
        "genai_response_model": f"%DYNAMIC_METADATA({ns}:{RESPONSE_MODEL_KEY})%",
        "genai_backend_name": f"%DYNAMIC_METADATA({ns}:{BACKEND_NAME_KEY})%",
        "genai_tokens_input": f"%DYNAMIC_METADATA({ns}:{INPUT_TOKEN_KEY})%",
        "genai_tokens_output": f"%DYNAMIC_METADATA({ns}:{OUTPUT_TOKEN_KEY})%",
        "genai_tokens_total": f"%DYNAMIC_METADATA({ns}:{TOTAL_TOKEN_KEY})%",
        "genai_tokens_cached_input": f"%DYNAMIC_METADATA({ns}:{CACHED_INPUT_TOKEN_KEY})%",
        "genai_cost_usd": f"%DYNAMIC_METADATA({ns}:{COST_USD_KEY})%",
    }
    file_log = FileAccessLog(
        path=options.access_log_path, log_format=SubstitutionFormatString(json_format=_struct(fields))
    )
    return [AccessLog(name="envoy.access_loggers.file", typed_config=_any(file_log))]


# ---- listener and bootstrap ------------------------------------------------------------------------------


def listener(config: GatewayConfig, options: EnvoyOptions, rds: ConfigSource | None = None) -> Listener:
    """The gateway's listener; its routes inline, or (``rds``) read from that config source."""
    http_filters = client_auth_filters(config) if config.client_auth else []
    http_filters.append(router_ext_proc(options))
    if config.budgets:
        http_filters.append(_ratelimit_filter(options))
    http_filters.append(HttpFilter(name="envoy.filters.http.router", typed_config=_any(Router())))
    if rds is None:
        routes: dict[str, Any] = {"route_config": route_configuration(config, options)}
    else:
        routes = {"rds": Rds(config_source=rds, route_config_name=ROUTE_CONFIG_NAME)}
    hcm = HttpConnectionManager(
        stat_prefix="tokenvoy",
        codec_type=HttpConnectionManagerCodecType.AUTO,
        access_log=_access_log(options),
        local_reply_config=local_reply_config(),
        # HTTP/1.0 clients (curl --http1.0, simple load testers) are served; Envoy's default answers them a
        # 426 it never writes (the client reads zero bytes). A streamed answer ends with the connection.
        http_protocol_options=Http1ProtocolOptions(accept_http_10=True, default_host_for_http_10="tokenvoy"),
        http_filters=http_filters,
        stream_idle_timeout=timedelta(seconds=options.route_timeout_s),
        **routes,
    )
    address = SocketAddress(address=config.listener.address, port_value=config.listener.port)
    return Listener(
        name=LISTENER_NAME,
        address=Address(socket_address=address),
        per_connection_buffer_limit_bytes=MAX_BODY_BYTES,  # the body limit (413 above it)
        filter_chains=[FilterChain(filters=[Filter(name=HCM_FILTER, typed_config=_any(hcm))])],
    )


def _bootstrap(options: EnvoyOptions, static: BootstrapStaticResources, dynamic: BootstrapDynamicResources | None):
    # A cap on client connections protects Envoy's memory; unset, Envoy warns at every start.
    connections = DownstreamConnectionsConfig(max_active_downstream_connections=options.max_downstream_connections)
    monitor = ResourceMonitor(
        name="envoy.resource_monitors.global_downstream_max_connections", typed_config=_any(connections)
    )
    if options.admin_socket:  # tokenvoy run: owner-only; its TCP admin port is a read-only view of this
        admin = Address(pipe=Pipe(path=options.admin_socket, mode=0o600))
    else:
        admin = Address(socket_address=SocketAddress(address="127.0.0.1", port_value=options.admin_port))
    return Bootstrap(
        node=Node(id="tokenvoy", cluster="tokenvoy"),
        overload_manager=OverloadManager(resource_monitors=[monitor]),
        admin=Admin(address=admin),
        static_resources=static,
        dynamic_resources=dynamic,
    )


def static_bootstrap(config: GatewayConfig, options: EnvoyOptions) -> Bootstrap:
    """Everything in one file: what ``tokenvoy render`` writes and ``envoy/envoy.yaml`` holds."""
    clusters = [*service_clusters(config, options), *backend_clusters(config, options)]
    return _bootstrap(options, BootstrapStaticResources(listeners=[listener(config, options)], clusters=clusters), None)


def render_bootstrap(config: GatewayConfig, options: EnvoyOptions) -> dict[str, Any]:
    """The self-contained bootstrap (everything static) as the JSON Envoy reads."""
    return to_json(static_bootstrap(config, options))


def budget_rate_limits(budgets: list[Budget], route_name: str = "llm") -> list[dict[str, Any]]:
    """The ``RateLimitPerRoute.rate_limits`` entries of these budgets on one route, as JSON."""
    return [to_json(entry) for entry in rate_limits(budgets, route_name)]


# ---- the reloadable layout: filesystem LDS / RDS / CDS ---------------------------------------------------

LDS_FILE, RDS_FILE, CDS_FILE = "lds.yaml", "rds.yaml", "cds.yaml"


def path_source(xds_dir: Path, name: str) -> ConfigSource:
    """Envoy re-reads ``xds_dir/name`` whenever a file is moved into ``xds_dir`` (an atomic replace)."""
    return ConfigSource(
        resource_api_version=ApiVersion.V3,
        path_config_source=PathConfigSource(
            path=str(xds_dir / name), watched_directory=WatchedDirectory(path=str(xds_dir))
        ),
    )


@dataclass(frozen=True)
class DynamicResources:
    """What ``tokenvoy run`` hands Envoy through the files of its xDS directory."""

    listeners: list[Listener]
    routes: list[RouteConfiguration]
    clusters: list[Cluster]


def dynamic_resources(config: GatewayConfig, options: EnvoyOptions, xds_dir: Path) -> DynamicResources:
    return DynamicResources(
        listeners=[listener(config, options, rds=path_source(xds_dir, RDS_FILE))],
        routes=[route_configuration(config, options)],
        clusters=backend_clusters(config, options),
    )


def reloadable_bootstrap(config: GatewayConfig, options: EnvoyOptions, xds_dir: Path) -> Bootstrap:
    """The extproc and ratelimit clusters static; listener and backend clusters from ``xds_dir``."""
    dynamic = BootstrapDynamicResources(
        lds_config=path_source(xds_dir, LDS_FILE), cds_config=path_source(xds_dir, CDS_FILE)
    )
    return _bootstrap(options, BootstrapStaticResources(clusters=service_clusters(config, options)), dynamic)


def discovery_response(resources: list[Listener] | list[RouteConfiguration] | list[Cluster], version: str) -> dict:
    """The file format of filesystem xDS: a DiscoveryResponse (the resources as ``Any``)."""
    return {"version_info": version, "resources": [to_json(_any(resource)) for resource in resources]}
