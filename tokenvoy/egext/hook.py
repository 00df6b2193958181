"""``PostTranslateModify``: EG's xDS, after its EnvoyPatchPolicies, with tokenvoy's filters added. Pure.

Per resource:

* **clusters** ``httproute/<ns>/<name>/rule/<i>`` of an AI route: each locality (one per backendRef, EG
  names it ``<cluster>/backend/<j>``) gets the backendRef's ``priority`` and its endpoints the host
  metadata ``tokenvoy: {endpoint, backend}`` that the upstream extproc stream reads; the
  ``HttpProtocolOptions`` get tokenvoy's upstream ext_proc and ``content-length`` filters in front (and the
  upstream codec last). EG's protocol options are kept; a cluster without them gets ``tokenvoy run``'s.
* **listeners**: every HTTP connection manager gets tokenvoy's router-level ext_proc, ``disabled``, before
  EG's rate-limit filter (or the router); one with its routes inline and none of them an AI route (EG's
  ready listener) is left as it is.
* **route configurations**: every route of an AI route enables it (``typed_per_filter_config``: a
  ``FilterConfig``), and a rule with a retry policy under ``tokenvoy run`` (fallback across its backendRefs,
  ``retry``, timeouts per attempt) gets that policy.
* the **extproc cluster** ``tokenvoy_extproc`` (the sidecar's Unix socket) is added.

Everything else (secrets included) goes back as the very bytes EG sent: resources are sliced out of the
request undecoded, and only those changed are encoded again. A resource already modified is left as it
is, so a second pass changes nothing. A request the hook cannot serve raises :class:`HookError` with a
gRPC status and a message naming the resource.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message
from google.protobuf.message_factory import GetMessageClass

from tokenvoy.contract import EXTPROC_CLUSTER, HOST_METADATA_NAMESPACE
from tokenvoy.egext.config import (
    HCM_TYPE_URL,
    HTTP_PROTOCOL_OPTIONS,
    HTTP_PROTOCOL_OPTIONS_TYPE_URL,
    ROUTER_FILTER,
    UPSTREAM_CODEC,
    UPSTREAM_FILTER,
    ExtensionConfig,
    RulePieces,
)
from tokenvoy.pb.envoy.config.cluster.v3 import cluster_pb2
from tokenvoy.pb.envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from tokenvoy.pb.envoy.config.route.v3 import route_components_pb2, route_pb2
from tokenvoy.pb.envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from tokenvoy.pb.envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from tokenvoy.pb.envoygateway.extension import service_pb2

# EG's HTTP filters the router ext_proc goes in front of (it must see the request before a budget is checked).
_BEFORE = ("envoy.filters.http.ratelimit", "envoy.filters.http.router")


@dataclass
class HookError(Exception):
    """A request the hook refuses: ``code`` is the gRPC status, ``message`` names the resource."""

    code: grpc.StatusCode
    message: str

    def __str__(self) -> str:
        return self.message


def _wire_views() -> tuple[type[message.Message], ...]:
    """Request and response with every resource as ``bytes``: the same wire format as EG's messages (a
    message field and a bytes field are both length-delimited), so resources come out undecoded."""
    file = descriptor_pb2.FileDescriptorProto(name="tokenvoy/egext/wire.proto", package="tokenvoy.egext.wire")
    for name, fields in (
        ("Request", (("context", 1), ("clusters", 2), ("secrets", 3), ("listeners", 4), ("routes", 5))),
        ("Response", (("clusters", 1), ("secrets", 2), ("listeners", 3), ("routes", 4))),
        ("Single", (("resource", 1),)),
    ):
        msg = file.message_type.add(name=name)
        for field_name, number in fields:
            msg.field.add(
                name=field_name,
                number=number,
                type=descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
                label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
                if field_name not in ("context", "resource")
                else descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
            )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return tuple(
        GetMessageClass(pool.FindMessageTypeByName(f"tokenvoy.egext.wire.{name}"))
        for name in ("Request", "Response", "Single")
    )


WireRequest, WireResponse, WireSingle = _wire_views()


def resource_unchanged(request: bytes) -> bytes:
    """The other ``Post*Modify`` hooks: each request carries its resource in field 1, and so does the
    answer; tokenvoy changes nothing there (PostTranslateModify sees every resource), so it goes back as is."""
    try:
        single = WireSingle.FromString(request)
    except message.DecodeError as exc:
        raise HookError(grpc.StatusCode.INVALID_ARGUMENT, f"the request does not parse: {exc}") from None
    return WireSingle(resource=single.resource).SerializeToString() if single.HasField("resource") else b""


def post_translate_modify_bytes(request: bytes, config: ExtensionConfig) -> bytes:
    """The hook on the wire: a serialized ``PostTranslateModifyRequest`` in, the response out."""
    try:
        wire = WireRequest.FromString(request)
    except message.DecodeError as exc:
        raise HookError(grpc.StatusCode.INVALID_ARGUMENT, f"PostTranslateModifyRequest does not parse: {exc}") from None
    # Ours, once: added, or (another socket path, an older config) replaced.
    clusters = [out for name, out in (_cluster(raw, config) for raw in wire.clusters) if name != EXTPROC_CLUSTER]
    clusters.append(config.extproc_cluster)
    response = WireResponse(
        clusters=clusters,
        secrets=list(wire.secrets),
        listeners=[_listener(raw, config) for raw in wire.listeners],
        routes=[_route_configuration(raw, config) for raw in wire.routes],
    )
    return response.SerializeToString()


def post_translate_modify(
    request: service_pb2.PostTranslateModifyRequest, config: ExtensionConfig
) -> service_pb2.PostTranslateModifyResponse:
    """The hook on messages (what tests and in-process callers use); same result as on the wire."""
    raw = post_translate_modify_bytes(request.SerializeToString(), config)
    return service_pb2.PostTranslateModifyResponse.FromString(raw)


def _parse(raw: bytes, cls: type[message.Message], what: str) -> message.Message:
    try:
        return cls.FromString(raw)
    except message.DecodeError as exc:
        raise HookError(grpc.StatusCode.INVALID_ARGUMENT, f"{what} does not parse: {exc}") from None


# ---- clusters --------------------------------------------------------------------------------------------


def _cluster(raw: bytes, config: ExtensionConfig) -> tuple[str, bytes]:
    """(name, the cluster as it goes back)."""
    cluster = _parse(raw, cluster_pb2.Cluster, "a cluster")
    assert isinstance(cluster, cluster_pb2.Cluster)
    return cluster.name, _ai_cluster(raw, cluster, config)


def _ai_cluster(raw: bytes, cluster: cluster_pb2.Cluster, config: ExtensionConfig) -> bytes:
    found = config.ai_rule(cluster.name)
    if found is None or cluster.name.count("/") != 4:
        return raw
    route, index = found
    where = f"cluster {cluster.name}"
    pieces = config.rules.get((config.namespace, route.name, index))
    if pieces is None and index == len(route.rules):
        return raw  # the route-not-found rule the render appends: a direct response, no backend to tag
    if pieces is None:
        raise HookError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"{where}: AIGatewayRoute {config.namespace}/{route.name} has {len(route.rules)} rule(s) in the config "
            f"the extension server loaded, not a rule {index}: render the HTTPRoutes and run the server from the "
            "same config",
        )
    before = cluster.SerializeToString(deterministic=True)
    if not cluster.HasField("load_assignment"):
        raise HookError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"{where}: its endpoints come over EDS, not inline, so tokenvoy cannot tell the upstream filter which "
            "backendRef an endpoint is: give the AIServiceBackend a Backend with fqdn endpoints (what "
            "`tokenvoy render --target envoy-gateway --mode extension` renders)",
        )
    _tag_endpoints(cluster, pieces, where)
    _add_upstream_filters(cluster, config, where)
    if cluster.SerializeToString(deterministic=True) == before:
        return raw
    return cluster.SerializeToString()


def _tag_endpoints(cluster: cluster_pb2.Cluster, pieces: RulePieces, where: str) -> None:
    refs = pieces.rule.backend_refs
    serving = [i for i, ref in enumerate(refs) if ref.weight != 0]  # EG drops a backendRef of weight 0
    localities = cluster.load_assignment.endpoints
    for position, locality in enumerate(localities):
        region = locality.locality.region
        prefix = f"{cluster.name}/backend/"
        if region.startswith(prefix) and region[len(prefix) :].isdigit():
            ref_index = int(region[len(prefix) :])
        elif len(localities) == len(serving):
            ref_index = serving[position]
        else:
            raise HookError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{where}: {len(localities)} endpoint groups for {len(serving)} backendRefs, and locality "
                f"{region!r} does not name its backendRef",
            )
        if ref_index >= len(refs):
            raise HookError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{where}: locality {region!r} names backendRef {ref_index}, the rule has {len(refs)}",
            )
        locality.priority = pieces.priorities[ref_index]
        for endpoint in locality.lb_endpoints:
            struct = endpoint.metadata.filter_metadata[HOST_METADATA_NAMESPACE]
            struct.update(pieces.endpoint_metadata[ref_index])


def _add_upstream_filters(cluster: cluster_pb2.Cluster, config: ExtensionConfig, where: str) -> None:
    options_any = cluster.typed_extension_protocol_options.get(HTTP_PROTOCOL_OPTIONS)
    if options_any is None:
        options = http_protocol_options_pb2.HttpProtocolOptions()
        options.CopyFrom(config.default_protocol_options)
    else:
        parsed = _parse(
            options_any.value, http_protocol_options_pb2.HttpProtocolOptions, f"{where}: {HTTP_PROTOCOL_OPTIONS}"
        )
        assert isinstance(parsed, http_protocol_options_pb2.HttpProtocolOptions)
        options = parsed
    names = [f.name for f in options.http_filters]
    if UPSTREAM_FILTER in names:
        return
    existing = list(options.http_filters)
    codec = [f for f in existing if f.name == UPSTREAM_CODEC] or [config.upstream_codec]
    others = [f for f in existing if f.name != UPSTREAM_CODEC]
    del options.http_filters[:]
    options.http_filters.extend([*config.upstream_filters, *others, *codec])
    packed = cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS]
    packed.type_url = HTTP_PROTOCOL_OPTIONS_TYPE_URL
    packed.value = options.SerializeToString()


# ---- listeners -------------------------------------------------------------------------------------------


def _listener(raw: bytes, config: ExtensionConfig) -> bytes:
    listener = _parse(raw, listener_pb2.Listener, "a listener")
    assert isinstance(listener, listener_pb2.Listener)
    where = f"listener {listener.name}"
    changed = False
    chains = list(listener.filter_chains)
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    for chain in chains:
        for network_filter in chain.filters:
            changed |= _add_router_filter(network_filter, config, where)
    return listener.SerializeToString() if changed else raw


def _add_router_filter(network_filter: listener_components_pb2.Filter, config: ExtensionConfig, where: str) -> bool:
    if (
        network_filter.WhichOneof("config_type") != "typed_config"
        or network_filter.typed_config.type_url != HCM_TYPE_URL
    ):
        return False
    hcm = _parse(network_filter.typed_config.value, hcm_pb2.HttpConnectionManager, f"{where}: {network_filter.name}")
    assert isinstance(hcm, hcm_pb2.HttpConnectionManager)
    names = [f.name for f in hcm.http_filters]
    if ROUTER_FILTER in names:
        return False
    position = next((i for i, name in enumerate(names) if name.startswith(_BEFORE)), None)
    if position is None:
        raise HookError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{where}: its HTTP connection manager has no router filter ({', '.join(names) or 'no filters'})",
        )
    if hcm.HasField("route_config") and not any(
        config.ai_rule(route.name) for host in hcm.route_config.virtual_hosts for route in host.routes
    ):
        return False  # routes inline and none of them an AI route (EG's ready listener): nothing can enable it
    filters = list(hcm.http_filters)
    del hcm.http_filters[:]
    hcm.http_filters.extend([*filters[:position], config.router_filter, *filters[position:]])
    network_filter.typed_config.value = hcm.SerializeToString()
    return True


# ---- routes ----------------------------------------------------------------------------------------------


def _route_configuration(raw: bytes, config: ExtensionConfig) -> bytes:
    route_config = _parse(raw, route_pb2.RouteConfiguration, "a route configuration")
    assert isinstance(route_config, route_pb2.RouteConfiguration)
    changed = False
    for virtual_host in route_config.virtual_hosts:
        for route in virtual_host.routes:
            changed |= _route(route, config)
    return route_config.SerializeToString() if changed else raw


def _route(route: route_components_pb2.Route, config: ExtensionConfig) -> bool:
    found = config.ai_rule(route.name)
    if found is None:
        return False
    ai_route, index = found
    changed = False
    enable = route.typed_per_filter_config.get(ROUTER_FILTER)
    if enable is None or enable != config.route_enable:
        route.typed_per_filter_config[ROUTER_FILTER].CopyFrom(config.route_enable)
        changed = True
    pieces = config.rules.get((config.namespace, ai_route.name, index))
    if pieces is not None and pieces.retry_policy is not None and route.WhichOneof("action") == "route":
        policy = route_components_pb2.RetryPolicy.FromString(pieces.retry_policy)
        if route.route.retry_policy != policy:
            route.route.retry_policy.CopyFrom(policy)
            changed = True
    return changed
