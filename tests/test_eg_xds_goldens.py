"""The EG emulator of ``tests/eg_xds.py`` against Envoy Gateway's own goldens, field by field.

Two sets of EG goldens (``../shared/envoy-gateway``):

- ``xds-ir``: EG's IR -> the listeners, routes, clusters, endpoints and secrets EG's xDS translator makes.
  Each case is compared whole, except the fields of features the emulator does not claim, which are named
  per case in :data:`IR_CASES` and removed from both sides before comparing;
- ``egctl-translate``: Gateway API resources -> EG's IR (``quickstart``'s ``xdsIR``) and -> the xDS config
  dumps ``egctl translate`` prints. Those dumps come from egctl's own defaults (its access log, a statPrefix
  without the port, no ``maxConnectionsToAcceptPerSocketEvent``), so listeners are compared on what a route
  and a filter chain depend on (names, address, filter order and filter configs, RDS name) and route
  configurations, clusters and endpoints whole.

Not compared: ``jsonpatch-with-jsonpath`` (EG's ``jsonPath`` patches are not emulated),
``backend-endpoint`` (its golden has resource statuses, no xDS); the TCP, UDP, TLS and GRPC listeners of
``from-gateway-api-to-xds`` and ``default-resources``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import eg_xds

GOLDENS = Path(__file__).resolve().parents[2] / "shared" / "envoy-gateway"
XDS_IR = GOLDENS / "xds-ir"
EGCTL = GOLDENS / "egctl-translate"
KINDS = ("listeners", "routes", "clusters", "endpoints", "secrets")

# case -> (features it checks, fields of features not emulated: removed from both sides before comparing)
IR_CASES: dict[str, tuple[str, frozenset[str]]] = {
    "ext-proc": ("EnvoyExtensionPolicy ext_proc: filter order, processing modes, per-route enabling", frozenset()),
    "ext-proc-with-retries": (
        "ext_proc to a TLS backend and to several endpoints",
        frozenset(
            {
                "retryPolicy",
                "circuitBreakers",
                "connectTimeout",
                "loadBalancingPolicy",
                "outlierDetection",
                "perConnectionBufferLimitBytes",
                "typedExtensionProtocolOptions",
                "upstreamConnectionOptions",
            }
        ),
    ),
    "ext-proc-with-traffic-settings": (
        "ext_proc with backend settings",
        frozenset(
            {
                "circuitBreakers",
                "connectTimeout",
                "loadBalancingPolicy",
                "outlierDetection",
                "perConnectionBufferLimitBytes",
                "typedExtensionProtocolOptions",
                "upstreamConnectionOptions",
            }
        ),
    ),
    "ext-proc-with-health-check-log": ("ext_proc cluster", frozenset({"healthChecks"})),
    "ratelimit": ("global rate limits: header matches, distinct, invert, request and response costs", frozenset()),
    "ratelimit-global-shared": ("shared global rate limits: one filter and domain per policy", frozenset()),
    "global-ratelimit-query-parameters": ("rate limit on header and query parameter matches", frozenset()),
    "http-route-with-metadata": ("route, virtual host, cluster and endpoint metadata", frozenset()),
    "backend-with-auto-host-sni": ("FQDN Backend: DNS cluster, TLS with SNI from the host", frozenset()),
    "backend-tls-settings": (
        "Backend and BackendTLSPolicy TLS: SNI, SANs, CA secrets, system trust store",
        frozenset({"tlsParams", "tlsCertificateSdsSecretConfigs", "tlsCertificate"}),
    ),
    "jsonpatch": ("EnvoyPatchPolicy JSON patches on each xDS type, HTTPS listener", frozenset()),
}


def _without(node: Any, keys: frozenset[str]) -> Any:
    if isinstance(node, dict):
        return {k: _without(v, keys) for k, v in node.items() if k not in keys}
    if isinstance(node, list):
        return [_without(v, keys) for v in node]
    return node


def _differences(ours: Any, golden: Any, path: str = "") -> list[str]:
    """Every field that differs, by its path (a readable failure instead of one huge diff)."""
    if isinstance(ours, dict) and isinstance(golden, dict):
        out = []
        for key in sorted(set(ours) | set(golden)):
            if key not in ours:
                out.append(f"{path}/{key}: missing (golden: {golden[key]!r:.200})")
            elif key not in golden:
                out.append(f"{path}/{key}: not in the golden (ours: {ours[key]!r:.200})")
            else:
                out += _differences(ours[key], golden[key], f"{path}/{key}")
        return out
    if isinstance(ours, list) and isinstance(golden, list):
        out = [] if len(ours) == len(golden) else [f"{path}: {len(ours)} items, golden {len(golden)}"]
        for index, (mine, theirs) in enumerate(zip(ours, golden, strict=False)):
            out += _differences(mine, theirs, f"{path}[{index}]")
        return out
    return [] if ours == golden else [f"{path}: {ours!r:.200} != golden {golden!r:.200}"]


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _without_client_certificate_secrets(secrets: list[dict[str, Any]], ignored: frozenset[str]) -> list[dict]:
    """Client certificates of Backend TLS are not emulated: their secrets leave the comparison with them."""
    if "tlsCertificateSdsSecretConfigs" not in ignored:
        return secrets
    return [secret for secret in secrets if "tlsCertificate" not in secret]


@pytest.mark.parametrize("case", sorted(IR_CASES))
def test_the_xds_of_an_ir_golden_is_eg_s(case: str) -> None:
    ir = _load(XDS_IR / "in" / f"{case}.yaml")
    xds = eg_xds.translate_ir(ir)
    if ir.get("envoyPatchPolicies"):
        xds = eg_xds.apply_patch_policies(xds, ir["envoyPatchPolicies"])
    _, ignored = IR_CASES[case]
    compared = 0
    for kind in KINDS:
        golden_path = XDS_IR / "out" / f"{case}.{kind}.yaml"
        if not golden_path.exists():
            assert not xds[kind], f"{case}: {kind} made, EG makes none"
            continue
        golden = _load(golden_path) or []
        ours = xds[kind]
        if kind == "secrets":
            golden = _without_client_certificate_secrets(golden, ignored)
            ours = _without_client_certificate_secrets(ours, ignored)
        differences = _differences(_without(ours, ignored), _without(golden, ignored))
        assert not differences, f"{case}.{kind}:\n" + "\n".join(differences[:40])
        compared += len(golden)
    assert compared > 0


def test_jsonpath_patches_are_refused_rather_than_misapplied() -> None:
    ir = _load(XDS_IR / "in" / "jsonpatch-with-jsonpath.yaml")
    with pytest.raises(NotImplementedError, match="jsonPath"):
        eg_xds.apply_patch_policies(eg_xds.translate_ir(ir), ir["envoyPatchPolicies"])


def _egctl_inputs(case: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((EGCTL / "in" / f"{case}.yaml").read_text()) if doc]


def _egctl_dumps(case: str) -> dict[str, list[dict[str, Any]]]:
    """The dynamic resources of egctl's config dumps for a case (every output file of it)."""
    out: dict[str, list[dict[str, Any]]] = {"listeners": [], "routes": [], "clusters": [], "endpoints": []}
    seen: set[tuple[str, str]] = set()
    for path in sorted((EGCTL / "out").glob(f"{case}.*.yaml")):
        doc = _load(path)
        for dump in (doc.get("xds") or {}).values():
            for config in dump.get("configs", [dump]):
                found = {
                    "listeners": [d["activeState"]["listener"] for d in config.get("dynamicListeners", [])],
                    "routes": [d["routeConfig"] for d in config.get("dynamicRouteConfigs", [])],
                    "clusters": [d["cluster"] for d in config.get("dynamicActiveClusters", [])],
                    "endpoints": [d["endpointConfig"] for d in config.get("dynamicEndpointConfigs", [])],
                }
                for kind, resources in found.items():
                    for resource in resources:
                        resource = {k: v for k, v in resource.items() if k != "@type"}
                        key = (kind, resource.get("name") or resource.get("clusterName"))
                        if key not in seen:
                            seen.add(key)
                            out[kind].append(resource)
    return out


