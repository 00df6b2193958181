"""The Envoy Gateway extension server over real gRPC, driven by EG's own xDS (its ``egctl translate`` and
per-feature goldens) turned into the ``PostTranslateModifyRequest`` EG's extension manager sends."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import unknown_fields

from tests import egext_xds as xds
from tokenvoy.contract import EXTPROC_CLUSTER
from tokenvoy.egext import (
    POST_TRANSLATE_MODIFY_PATH,
    ExtensionConfig,
    RunningServer,
    load_extension_config,
    post_translate_modify,
    start_in_process,
)
from tokenvoy.egext.config import ROUTER_FILTER, UPSTREAM_FILTER
from tokenvoy.egext.hook import WireRequest, WireResponse
from tokenvoy.pb.envoy.config.cluster.v3 import cluster_pb2
from tokenvoy.pb.envoygateway.extension import context_pb2, service_pb2, service_pb2_grpc
from tokenvoy.runner.run import envoy_binary

FALLBACK = Path(__file__).parent / "fixtures" / "egext" / "fallback.yaml"
AI_CLUSTER = "httproute/default/backend/rule/0"
KINDS = (("clusters", "cluster"), ("secrets", "secret"), ("listeners", "listener"), ("routes", "route"))


@pytest.fixture(scope="module")
def config() -> ExtensionConfig:
    return load_extension_config([str(FALLBACK)])


@pytest.fixture(scope="module")
def server(config: ExtensionConfig) -> Iterator[RunningServer]:
    running = start_in_process(config)
    yield running
    running.stop()


@pytest.fixture
def stub(server: RunningServer) -> Iterator[service_pb2_grpc.EnvoyGatewayExtensionStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield service_pb2_grpc.EnvoyGatewayExtensionStub(channel)


def request_of(resources: dict[str, list[dict[str, Any]]]) -> service_pb2.PostTranslateModifyRequest:
    request = service_pb2.PostTranslateModifyRequest()
    for field, kind in KINDS:
        for resource in resources.get(field, []):
            getattr(request, field).add().ParseFromString(xds.encode(kind, resource))
    return request


def inline_endpoints(resources: dict[str, list[dict[str, Any]]], name: str, localities: int = 1) -> None:
    """EG's DNS shape for ``name`` (what a Backend with fqdn endpoints gets): its EDS endpoints inline, the
    locality repeated ``localities`` times as backendRefs ``0..n-1``."""
    cluster = next(c for c in resources["clusters"] if c["name"] == name)
    assignment = copy.deepcopy(next(e for e in resources["endpoints"] if e["clusterName"] == name))
    template = assignment["endpoints"][0]
    assignment["endpoints"] = []
    for index in range(localities):
        locality = copy.deepcopy(template)
        locality["locality"]["region"] = f"{name}/backend/{index}"
        assignment["endpoints"].append(locality)
    cluster.pop("edsClusterConfig")
    cluster["type"] = "STRICT_DNS"
    cluster["loadAssignment"] = assignment


def egctl(localities: int = 2) -> dict[str, list[dict[str, Any]]]:
    resources = xds.egctl_case("from-gateway-api-to-xds")
    inline_endpoints(resources, AI_CLUSTER, localities)
    return resources


def by_name(response: Any, field: str, kind: str) -> dict[str, dict[str, Any]]:
    return {item.name: xds.decode(kind, item.SerializeToString()) for item in getattr(response, field)}


def raw_by_name(message: Any, field: str) -> dict[str, bytes]:
    return {item.name: item.SerializeToString() for item in getattr(message, field)}


def exchange(target: str, request: bytes) -> tuple[Any, Any]:
    """The request's very bytes to the server and its answer's, each resource as the bytes on the wire
    (encoding a message again may order its map entries differently: byte identity is about what EG sent)."""
    with grpc.insecure_channel(target) as channel:
        answer = channel.unary_unary(POST_TRANSLATE_MODIFY_PATH)(request, timeout=60)
    return WireRequest.FromString(request), WireResponse.FromString(answer)


def cluster_names(raws: Any) -> list[str]:
    return [cluster_pb2.Cluster.FromString(raw).name for raw in raws]


def test_method_path_is_egs() -> None:
    assert POST_TRANSLATE_MODIFY_PATH == "/envoygateway.extension.EnvoyGatewayExtension/PostTranslateModify"
    assert service_pb2.DESCRIPTOR.services_by_name["EnvoyGatewayExtension"].methods_by_name["PostTranslateModify"]


def test_ai_cluster_gets_endpoint_metadata_priorities_and_upstream_filters(stub: Any) -> None:
    response = stub.PostTranslateModify(request_of(egctl()))
    cluster = by_name(response, "clusters", "cluster")[AI_CLUSTER]
    localities = cluster["loadAssignment"]["endpoints"]
    assert [locality.get("priority", 0) for locality in localities] == [0, 1]
    tags = [locality["lbEndpoints"][0]["metadata"]["filterMetadata"]["tokenvoy"] for locality in localities]
    assert tags == [
        {"endpoint": "backend/rule/0/ref/0/openai", "backend": "openai"},
        {"endpoint": "backend/rule/0/ref/1/anthropic", "backend": "anthropic"},
    ]
    # EG's own locality metadata stays
    assert localities[0]["metadata"]["filterMetadata"]["envoy-gateway"]["resources"][0]["kind"] == "Service"
    options = cluster["typedExtensionProtocolOptions"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    names = [f["name"] for f in options["httpFilters"]]
    assert names == [
        UPSTREAM_FILTER,
        "envoy.filters.http.header_mutation/tokenvoy-content-length",
        "envoy.filters.http.upstream_codec",
    ]
    upstream = options["httpFilters"][0]["typedConfig"]
    assert upstream["grpcService"]["envoyGrpc"]["clusterName"] == EXTPROC_CLUSTER
    assert upstream["grpcService"]["initialMetadata"] == [{"key": "x-tokenvoy-role", "value": "upstream"}]
    assert "xds.upstream_host_metadata.filter_metadata['tokenvoy']['endpoint']" in upstream["requestAttributes"]
    assert upstream["processingMode"]["responseHeaderMode"] == "SKIP"  # the request headers only


def test_extproc_cluster_is_the_sidecar_socket(stub: Any, config: ExtensionConfig) -> None:
    response = stub.PostTranslateModify(request_of(egctl()))
    clusters = by_name(response, "clusters", "cluster")
    assert list(clusters)[-1] == EXTPROC_CLUSTER
    endpoint = clusters[EXTPROC_CLUSTER]["loadAssignment"]["endpoints"][0]["lbEndpoints"][0]["endpoint"]
    assert endpoint["address"] == {"pipe": {"path": config.extproc_socket}}
    options = clusters[EXTPROC_CLUSTER]["typedExtensionProtocolOptions"]
    assert (
        "http2ProtocolOptions"
        in options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicitHttpConfig"]
    )


def test_every_hcm_gets_the_router_ext_proc_disabled_before_the_router(stub: Any) -> None:
    request = request_of(egctl())
    response = stub.PostTranslateModify(request)
    hcms = 0
    for listener in by_name(response, "listeners", "listener").values():
        for chain in [*listener.get("filterChains", []), listener.get("defaultFilterChain", {})]:
            for network_filter in chain.get("filters", []):
                if network_filter["name"] != "envoy.filters.network.http_connection_manager":
                    continue
                filters = network_filter["typedConfig"]["httpFilters"]
                names = [f["name"] for f in filters]
                if "routeConfig" in network_filter["typedConfig"]:  # EG's ready listener: no AI route on it
                    assert ROUTER_FILTER not in names, listener["name"]
                    continue
                hcms += 1
                assert names.count(ROUTER_FILTER) == 1
                assert names.index(ROUTER_FILTER) == names.index("envoy.filters.http.router") - 1
                ours = filters[names.index(ROUTER_FILTER)]
                assert ours["disabled"] is True
                assert ours["typedConfig"]["processingMode"]["requestBodyMode"] == "BUFFERED"
                assert ours["typedConfig"]["grpcService"]["initialMetadata"] == [
                    {"key": "x-tokenvoy-role", "value": "router"}
                ]
    assert hcms >= 2  # EG's HTTP and HTTPS listeners of the example


def test_ai_routes_enable_it_and_get_the_fallback_retry_policy(stub: Any) -> None:
    response = stub.PostTranslateModify(request_of(egctl()))
    seen = 0
    for route_config in by_name(response, "routes", "route").values():
        for virtual_host in route_config["virtualHosts"]:
            for route in virtual_host["routes"]:
                per_filter = route.get("typedPerFilterConfig", {})
                if not route["name"].startswith(f"{AI_CLUSTER}/"):
                    assert ROUTER_FILTER not in per_filter
                    continue
                seen += 1
                # EG's own way to enable a disabled filter on a route (its ext_proc goldens): an empty config
                enable = per_filter[ROUTER_FILTER]
                assert enable["@type"] == "type.googleapis.com/envoy.config.route.v3.FilterConfig"
                assert enable["config"] in ({}, {"@type": ""})
                assert not enable.get("disabled")
                retry = route["route"]["retryPolicy"]
                assert retry["numRetries"] == 1  # one fallback: two backendRefs
                assert retry["retryPriority"]["name"] == "envoy.retry_priorities.previous_priorities"
                assert retry["retryHostPredicate"][0]["name"] == "envoy.retry_host_predicates.previous_hosts"
    assert seen >= 1


def test_untouched_resources_come_back_byte_identical(server: RunningServer) -> None:
    sent, answer = exchange(server.target, request_of(egctl()).SerializeToString())
    before = dict(zip(cluster_names(sent.clusters), sent.clusters, strict=True))
    after = dict(zip(cluster_names(answer.clusters), answer.clusters, strict=True))
    untouched = [name for name in before if name != AI_CLUSTER]
    assert untouched  # EG's gRPC, TCP, TLS and UDP route clusters
    for name in untouched:
        assert after[name] == before[name], name
    assert after[AI_CLUSTER] != before[AI_CLUSTER]
    assert list(answer.secrets) == list(sent.secrets)


def test_a_cluster_full_of_fields_we_do_not_model_comes_back_byte_identical(server: RunningServer) -> None:
    """EG's backend-TLS golden: transport socket matches, SDS, circuit breakers, LB policy, metadata..."""
    sent, answer = exchange(server.target, request_of(xds.xds_ir_case("backend-tls-settings")).SerializeToString())
    assert len(sent.clusters) >= 4
    assert list(answer.clusters[:-1]) == list(sent.clusters)
    assert cluster_names(answer.clusters[-1:]) == [EXTPROC_CLUSTER]


