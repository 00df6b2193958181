"""What the extension server knows about the user's gateway, computed once per config (never per hook call).

The server loads the same AIGatewayRoute YAML as ``tokenvoy render --target envoy-gateway --mode extension``
(and as extproc, through the ConfigMap that render writes). An EG cluster or route belongs to an AI route
when its name is ``httproute/<namespace>/<name>/rule/<i>...`` and ``<namespace>/<name>`` is an
AIGatewayRoute of that config: the rendered HTTPRoute has the AIGatewayRoute's name and its rules in the
same order, so rule ``i`` of the HTTPRoute is rule ``i`` of the AIGatewayRoute.

The Envoy pieces (the upstream and router ext_proc filters, the extproc cluster, retry policies) are built
by the renderer of ``tokenvoy run`` (``tokenvoy.render.bootstrap``) and carried here as our proto subset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf import any_pb2, struct_pb2

from tokenvoy.config.model import GatewayConfig, Route, Rule
from tokenvoy.contract import EXTPROC_CLUSTER, endpoint_id
from tokenvoy.pb.envoy.config.cluster.v3 import cluster_pb2
from tokenvoy.pb.envoy.config.route.v3 import route_components_pb2
from tokenvoy.pb.envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from tokenvoy.pb.envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from tokenvoy.render.envoy import EnvoyOptions

# Where the extproc sidecar listens in each Envoy pod (an emptyDir shared by both containers).
DEFAULT_EXTPROC_SOCKET = "/var/run/tokenvoy/extproc.sock"
# Names of the filters the server adds; they mark a resource as already done (a second pass changes nothing).
ROUTER_FILTER = "envoy.filters.http.ext_proc/tokenvoy"
UPSTREAM_FILTER = "envoy.filters.http.ext_proc/tokenvoy-upstream"
CONTENT_LENGTH_FILTER = "envoy.filters.http.header_mutation/tokenvoy-content-length"
UPSTREAM_CODEC = "envoy.filters.http.upstream_codec"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HCM_TYPE_URL = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
FILTER_CONFIG_TYPE_URL = "type.googleapis.com/envoy.config.route.v3.FilterConfig"
HTTP_PROTOCOL_OPTIONS_TYPE_URL = f"type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}"


@dataclass(frozen=True)
class RulePieces:
    """One AIGatewayRoute rule: the host metadata of each backendRef, its priority, the route's retry policy."""

    rule: Rule
    endpoint_metadata: list[struct_pb2.Struct]  # by backendRef index
    priorities: list[int]
    retry_policy: bytes | None  # a serialized envoy.config.route.v3.RetryPolicy (tokenvoy run's), or None


@dataclass(frozen=True)
class ExtensionConfig:
    """The loaded gateway config and every Envoy piece the hook inserts, ready to copy in."""

    config: GatewayConfig
    namespace: str
    extproc_socket: str = DEFAULT_EXTPROC_SOCKET
    routes: dict[tuple[str, str], Route] = field(init=False, repr=False)
    rules: dict[tuple[str, str, int], RulePieces] = field(init=False, repr=False)
    router_filter: hcm_pb2.HttpFilter = field(init=False, repr=False)
    upstream_filters: list[hcm_pb2.HttpFilter] = field(init=False, repr=False)
    upstream_codec: hcm_pb2.HttpFilter = field(init=False, repr=False)
    default_protocol_options: http_protocol_options_pb2.HttpProtocolOptions = field(init=False, repr=False)
    extproc_cluster: bytes = field(init=False, repr=False)
    route_enable: any_pb2.Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from tokenvoy.render import bootstrap  # about a second to import: once, here

        options = EnvoyOptions(extproc_address=f"unix:{self.extproc_socket}", ratelimit_address="unix:/dev/null")
        routes = {(self.namespace, route.name): route for route in self.config.routes}
        rules: dict[tuple[str, str, int], RulePieces] = {}
        for route in self.config.routes:
            for index, rule in enumerate(route.rules):
                metadata = []
                for ref_index, ref in enumerate(rule.backend_refs):
                    struct = struct_pb2.Struct()
                    struct.update({"endpoint": endpoint_id(rule, ref_index), "backend": ref.backend})
                    metadata.append(struct)
                policy = bootstrap.retry_policy(rule)
                rules[(self.namespace, route.name, index)] = RulePieces(
                    rule=rule,
                    endpoint_metadata=metadata,
                    priorities=[ref.priority for ref in rule.backend_refs],
                    retry_policy=None if policy is None else bytes(policy),
                )
        router = hcm_pb2.HttpFilter.FromString(bytes(bootstrap.router_ext_proc(options)))
        router.name = ROUTER_FILTER
        router.disabled = True  # enabled per AI route
        upstream = hcm_pb2.HttpFilter.FromString(bytes(bootstrap.upstream_ext_proc(options)))
        upstream.name = UPSTREAM_FILTER
        content_length = hcm_pb2.HttpFilter.FromString(bytes(bootstrap.content_length_filter()))
        content_length.name = CONTENT_LENGTH_FILTER
        # tokenvoy run's upstream HTTP/1.1 options, for a cluster EG gave none; its codec for one without any
        run_options = http_protocol_options_pb2.HttpProtocolOptions.FromString(
            bytes(bootstrap.upstream_protocol_options(options))
        )
        codec = next(f for f in run_options.http_filters if f.name == UPSTREAM_CODEC)
        del run_options.http_filters[:]
        extproc = next(c for c in bootstrap.service_clusters(self.config, options) if c.name == EXTPROC_CLUSTER)
        enable = route_components_pb2.FilterConfig(config=any_pb2.Any())
        packed = any_pb2.Any(type_url=FILTER_CONFIG_TYPE_URL, value=enable.SerializeToString())
        for name, value in (
            ("routes", routes),
            ("rules", rules),
            ("router_filter", router),
            ("upstream_filters", [upstream, content_length]),
            ("upstream_codec", codec),
            ("default_protocol_options", run_options),
            ("extproc_cluster", cluster_pb2.Cluster.FromString(bytes(extproc)).SerializeToString()),
            ("route_enable", packed),
        ):
            object.__setattr__(self, name, value)

    def ai_rule(self, resource_name: str) -> tuple[Route, int] | None:
        """``httproute/<ns>/<name>/rule/<i>[/...]`` of an AI route: (route, i); anything else: None."""
        parts = resource_name.split("/", 5)
        if len(parts) < 5 or parts[0] != "httproute" or parts[3] != "rule" or not parts[4].isdigit():
            return None
        route = self.routes.get((parts[1], parts[2]))
        return None if route is None else (route, int(parts[4]))


def load_extension_config(
    paths: list[str], *, namespace: str | None = None, extproc_socket: str = DEFAULT_EXTPROC_SOCKET
) -> ExtensionConfig:
    """Read the config files as ``tokenvoy render --target envoy-gateway --mode extension`` does (ConfigError
    lists what is wrong, as the render would)."""
    from tokenvoy.render.envoy_gateway import EXTENSION_MODE, GatewayOptions, render_envoy_gateway
    from tokenvoy.render.gateway_cli import read_documents

    manifests = render_envoy_gateway(read_documents(paths), GatewayOptions(namespace=namespace, mode=EXTENSION_MODE))
    return ExtensionConfig(manifests.config, manifests.namespace, extproc_socket)