def _name(resource: dict[str, Any]) -> str:
    return resource.get("name") or resource["clusterName"]


def _listener_shape(listener: dict[str, Any]) -> dict[str, Any]:
    """What a listener's routing depends on: name, address, HTTP filters in order, RDS name, buffer limit."""
    chain = listener.get("defaultFilterChain") or listener["filterChains"][0]
    hcm = chain["filters"][0]["typedConfig"]
    return {
        "name": listener["name"],
        "address": listener["address"],
        "httpFilters": hcm["httpFilters"],
        "routeConfigName": hcm["rds"]["routeConfigName"],
        "perConnectionBufferLimitBytes": listener.get("perConnectionBufferLimitBytes"),
    }


def test_quickstart_gateway_api_resources_become_eg_s_ir() -> None:
    golden = _load(EGCTL / "out" / "quickstart.all.yaml")["xdsIR"]
    ir = eg_xds.gateway_api_to_ir(_egctl_inputs("quickstart"))
    assert sorted(ir) == sorted(golden)
    for gateway, golden_ir in golden.items():
        differences = _differences(ir[gateway]["http"], golden_ir["http"])
        assert not differences, "\n".join(differences)


# case -> the EG features its HTTP part checks
EGCTL_CASES = {
    "quickstart": "HTTPRoute with a hostname to a Service: route name, virtual host, match, metadata",
    "from-gateway-api-to-xds": "HTTPRoute to a Service beside other listeners: routes, cluster, endpoints",
    "envoy-patch-policy": "EnvoyPatchPolicy on a listener (a filter before the router) and a new cluster",
    "default-resources": "HTTPRoute with a named rule to a Service port its spec does not list (cluster IP)",
}
# egctl's golden for envoy-patch-policy has a route configuration without virtual hosts (its HTTPRoute was
# not attached in that run, the route-level patch had nothing to apply to) and a ratelimit filter with
# `disableXEnvoyRatelimitedHeader` that the patch does not set: compared without both.
EGCTL_UNCOMPARABLE = {"envoy-patch-policy": {"routes", "httproute-clusters"}}


