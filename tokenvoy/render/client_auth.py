"""Client authentication rendered to Envoy's own filters: ``api_key_auth`` and ``jwt_authn``.

Envoy checks every key and token before extproc sees the request, so a refused client costs no Python and
never reaches a provider. Order on the listener: a header_mutation removing the headers that name the caller (a
client must not name itself), ``api_key_auth`` (config from extproc over ECDS: the keys never touch a rendered
file), ``jwt_authn`` (public keys only: inline, a JWKS file, or a remote JWKS fetched over HTTPS and cached).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from datetime import timedelta
from urllib.parse import urlsplit

import betterproto2

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from envoy_data_plane.envoy.config.cluster.v3 import Cluster, ClusterDiscoveryType, ClusterDnsLookupFamily
    from envoy_data_plane.envoy.config.common.mutation_rules.v3 import HeaderMutation as HeaderMutationRule
    from envoy_data_plane.envoy.config.core.v3 import (
        Address,
        ApiConfigSource,
        ApiConfigSourceApiType,
        ApiVersion,
        ConfigSource,
        DataSource,
        ExtensionConfigSource,
        GrpcService,
        GrpcServiceEnvoyGrpc,
        HttpUri,
        SocketAddress,
        TransportSocket,
    )
    from envoy_data_plane.envoy.config.endpoint.v3 import (
        ClusterLoadAssignment,
        Endpoint,
        LbEndpoint,
        LocalityLbEndpoints,
    )
    from envoy_data_plane.envoy.config.route.v3 import RouteMatch
    from envoy_data_plane.envoy.extensions.filters.http.header_mutation.v3 import HeaderMutation, Mutations
    from envoy_data_plane.envoy.extensions.filters.http.jwt_authn.v3 import (
        JwksAsyncFetch,
        JwtAuthentication,
        JwtClaimToHeader,
        JwtHeader,
        JwtProvider,
        JwtRequirement,
        JwtRequirementOrList,
        RemoteJwks,
        RequirementRule,
    )
    from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import HttpFilter
    from envoy_data_plane.envoy.extensions.transport_sockets.tls.v3 import (
        UpstreamTlsContext,
    )
    from envoy_data_plane.google.protobuf import Any as AnyMessage
    from envoy_data_plane.google.protobuf import Empty

from tokenvoy.config.model import ClientAuth, GatewayConfig
from tokenvoy.config.model import Endpoint as BackendEndpoint
from tokenvoy.config.model import JwtProvider as ProviderConfig
from tokenvoy.contract import API_KEY_AUTH_TYPE_URL, CLIENT_KEYS_FILTER, EXTPROC_CLUSTER, MODEL_HEADER

JWT_FILTER = "envoy.filters.http.jwt_authn"


def _any(message: betterproto2.Message) -> AnyMessage:
    return AnyMessage.pack(message)


def untrusted_headers(config: GatewayConfig) -> list[str]:
    """The headers a client must not set once clients authenticate: those the auth filters set (client id,
    claims) and those budgets and ``modelAccess`` select callers by. Removed before the auth filters run,
    so a header that reaches extproc and ratelimit was set by Envoy, or not at all."""
    auth = config.client_auth
    names = list(auth.identity_headers()) if auth else []
    names += [selector.header for budget in config.budgets for selector in budget.selectors]
    names += [rule.header for rule in config.model_access]
    return [name for name in dict.fromkeys(names) if name != MODEL_HEADER]  # extproc sets the model header


def client_auth_filters(config: GatewayConfig) -> list[HttpFilter]:
    """The filters in front of extproc, in order (see the module docstring)."""
    auth = config.client_auth
    assert auth is not None
    filters = []
    if identity := untrusted_headers(config):
        remove = [HeaderMutationRule(remove=name) for name in identity]
        mutation = HeaderMutation(mutations=Mutations(request_mutations=remove))
        filters.append(HttpFilter(name="tokenvoy.identity_headers", typed_config=_any(mutation)))
    if auth.api_keys is not None:
        source = ConfigSource(
            resource_api_version=ApiVersion.V3,
            # Wait for the keys however long extproc takes: the listener opens only once Envoy has them
            # (Envoy's default, 15 s, would open it with the filter unconfigured, answering every request 500).
            initial_fetch_timeout=timedelta(0),
            api_config_source=ApiConfigSource(
                api_type=ApiConfigSourceApiType.GRPC,
                transport_api_version=ApiVersion.V3,
                grpc_services=[GrpcService(envoy_grpc=GrpcServiceEnvoyGrpc(cluster_name=EXTPROC_CLUSTER))],
            ),
        )
        discovery = ExtensionConfigSource(config_source=source, type_urls=[API_KEY_AUTH_TYPE_URL])
        filters.append(HttpFilter(name=CLIENT_KEYS_FILTER, config_discovery=discovery))
    if auth.jwt is not None:
        filters.append(HttpFilter(name=JWT_FILTER, typed_config=_any(jwt_authentication(auth))))
    return filters


def jwks_cluster_name(provider: ProviderConfig) -> str:
    return f"jwks/{provider.name}"


def jwt_authentication(auth: ClientAuth) -> JwtAuthentication:
    jwt = auth.jwt
    assert jwt is not None
    providers = {provider.name: _provider(provider) for provider in jwt.providers}
    names = [JwtRequirement(provider_name=provider.name) for provider in jwt.providers]
    if jwt.optional:
        names.append(JwtRequirement(allow_missing=Empty()))
    requires = names[0] if len(names) == 1 else JwtRequirement(requires_any=JwtRequirementOrList(requirements=names))
    return JwtAuthentication(
        providers=providers, rules=[RequirementRule(match=RouteMatch(prefix="/"), requires=requires)]
    )


def _provider(provider: ProviderConfig) -> JwtProvider:
    source: dict[str, object] = {}
    if provider.remote_jwks_uri is not None:
        source["remote_jwks"] = RemoteJwks(
            http_uri=HttpUri(
                uri=provider.remote_jwks_uri, cluster=jwks_cluster_name(provider), timeout=timedelta(seconds=5)
            ),
            cache_duration=timedelta(milliseconds=provider.cache_duration_ms),
            # Fetched by Envoy's main thread (the listener opens after the first attempt) and shared by every
            # worker; without it each worker fetches its own copy on its first request.
            async_fetch=JwksAsyncFetch(
                failed_refetch_duration=timedelta(milliseconds=provider.failed_refetch_ms)
                if provider.failed_refetch_ms is not None
                else None
            ),
        )
    elif provider.local_jwks_file is not None:
        source["local_jwks"] = DataSource(filename=provider.local_jwks_file)
    else:
        source["local_jwks"] = DataSource(inline_string=provider.local_jwks or "")
    return JwtProvider(
        issuer=provider.issuer or "",
        audiences=list(provider.audiences),
        forward=False,  # the client's token is removed: the provider gets its own credential
        from_headers=[JwtHeader(name=name, value_prefix=prefix) for name, prefix in provider.headers],
        claim_to_headers=[
            JwtClaimToHeader(header_name=header, claim_name=claim) for claim, header in provider.claim_to_headers
        ],
        **source,
    )


def jwks_clusters(config: GatewayConfig, tls_context: Callable[[BackendEndpoint], UpstreamTlsContext]) -> list[Cluster]:
    """One cluster per remote JWKS: its ``backendRefs`` Backend (TLS as for a provider: ``tls_context``), else
    the URI's host over HTTPS (system CAs, the host as SNI and verified name)."""
    auth = config.client_auth
    clusters = []
    for provider in auth.jwt.providers if auth and auth.jwt else ():
        if provider.remote_jwks_uri is None:
            continue
        endpoint = provider.remote_jwks_endpoint
        if endpoint is None:
            url = urlsplit(provider.remote_jwks_uri)
            endpoint = BackendEndpoint(host=url.hostname or "", port=url.port or 443, tls=True)
        name = jwks_cluster_name(provider)
        address = Address(socket_address=SocketAddress(address=endpoint.host, port_value=endpoint.port))
        socket = (
            TransportSocket(name="envoy.transport_sockets.tls", typed_config=_any(tls_context(endpoint)))
            if endpoint.tls
            else None
        )
        clusters.append(
            Cluster(
                name=name,
                type=ClusterDiscoveryType.STRICT_DNS,
                dns_lookup_family=ClusterDnsLookupFamily.V4_PREFERRED,
                connect_timeout=timedelta(seconds=5),
                load_assignment=ClusterLoadAssignment(
                    cluster_name=name,
                    endpoints=[LocalityLbEndpoints(lb_endpoints=[LbEndpoint(endpoint=Endpoint(address=address))])],
                ),
                transport_socket=socket,
            )
        )
    return clusters
