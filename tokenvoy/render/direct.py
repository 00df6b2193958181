"""The Envoy side of direct rules (tokenvoy/config/direct.py): a cluster without the upstream ext_proc filter.

The router ext_proc has already made the request's one edit (path, body, headers) and set
``DIRECT_HEADER``; the direct route matches on that header and sends the request to the rule's direct
cluster, whose upstream filters only add the API key and encode: ``credential_injector`` with a generic
credential read from a file-based SDS secret (``<secrets dir>/<secret>.yaml``, written by ``tokenvoy
run``), so the key is in no rendered file and Envoy's ``/config_dump`` shows it redacted.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # envoy-data-plane 2.2 under pydantic >= 2.12
    from envoy_data_plane.envoy.config.core.v3 import (
        ApiVersion,
        ConfigSource,
        Http1ProtocolOptions,
        PathConfigSource,
        TypedExtensionConfig,
        WatchedDirectory,
    )
    from envoy_data_plane.envoy.extensions.filters.http.credential_injector.v3 import CredentialInjector
    from envoy_data_plane.envoy.extensions.filters.http.upstream_codec.v3 import UpstreamCodec
    from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import HttpFilter
    from envoy_data_plane.envoy.extensions.http.injected_credentials.generic.v3 import Generic
    from envoy_data_plane.envoy.extensions.transport_sockets.tls.v3 import SdsSecretConfig
    from envoy_data_plane.envoy.extensions.upstreams.http.v3 import (
        HttpProtocolOptions,
        HttpProtocolOptionsExplicitHttpConfig,
    )
    from envoy_data_plane.google.protobuf import Any as AnyMessage

from tokenvoy.config.direct import (
    CLIENT_CREDENTIAL_HEADERS,
    DirectCredential,
    direct_backend,
    direct_credential,
    secret_file,
)
from tokenvoy.config.model import GatewayConfig, Rule
from tokenvoy.contract import DIRECT_HEADER


def direct_cluster_name(rule: Rule) -> str:
    return f"direct/{rule.name}"


def direct_headers_to_remove(config: GatewayConfig, rule: Rule) -> list[str]:
    """What the direct route strips: the router's header and, when Envoy injects a key, the client's credential
    headers. Removed by the route (the router filter, after the rate-limit filter, whose budgets may key on
    one of them), not by the router ext_proc: the same point as the upstream filter removes them otherwise."""
    backend = direct_backend(config, rule)
    keyed = backend is not None and direct_credential(backend) is not None
    return [DIRECT_HEADER, *(CLIENT_CREDENTIAL_HEADERS if keyed else ())]


def _injector(credential: DirectCredential, secrets_dir: str) -> HttpFilter:
    source = ConfigSource(
        resource_api_version=ApiVersion.V3,
        path_config_source=PathConfigSource(
            path=str(secret_file(secrets_dir, credential.secret_name)),
            watched_directory=WatchedDirectory(path=secrets_dir),
        ),
    )
    generic = Generic(
        credential=SdsSecretConfig(name=credential.secret_name, sds_config=source),
        header=credential.header,
        header_value_prefix=credential.prefix,
    )
    injector = CredentialInjector(
        overwrite=True,  # the router already dropped the client's credential headers; never keep one
        allow_request_without_credential=False,  # no key loaded: Envoy's 401, never a request without it
        credential=TypedExtensionConfig(
            name="envoy.http.injected_credentials.generic", typed_config=AnyMessage.pack(generic)
        ),
    )
    return HttpFilter(name="envoy.filters.http.credential_injector", typed_config=AnyMessage.pack(injector))


def direct_protocol_options(config: GatewayConfig, rule: Rule, secrets_dir: str) -> HttpProtocolOptions:
    """HTTP/1.1 to the provider through the injector (when the backend has a key) and the codec only."""
    backend = direct_backend(config, rule)
    assert backend is not None, f"rule {rule.name} is not direct"
    credential = direct_credential(backend)
    filters = [_injector(credential, secrets_dir)] if credential is not None else []
    filters.append(HttpFilter(name="envoy.filters.http.upstream_codec", typed_config=AnyMessage.pack(UpstreamCodec())))
    return HttpProtocolOptions(
        explicit_http_config=HttpProtocolOptionsExplicitHttpConfig(http_protocol_options=Http1ProtocolOptions()),
        http_filters=filters,
    )