@pytest.mark.parametrize("case", sorted(EGCTL_CASES))
def test_egctl_translate_goldens_route_and_filter_like_eg(case: str) -> None:
    resources = _egctl_inputs(case)
    golden = _egctl_dumps(case)
    irs = eg_xds.gateway_api_to_ir(resources)
    patches = [doc for doc in resources if doc.get("kind") == "EnvoyPatchPolicy"]
    compared = 0
    for ir in irs.values():
        xds = eg_xds.translate_ir(ir)
        if patches:
            xds = eg_xds.apply_patch_policies(xds, patches)
        skip = EGCTL_UNCOMPARABLE.get(case, set())
        for kind in ("listeners", "routes", "clusters", "endpoints"):
            if kind in skip:
                continue
            theirs = {_name(r): r for r in golden[kind]}
            ours = {_name(r): r for r in xds[kind]}
            if "httproute-clusters" in skip and kind in ("clusters", "endpoints"):
                ours = {n: r for n, r in ours.items() if not n.startswith("httproute/")}
            if not theirs:
                continue  # egctl printed no such resources for this case (quickstart: routes only)
            assert set(ours) <= set(theirs), f"{case} {kind}: {sorted(set(ours) - set(theirs))} not in EG's"
            for name, resource in ours.items():
                mine, eg = copy.deepcopy(resource), copy.deepcopy(theirs[name])
                if kind == "listeners":
                    mine, eg = _listener_shape(mine), _listener_shape(eg)
                    if case == "envoy-patch-policy":
                        for http_filter in eg["httpFilters"]:
                            http_filter["typedConfig"].pop("disableXEnvoyRatelimitedHeader", None)
                differences = _differences(mine, eg)
                assert not differences, f"{case} {kind} {name}:\n" + "\n".join(differences)
                compared += 1
    assert compared >= 1