def test_our_subset_keeps_every_field_it_does_not_declare() -> None:
    """Parsed into our Cluster (3 fields declared) and written again: Envoy reads the same cluster."""
    for resource in xds.xds_ir_case("backend-tls-settings")["clusters"]:
        raw = xds.encode("cluster", resource)
        ours = cluster_pb2.Cluster.FromString(raw)
        assert len(unknown_fields.UnknownFieldSet(ours)) > 10
        assert xds.decode("cluster", ours.SerializeToString()) == xds.decode("cluster", raw)


def test_modified_cluster_keeps_every_field_it_does_not_model(stub: Any) -> None:
    resources = egctl()
    original = next(c for c in resources["clusters"] if c["name"] == AI_CLUSTER)
    response = stub.PostTranslateModify(request_of(resources))
    modified = by_name(response, "clusters", "cluster")[AI_CLUSTER]
    for key, value in original.items():
        if key in ("loadAssignment", "typedExtensionProtocolOptions"):
            continue
        assert modified[key] == value, key


def test_a_second_pass_changes_nothing(server: RunningServer) -> None:
    _, first = exchange(server.target, request_of(egctl()).SerializeToString())
    again = WireRequest(clusters=first.clusters, secrets=first.secrets, listeners=first.listeners, routes=first.routes)
    _, second = exchange(server.target, again.SerializeToString())
    assert second.SerializeToString() == first.SerializeToString()