def test_the_envoy_patch_policy_inserts_the_filter_before_the_router() -> None:
    """Beyond equality: the patched chain is the one a user wanted (rate limit first, router last)."""
    resources = _egctl_inputs("envoy-patch-policy")
    (ir,) = eg_xds.gateway_api_to_ir(resources).values()
    patches = [doc for doc in resources if doc.get("kind") == "EnvoyPatchPolicy"]
    xds = eg_xds.apply_patch_policies(eg_xds.translate_ir(ir), patches)
    (listener,) = xds["listeners"]
    names = [f["name"] for f in _listener_shape(listener)["httpFilters"]]
    assert names == ["envoy.filters.http.ratelimit", "envoy.filters.http.router"]
    (route_config,) = xds["routes"]
    assert route_config["virtualHosts"][0]["rateLimits"] == [{"actions": [{"remoteAddress": {}}]}]
    assert "rate-limit-cluster" in {c["name"] for c in xds["clusters"]}


def test_proto_name_conversion_leaves_struct_keys_and_map_keys_alone() -> None:
    """EnvoyPatchPolicy paths are written in proto names; metadata keys and filter names are data."""
    resource = {
        "perConnectionBufferLimitBytes": 1,
        "metadata": {"filterMetadata": {"envoy-gateway": {"resources": [{"sectionName": "http"}]}}},
        "typedPerFilterConfig": {"envoy.filters.http.ext_proc/x": {"@type": "t", "config": {}}},
    }
    snake = eg_xds.to_proto_names(resource)
    assert snake == {
        "per_connection_buffer_limit_bytes": 1,
        "metadata": {"filter_metadata": {"envoy-gateway": {"resources": [{"sectionName": "http"}]}}},
        "typed_per_filter_config": {"envoy.filters.http.ext_proc/x": {"@type": "t", "config": {}}},
    }
    assert eg_xds.to_json_names(snake) == resource


def test_tokenvoys_rendered_manifests_become_eg_shaped_xds() -> None:
    """What ``render --target envoy-gateway`` emits for the default config, through the emulator: the names
    an extension server looks for, the router ext_proc enabled on every AI route, the budget charged at
    stream end from the token metadata, the catch-all rule last, the 50 MiB buffer limits."""
    from tokenvoy.config.defaults import default_config_yaml
    from tokenvoy.config.loader import parse_documents
    from tokenvoy.render.envoy_gateway import render_envoy_gateway

    manifests = render_envoy_gateway(parse_documents("<default>", default_config_yaml({})))
    services = {("default", "tokenvoy-extproc", 1063): ("10.0.0.5", 1063)}
    irs = eg_xds.gateway_api_to_ir(manifests.resources(), services)
    assert list(irs) == ["default/tokenvoy"]
    xds = eg_xds.translate_ir(irs["default/tokenvoy"])
    (listener,) = xds["listeners"]
    assert listener["name"] == "default/tokenvoy/http"
    assert listener["address"]["socketAddress"]["portValue"] == 1975
    assert listener["perConnectionBufferLimitBytes"] == 50 * 1024 * 1024
    filters = _listener_shape(listener)["httpFilters"]
    ext_proc_filter = "envoy.filters.http.ext_proc/envoyextensionpolicy/default/tokenvoy-extproc/extproc/0"
    assert [f["name"] for f in filters] == [
        ext_proc_filter,
        "envoy.filters.http.ratelimit",
        "envoy.filters.http.router",
    ]
    ext_proc = filters[0]
    assert ext_proc["disabled"] is True
    config = ext_proc["typedConfig"]
    assert config["processingMode"] == {
        "requestBodyMode": "BUFFERED",
        "requestHeaderMode": "SEND",
        "requestTrailerMode": "SKIP",
        "responseBodyMode": "BUFFERED",
        "responseHeaderMode": "SEND",
        "responseTrailerMode": "SKIP",
    }
    assert config["allowModeOverride"] is True and "failureModeAllow" not in config
    assert config["metadataOptions"] == {"receivingNamespaces": {"untyped": ["io.envoy.ai_gateway"]}}
    assert config["grpcService"]["envoyGrpc"] == {
        "authority": "tokenvoy-extproc.default:1063",
        "clusterName": "envoyextensionpolicy/default/tokenvoy-extproc/0/tokenvoy-extproc",
    }
    (route_config,) = xds["routes"]
    (vhost,) = route_config["virtualHosts"]
    routes = vhost["routes"]
    assert routes[0]["name"] == "httproute/default/default/rule/0/match/0/*"
    assert routes[0]["match"] == {
        "headers": [{"name": "x-ai-eg-model", "stringMatch": {"exact": "gpt-4o-mini"}}],
        "prefix": "/",
    }
    assert routes[0]["route"]["cluster"] == "httproute/default/default/rule/0"
    assert routes[0]["route"]["autoHostRewrite"] is True and routes[0]["route"]["timeout"] == "300s"
    catch_all = routes[-1]  # the default config's last rule has no match: sorted after every header match
    assert catch_all["match"] == {"prefix": "/"} and catch_all["route"]["cluster"].endswith("/rule/7")
    for route in routes:
        assert ext_proc_filter in route["typedPerFilterConfig"], route["name"]
    charged = routes[0]["typedPerFilterConfig"]["envoy.filters.http.ratelimit"]["rateLimits"]
    assert charged[0]["hitsAddend"] == {"number": "0"}
    assert charged[1]["applyOnStreamDone"] is True
    assert charged[1]["hitsAddend"] == {"format": "%DYNAMIC_METADATA(io.envoy.ai_gateway:llm_total_token)%"}
    assert charged[1]["actions"][1] == {
        "requestHeaders": {"descriptorKey": "rule-0-match-0", "headerName": "x-user-id"}
    }
    clusters = {c["name"]: c for c in xds["clusters"]}
    backend = clusters["httproute/default/default/rule/0"]
    assert backend["clusterType"]["name"] == "envoy.cluster.dns"  # the fake provider's Service name, an FQDN
    assert backend["perConnectionBufferLimitBytes"] == 50 * 1024 * 1024
    assert eg_xds.RATELIMIT_CLUSTER in clusters
    (domain,) = eg_xds.ratelimit_domains(irs["default/tokenvoy"])
    assert domain["domain"] == "default/tokenvoy/http"
    first = domain["descriptors"][0]
    assert first["key"] == first["value"] == "httproute/default/default/rule/0/match/0/*"
    (per_user,) = first["descriptors"]
    assert per_user["key"] == "rule-0-match-0" and per_user["value"] == ""  # distinct: a counter per value
    assert per_user["rate_limit"] == {
        "requests_per_unit": 100000,
        "unit": "HOUR",
        "unlimited": False,
        "name": "",
        "replaces": [],
    }


@pytest.mark.parametrize("case", ["ext-proc", "ratelimit", "backend-tls-settings", "jsonpatch"])
def test_the_extension_managers_request_carries_every_resource_unchanged(case: str) -> None:
    """What the e2e sends the extension server is EG's xDS in Envoy's binary encoding: decoded, the same
    resources (numbers written as strings in proto3 JSON come back as numbers)."""
    ir = _load(XDS_IR / "in" / f"{case}.yaml")
    xds = eg_xds.translate_ir(ir)
    raw = eg_xds.post_translate_modify_request(xds)
    # the response numbers its fields one lower than the request (no extension context): shift them back
    shifted = bytearray()
    position = 0
    while position < len(raw):
        tag, position = eg_xds._read_varint(raw, position)
        length, position = eg_xds._read_varint(raw, position)
        shifted += eg_xds._varint(((tag >> 3) - 1) << 3 | 2) + eg_xds._varint(length)
        shifted += raw[position : position + length]
        position += length
    back = eg_xds.post_translate_modify_response(bytes(shifted), xds["endpoints"])
    for kind in ("listeners", "routes", "clusters", "secrets"):
        assert len(back[kind]) == len(xds[kind])
        for ours, decoded in zip(xds[kind], back[kind], strict=True):
            assert _differences(_numbers(decoded), _numbers(ours)) == []