def test_the_pure_function_gives_what_the_server_gives(stub: Any, config: ExtensionConfig) -> None:
    request = request_of(egctl())
    assert post_translate_modify(request, config) == stub.PostTranslateModify(request)


def test_eds_cluster_of_an_ai_route_is_refused_naming_it(stub: Any) -> None:
    resources = xds.egctl_case("from-gateway-api-to-xds")  # Service backend: endpoints over EDS
    with pytest.raises(grpc.RpcError) as caught:
        stub.PostTranslateModify(request_of(resources))
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert AI_CLUSTER in caught.value.details()
    assert "EDS" in caught.value.details()


def test_a_rule_the_config_does_not_have_is_refused_naming_the_cluster(stub: Any) -> None:
    resources = egctl()
    extra = copy.deepcopy(next(c for c in resources["clusters"] if c["name"] == AI_CLUSTER))
    not_found = copy.deepcopy(extra)
    not_found["name"] = "httproute/default/backend/rule/1"  # the rendered route-not-found rule: left alone
    extra["name"] = "httproute/default/backend/rule/3"
    resources["clusters"] += [not_found, extra]
    with pytest.raises(grpc.RpcError) as caught:
        stub.PostTranslateModify(request_of(resources))
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "httproute/default/backend/rule/3" in caught.value.details()
    assert "1 rule(s)" in caught.value.details()
    resources["clusters"].remove(extra)
    request = request_of(resources)
    response = stub.PostTranslateModify(request)
    assert raw_by_name(response, "clusters")[not_found["name"]] == raw_by_name(request, "clusters")[not_found["name"]]