def _numbers(node: Any) -> Any:
    """proto3 JSON writes 64-bit integers as strings; compare them as numbers."""
    if isinstance(node, dict):
        return {k: _numbers(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_numbers(v) for v in node]
    return int(node) if isinstance(node, str) and node.isdigit() else node


def test_the_rendered_backend_tls_policies_make_eg_verify_the_providers_certificate() -> None:
    """AI Gateway's own example, rendered: each TLS Backend's cluster speaks TLS with the provider's name as
    SNI, checks that name in the certificate and trusts the system CAs (EG's secret for a BackendTLSPolicy)."""
    from tokenvoy.render.envoy_gateway import render_envoy_gateway
    from tokenvoy.render.gateway_cli import read_documents

    manifests = render_envoy_gateway(read_documents([str(GOLDENS / "ai-gateway" / "translate_basic.in.yaml")]))
    services = {
        ("default", "tokenvoy-extproc", 1063): ("10.0.0.5", 1063),
        ("default", "envoy-ai-gateway-basic-testupstream", 80): ("10.0.0.6", 80),
    }
    (ir,) = eg_xds.gateway_api_to_ir(manifests.resources(), services).values()
    xds = eg_xds.translate_ir(ir)
    clusters = {c["name"]: c for c in xds["clusters"]}
    secrets = {s["name"]: s for s in xds["secrets"]}
    for rule, host, policy in (
        (0, "api.openai.com", "envoy-ai-gateway-basic-openai-tls"),
        (1, "bedrock-runtime.us-east-1.amazonaws.com", "envoy-ai-gateway-basic-aws-tls"),
    ):
        cluster = clusters[f"httproute/default/envoy-ai-gateway-basic/rule/{rule}"]
        assert cluster["transportSocket"]["name"] == "dummy.transport_socket"  # no plaintext fallback
        (match,) = cluster["transportSocketMatches"]
        tls = match["transportSocket"]["typedConfig"]
        assert tls["sni"] == host
        validation = tls["commonTlsContext"]["combinedValidationContext"]
        assert validation["defaultValidationContext"]["matchTypedSubjectAltNames"] == [
            {"matcher": {"exact": host}, "sanType": "DNS"}
        ]
        ca = validation["validationContextSdsSecretConfig"]["name"]
        assert ca == f"{policy}/default-ca"
        assert secrets[ca] == {"name": ca, "validationContext": {"trustedCa": {"filename": eg_xds.SYSTEM_CA_FILE}}}
    assert "transportSocketMatches" not in clusters["httproute/default/envoy-ai-gateway-basic/rule/2"]


RATELIMIT = GOLDENS / "ratelimit-config"


def _ir_from_ratelimit_golden(case: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The IR route a ratelimit-config golden was made from, read back from its route ``rate_limits`` (the
    actions say each rule's matches, the configuration its limit); None for several routes in one case or a
    match the emulator does not make (remote addresses, methods, paths, regexes)."""
    route_docs = [doc for doc in yaml.safe_load_all((RATELIMIT / f"{case}.routes.yaml").read_text()) if doc]
    if len(route_docs) != 1:
        return None
    (routes,) = route_docs
    configs = [doc for doc in yaml.safe_load_all((RATELIMIT / f"{case}.yaml").read_text()) if doc]
    route_name = routes["routeName"]
    leaves: dict[tuple[str, ...], dict[str, Any]] = {}

    def walk(domain: str, node: dict[str, Any], path: tuple[str, ...]) -> None:
        path = (*path, node["key"], node["value"])
        if node.get("rate_limit"):
            leaves[(domain, *path)] = node
        for child in node.get("descriptors") or []:
            walk(domain, child, path)

    for config in configs:
        for descriptor in config["descriptors"]:
            walk(config["domain"], descriptor, ())
    rules: list[dict[str, Any]] = []
    seen: set[tuple[str, ...]] = set()
    listener = "first-listener"
    for domain, limits in routes["rateLimitsByDomain"].items():
        for entry in limits:
            specs = [action["ActionSpecifier"] for action in entry["actions"]]
            kinds = {kind for spec in specs for kind in spec}
            if not kinds <= {"GenericKey", "RequestHeaders", "HeaderValueMatch", "QueryParameterValueMatch"}:
                return None
            key = specs[0]["GenericKey"]["descriptor_key"]
            rule: dict[str, Any] = {}
            path: tuple[str, ...] = (domain, key, key)
            for spec in specs[1:]:
                ((kind, action),) = spec.items()
                if "-match-" not in action["descriptor_key"]:
                    return None  # rule-<i>-method, rule-<i>-path: method and path matches, not emulated
                if kind == "RequestHeaders":
                    rule.setdefault("headerMatches", []).append({"name": action["header_name"], "distinct": True})
                    path += (action["descriptor_key"], "")
                    continue
                path += (action["descriptor_key"], action["descriptor_value"])
                if kind == "GenericKey":
                    continue  # rule-<i>-match--1: a rule without matches
                (match,) = action.get("headers") or action.get("query_parameters")
                specifier = "HeaderMatchSpecifier" if kind == "HeaderValueMatch" else "QueryParameterMatchSpecifier"
                exact = (match.get(specifier) or match)["StringMatch"]["MatchPattern"].get("Exact")
                if exact is None:
                    return None
                item: dict[str, Any] = {"name": match["name"], "exact": exact}
                if kind == "HeaderValueMatch":
                    if not (action.get("expect_match") or {}).get("value", True):
                        item["invert"] = True
                    rule.setdefault("headerMatches", []).append(item)
                else:
                    rule.setdefault("queryParamMatches", []).append(item)
            if path in seen:
                continue  # the stream-end entry of a rule with a response cost
            seen.add(path)
            leaf = leaves[path]
            rule["limit"] = {"requests": leaf["rate_limit"]["requests_per_unit"], "unit": leaf["rate_limit"]["unit"]}
            if key == route_name:
                listener = domain
            else:
                rule |= {"name": key, "shared": True}
            rules.append(rule)
    route = {"name": route_name, "hostname": "*", "traffic": {"rateLimit": {"global": {"rules": rules}}}}
    return {"http": [{"name": listener, "routes": [route]}]}, configs


# the cases whose route and matches the emulator makes (the others: remote addresses, methods, paths, regexes,
# several routes or listeners)
RATELIMIT_CASES = sorted(
    case
    for case in (path.name.removesuffix(".yaml") for path in RATELIMIT.glob("*.yaml"))
    if not case.endswith(".routes") and _ir_from_ratelimit_golden(case) is not None
)


def test_most_ratelimit_goldens_are_compared() -> None:
    assert len(RATELIMIT_CASES) >= 8, RATELIMIT_CASES


@pytest.mark.parametrize("case", RATELIMIT_CASES)
def test_the_ratelimit_configuration_is_the_one_eg_generates(case: str) -> None:
    found = _ir_from_ratelimit_golden(case)
    assert found is not None
    ir, golden = found
    ours = eg_xds.ratelimit_domains(ir)
    assert _differences(sorted(ours, key=lambda d: d["domain"]), sorted(golden, key=lambda d: d["domain"])) == []