def test_a_listener_without_a_router_is_refused_naming_it(stub: Any) -> None:
    resources = egctl()
    listener = next(
        item
        for item in resources["listeners"]
        if any(
            f["name"] == "envoy.filters.network.http_connection_manager"
            for chain in item.get("filterChains", [])
            for f in chain["filters"]
        )
    )
    for chain in listener["filterChains"]:
        for network_filter in chain["filters"]:
            if network_filter["name"] == "envoy.filters.network.http_connection_manager":
                network_filter["typedConfig"]["httpFilters"] = [
                    f for f in network_filter["typedConfig"]["httpFilters"] if f["name"] != "envoy.filters.http.router"
                ]
    with pytest.raises(grpc.RpcError) as caught:
        stub.PostTranslateModify(request_of(resources))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert f"listener {listener['name']}" in caught.value.details()


def test_bytes_that_do_not_parse_are_invalid_argument(server: RunningServer) -> None:
    with grpc.insecure_channel(server.target) as channel:
        call = channel.unary_unary(POST_TRANSLATE_MODIFY_PATH)
        with pytest.raises(grpc.RpcError) as caught:
            call(b"\x12\xff\xff")
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "PostTranslateModifyRequest" in caught.value.details()


def test_the_other_hooks_answer_their_resource_unchanged(stub: Any) -> None:
    resources = xds.xds_ir_case("backend-tls-settings")
    cluster = request_of(resources).clusters[0]
    context = context_pb2.PostClusterExtensionContext()
    context.backend_extension_resources.add(unstructured_bytes=b'{"kind": "Whatever"}')
    answer = stub.PostClusterModify(service_pb2.PostClusterModifyRequest(cluster=cluster, post_cluster_context=context))
    assert answer.cluster.SerializeToString() == cluster.SerializeToString()
    route = request_of(resources).routes[0].virtual_hosts[0].routes[0]
    answer = stub.PostRouteModify(service_pb2.PostRouteModifyRequest(route=route))
    assert answer.route.SerializeToString() == route.SerializeToString()


def test_envoy_accepts_what_the_hook_produces(config: ExtensionConfig, tmp_path: Path) -> None:
    """The real Envoy (``--mode validate``) on the hook's listeners, routes and clusters: the HTTP listeners
    with their route configurations inlined (EG serves them over RDS), the AI cluster and extproc's."""
    response = post_translate_modify(request_of(egctl()), config)
    routes = {r.name: xds.decode("route", r.SerializeToString()) for r in response.routes}
    listeners = []
    for raw in response.listeners:
        listener = xds.decode("listener", raw.SerializeToString())
        chains = [*listener.get("filterChains", []), *[listener[k] for k in ("defaultFilterChain",) if k in listener]]
        for chain in chains:
            for network_filter in chain["filters"]:
                hcm = network_filter.get("typedConfig", {})
                if "rds" in hcm:
                    route_config = routes[hcm.pop("rds")["routeConfigName"]]
                    hcm["routeConfig"] = route_config | {"validateClusters": False}
        if any("routeConfig" in f.get("typedConfig", {}) for chain in chains for f in chain["filters"]):
            listeners.append(listener)
    clusters = [
        xds.decode("cluster", c.SerializeToString())
        for c in response.clusters
        if c.name in (AI_CLUSTER, EXTPROC_CLUSTER)
    ]
    assert len(listeners) >= 2 and len(clusters) == 2
    # envoy-data-plane writes an empty Any as {"@type": ""}; EG's JSON (and Envoy's) is {}
    text = json.dumps({"staticResources": {"listeners": listeners, "clusters": clusters}})
    bootstrap = tmp_path / "envoy.json"
    bootstrap.write_text(text.replace('"config": {"@type": ""}', '"config": {}'))
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(bootstrap), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def _golden_cases() -> list[str]:
    return sorted({path.name.split(".")[0] for path in xds.XDS_IR.glob("*.listeners.yaml")})


def _egctl_cases() -> list[str]:
    return sorted(path.name.split(".")[0] for path in xds.EGCTL.glob("*.all.yaml"))


@pytest.mark.parametrize("case", [*(f"xds-ir/{c}" for c in _golden_cases()), *(f"egctl/{c}" for c in _egctl_cases())])
def test_on_every_eg_golden_only_the_http_connection_managers_change(case: str, tmp_path: Path) -> None:
    """EG's per-feature goldens (ext_proc, rate limits, JSON patches, backend TLS, ...) and its ``egctl
    translate`` examples, with a config whose AI route none of them has: clusters, routes and secrets come
    back byte-identical, each HTTP connection manager gains only the disabled router ext_proc, and a second
    pass changes nothing."""
    source, name = case.split("/")
    resources = xds.xds_ir_case(name) if source == "xds-ir" else xds.egctl_case(name)
    other = tmp_path / "other.yaml"
    other.write_text(FALLBACK.read_text().replace("  name: backend\n", "  name: chat\n"))
    config = load_extension_config([str(other)])
    assert list(config.routes) == [("default", "chat")]
    running = start_in_process(config)
    try:
        _only_hcms_change(running.target, resources)
    finally:
        running.stop()


def _only_hcms_change(target: str, resources: dict[str, list[dict[str, Any]]]) -> None:
    request, response = exchange(target, request_of(resources).SerializeToString())
    assert cluster_names(response.clusters[-1:]) == [EXTPROC_CLUSTER]
    assert list(response.clusters[:-1]) == list(request.clusters)
    assert list(response.routes) == list(request.routes)
    assert list(response.secrets) == list(request.secrets)
    for before, after in zip(request.listeners, response.listeners, strict=True):
        changed = xds.decode("listener", after)
        for chain in [*changed.get("filterChains", []), *[changed[k] for k in ("defaultFilterChain",) if k in changed]]:
            for network_filter in chain.get("filters", []):
                hcm = network_filter.get("typedConfig", {})
                if "httpFilters" in hcm:
                    names = [f["name"] for f in hcm["httpFilters"]]
                    # EG's ready listener (routes inline, none of them an AI route) is left as it is
                    assert names.count(ROUTER_FILTER) == (0 if "routeConfig" in hcm else 1), changed["name"]
                    hcm["httpFilters"] = [f for f in hcm["httpFilters"] if f["name"] != ROUTER_FILTER]
        assert changed == xds.decode("listener", before), changed["name"]
    again = WireRequest(
        clusters=response.clusters, secrets=response.secrets, listeners=response.listeners, routes=response.routes
    )
    assert exchange(target, again.SerializeToString())[1].SerializeToString() == response.SerializeToString()
