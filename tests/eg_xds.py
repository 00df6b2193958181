"""An Envoy Gateway (EG) emulator for tests: Kubernetes manifests -> EG's IR -> the xDS EG serves to Envoy.

No EG binary can run here, so the tests of ``render --target envoy-gateway`` need EG's translation some other
way. This module reproduces the part of it those manifests use, in EG's two stages:

- :func:`gateway_api_to_ir`: Gateway, HTTPRoute (header and path matches, ``ExtensionRef`` HTTPRouteFilters:
  host rewrite to the Backend, direct responses; request timeouts), Backend (IP and FQDN endpoints), Service
  backendRefs (their cluster IP), BackendTLSPolicy, EnvoyExtensionPolicy ext_proc, BackendTrafficPolicy
  global rate limits (header selectors, request and response costs) and buffer limits, ClientTrafficPolicy
  buffer limits -> EG's xDS IR, in the YAML shape of EG's own IR goldens;
- :func:`translate_ir`: that IR -> listeners, route configurations, clusters, endpoints and secrets, with EG's
  names (``<ns>/<gateway>/<listener>``, ``httproute/<ns>/<route>/rule/<i>[/match/<j>/<host>]``), HTTP filter
  order (ext_proc by policy index then name, rate limit, router), per-route filter enabling and the
  ``envoy-gateway`` resource metadata, as protobuf JSON (camelCase) like EG's goldens;
- :func:`apply_patch_policies`: EnvoyPatchPolicy JSON patches, applied with ``jsonpatch`` on the proto-name
  (snake_case) JSON of the named resource, as EG does;
- :func:`ratelimit_domains`: the envoyproxy/ratelimit configuration EG's rate limit service would load for the
  IR's global rate limits (one domain per listener, or per policy for shared rules), in EG's YAML form;
- :func:`post_translate_modify_request` / :func:`post_translate_modify_response`: the xDS as EG's extension
  manager sends it to an extension server (Envoy's binary encoding, by envoy-data-plane) and back;
  :func:`wire_resources` / :func:`request_of_wire_resources`: the same messages' resources as raw bytes;
- :func:`write_file_based`: the xDS as files for Envoy's file-based xDS (``ads`` config sources become paths),
  optionally under EG's own bootstrap; :func:`eg_default_resources` reads that bootstrap and EG's ready
  listener (the resources EG emits for every Gateway) from an ``egctl translate`` golden.

It is checked against EG's goldens in ``tests/test_eg_xds_goldens.py``; what it does not emulate is listed in
:data:`NOT_EMULATED`.
"""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonpatch
import yaml

NOT_EMULATED = (
    "TCP, UDP, TLS and GRPC routes; HTTPS listeners from Gateway TLS settings (an IR listener's tls is emulated)",
    "EG's default access log and EnvoyProxy settings (its bootstrap and ready listener are read from an egctl "
    "golden by eg_default_resources, not generated)",
    "route sorting beyond EG's main keys (path match kind and length, header and query match counts)",
    "BackendTLSPolicy/Backend TLS: ciphers, curves, signature algorithms, TLS versions, client certificates",
    "retries, health checks, circuit breakers, outlier detection, load balancer settings other than the default",
    "JWT, OIDC, ext_authz, CORS, Lua, Wasm, local rate limits, fault injection, mirrors, redirects",
    "EG's mutual TLS to its rate limit service (the cluster gets it only when the IR names a client certificate)",
    "EnvoyPatchPolicy jsonPath operations (refused with NotImplementedError), patch priorities beyond their order",
    "EnvoyProxy resources (pod and deployment patches, e.g. extension mode's extproc sidecar)",
    "policy status conditions and every validation EG makes before translating",
)

EG_METADATA = "envoy-gateway"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
EXT_PROC = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
RATE_LIMIT = "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit"
RATE_LIMIT_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute"
FILTER_CONFIG = "type.googleapis.com/envoy.config.route.v3.FilterConfig"
UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
DOWNSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
LEAST_REQUEST = "type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest"
DNS_CLUSTER = "type.googleapis.com/envoy.extensions.clusters.dns.v3.DnsCluster"
RATELIMIT_CLUSTER = "ratelimit_cluster"
RATELIMIT_SERVICE = "envoy-ratelimit.envoy-gateway-system.svc.cluster.local"
SYSTEM_CA_FILE = "/etc/ssl/certs/ca-certificates.crt"
DEFAULT_BUFFER_LIMIT = 32768
ADS = {"ads": {}, "initialFetchTimeout": "0s", "resourceApiVersion": "V3"}

TYPE_URLS = {
    "listeners": "type.googleapis.com/envoy.config.listener.v3.Listener",
    "routes": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
    "clusters": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "endpoints": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    "secrets": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
}
Xds = dict[str, list[dict[str, Any]]]  # "listeners" | "routes" | "clusters" | "endpoints" | "secrets" -> resources


# --------------------------------------------------------------------------------------------------------------
# IR -> xDS


def translate_ir(ir: dict[str, Any], ratelimit: tuple[str, int] = (RATELIMIT_SERVICE, 8081)) -> Xds:
    """EG's xDS translator for the IR features listed in the module docstring. ``ratelimit``: where EG's
    rate limit Service is (EG's own name for it in its namespace unless a test runs one elsewhere)."""
    xds: Xds = {kind: [] for kind in TYPE_URLS}
    clusters: dict[str, dict[str, Any]] = {}
    needs_ratelimit = False
    client_certificate = (ir.get("globalResources") or {}).get("envoyClientCertificate")
    for listener in ir.get("http") or []:
        routes = listener.get("routes") or []
        filters = _http_filters(listener, routes)
        needs_ratelimit |= any(f["name"].startswith("envoy.filters.http.ratelimit") for f in filters)
        xds["listeners"].append(_listener(listener, filters, xds["secrets"]))
        xds["routes"].append(_route_configuration(listener, routes))
        for route in routes:
            destination = route.get("destination")
            if destination and destination["name"] not in clusters:
                clusters[destination["name"]] = _cluster(destination, route, xds)
        for route in routes:  # EG adds the ext_proc clusters after the routes' own
            for ext_proc in (route.get("envoyExtensions") or {}).get("extProcs") or []:
                name = ext_proc["destination"]["name"]
                if name not in clusters:
                    clusters[name] = _cluster(ext_proc["destination"], None, xds)
    xds["clusters"] = list(clusters.values())
    if needs_ratelimit:
        xds["clusters"].append(_ratelimit_cluster(client_certificate, ratelimit))
    if (ir.get("metrics") or {}).get("enablePerEndpointStats"):
        for cluster in xds["clusters"]:
            cluster["trackClusterStats"] = {"perEndpointStats": True}
    if client_certificate:  # the Envoy's own certificate, for mutual TLS to EG's rate limit service
        xds["secrets"].append(
            {
                "name": client_certificate["name"],
                "tlsCertificate": {
                    "certificateChain": {"inlineBytes": _b64(client_certificate["certificate"])},
                    "privateKey": {"inlineBytes": _b64(client_certificate["privateKey"])},
                },
            }
        )
    return xds


def _listener(listener: dict[str, Any], filters: list[dict[str, Any]], secrets: list[dict[str, Any]]) -> dict:
    port = listener["port"]
    tls = listener.get("tls")
    hcm: dict[str, Any] = {
        "@type": HCM,
        "commonHttpProtocolOptions": {"headersWithUnderscoresAction": "REJECT_REQUEST"},
        "http2ProtocolOptions": {
            "initialConnectionWindowSize": 1048576,
            "initialStreamWindowSize": 65536,
            "maxConcurrentStreams": 100,
        },
        "httpFilters": filters,
    }
    path = listener.get("path") or {}
    if path.get("mergeSlashes"):
        hcm["mergeSlashes"] = True
    hcm["normalizePath"] = True
    if path.get("escapedSlashesAction") == "UnescapeAndRedirect":
        hcm["pathWithEscapedSlashesAction"] = "UNESCAPE_AND_REDIRECT"
    hcm["rds"] = {"configSource": dict(ADS), "routeConfigName": listener["name"]}
    hcm["serverHeaderTransformation"] = "PASS_THROUGH"
    hcm["statPrefix"] = f"{'https' if tls else 'http'}-{port}"
    hcm["useRemoteAddress"] = True
    chain: dict[str, Any] = {
        "filters": [{"name": "envoy.filters.network.http_connection_manager", "typedConfig": hcm}],
        "name": listener["name"],
    }
    out: dict[str, Any] = {"address": {"socketAddress": {"address": listener["address"], "portValue": port}}}
    if tls:
        context: dict[str, Any] = {}
        if tls.get("alpnProtocols"):
            context["alpnProtocols"] = list(tls["alpnProtocols"])
        context["tlsCertificateSdsSecretConfigs"] = [
            {"name": cert["name"], "sdsConfig": dict(ADS)} for cert in tls.get("certificates") or []
        ]
        for cert in tls.get("certificates") or []:
            secrets.append(
                {
                    "name": cert["name"],
                    "tlsCertificate": {
                        "certificateChain": {"inlineBytes": _b64(cert["certificate"])},
                        "privateKey": {"inlineBytes": _b64(cert["privateKey"])},
                    },
                }
            )
        chain["transportSocket"] = {
            "name": "envoy.transport_sockets.tls",
            "typedConfig": {
                "@type": DOWNSTREAM_TLS,
                "commonTlsContext": context,
                "disableStatefulSessionResumption": True,
                "disableStatelessSessionResumption": True,
            },
        }
        out["filterChains"] = [chain]
    else:
        out["defaultFilterChain"] = chain
    out["maxConnectionsToAcceptPerSocketEvent"] = 1
    out["name"] = listener["name"]
    buffer_limit = (listener.get("connection") or {}).get("bufferLimit", DEFAULT_BUFFER_LIMIT)
    out["perConnectionBufferLimitBytes"] = buffer_limit
    return out


def _b64(data: list[int] | str | bytes) -> str:
    if isinstance(data, str):
        return data if _is_base64(data) else base64.b64encode(data.encode()).decode()
    return base64.b64encode(bytes(data)).decode()


def _is_base64(text: str) -> bool:
    try:
        return base64.b64encode(base64.b64decode(text, validate=True)).decode() == text
    except ValueError:
        return False


def _filter_index(name: str) -> int:
    return int(name.rsplit("/", 1)[1])


def _http_filters(listener: dict[str, Any], routes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The listener's filter chain: one disabled ext_proc per policy entry (enabled per route), the global
    rate limit filters, the router; EG's order: ext_proc at 100 + its index, rate limit 303, router last."""
    ordered: list[tuple[int, str, dict[str, Any]]] = []
    seen: set[str] = set()
    for route in routes:
        for ext_proc in (route.get("envoyExtensions") or {}).get("extProcs") or []:
            name = f"envoy.filters.http.ext_proc/{ext_proc['name']}"
            if name not in seen:
                seen.add(name)
                config = {"disabled": True, "name": name, "typedConfig": _ext_proc_config(ext_proc)}
                ordered.append((100 + _filter_index(ext_proc["name"]), name, config))
    rules = [rule for route in routes for rule in _global_rules(route)]
    if any(not rule.get("shared") for rule in rules):
        ordered.append(
            (303, "envoy.filters.http.ratelimit", _ratelimit_filter("envoy.filters.http.ratelimit", listener["name"]))
        )
    for rule in rules:
        if rule.get("shared"):
            policy = _shared_domain(rule)
            name = f"envoy.filters.http.ratelimit/{policy}"
            if name not in seen:
                seen.add(name)
                ordered.append((303, name, _ratelimit_filter(name, policy)))
    ordered.sort(key=lambda item: (item[0], item[1]))
    router = {"name": "envoy.filters.http.router", "typedConfig": {"@type": ROUTER, "suppressEnvoyHeaders": True}}
    return [config for _, _, config in ordered] + [router]


def _ratelimit_filter(name: str, domain: str) -> dict[str, Any]:
    return {
        "name": name,
        "typedConfig": {
            "@type": RATE_LIMIT,
            "disableXEnvoyRatelimitedHeader": True,
            "domain": domain,
            "enableXRatelimitHeaders": "DRAFT_VERSION_03",
            "rateLimitService": {
                "grpcService": {"envoyGrpc": {"clusterName": RATELIMIT_CLUSTER}},
                "transportApiVersion": "V3",
            },
        },
    }


_BODY_MODES = {
    "Buffered": "BUFFERED",
    "Streamed": "STREAMED",
    "BufferedPartial": "BUFFERED_PARTIAL",
    "FullDuplexStreamed": "FULL_DUPLEX_STREAMED",
}


def _ext_proc_config(ext_proc: dict[str, Any]) -> dict[str, Any]:
    """EG's ``extProcConfig``: the gRPC service with its authority, the processing mode and its options."""
    config: dict[str, Any] = {"@type": EXT_PROC}
    if ext_proc.get("allowModeOverride"):
        config["allowModeOverride"] = True
    if ext_proc.get("failOpen"):
        config["failureModeAllow"] = True
    config["grpcService"] = {
        "envoyGrpc": {"authority": ext_proc["authority"], "clusterName": ext_proc["destination"]["name"]},
        "timeout": "10s",
    }
    if ext_proc.get("messageTimeout"):
        config["messageTimeout"] = ext_proc["messageTimeout"]
    forwarding = ext_proc.get("forwardingMetadataNamespaces")
    receiving = ext_proc.get("receivingMetadataNamespaces")
    if forwarding is not None or receiving is not None:
        options = {}
        if forwarding is not None:
            options["forwardingNamespaces"] = {"untyped": list(forwarding)}
        if receiving is not None:
            options["receivingNamespaces"] = {"untyped": list(receiving)}
        config["metadataOptions"] = options
    if ext_proc.get("shadowMode"):
        config["observabilityMode"] = True
    mode: dict[str, Any] = {}
    request_body = _BODY_MODES.get(ext_proc.get("requestBodyProcessingMode", ""))
    response_body = _BODY_MODES.get(ext_proc.get("responseBodyProcessingMode", ""))
    if request_body:
        mode["requestBodyMode"] = request_body
    mode["requestHeaderMode"] = "SEND" if ext_proc.get("requestHeaderProcessing") else "SKIP"
    mode["requestTrailerMode"] = "SEND" if request_body == "FULL_DUPLEX_STREAMED" else "SKIP"
    if response_body:
        mode["responseBodyMode"] = response_body
    mode["responseHeaderMode"] = "SEND" if ext_proc.get("responseHeaderProcessing") else "SKIP"
    mode["responseTrailerMode"] = "SEND" if response_body == "FULL_DUPLEX_STREAMED" else "SKIP"
    config["processingMode"] = mode
    if ext_proc.get("requestAttributes"):
        config["requestAttributes"] = list(ext_proc["requestAttributes"])
    if ext_proc.get("responseAttributes"):
        config["responseAttributes"] = list(ext_proc["responseAttributes"])
    if ext_proc.get("statusOnError"):
        config["statusOnError"] = {"code": _HTTP_STATUS_NAMES.get(ext_proc["statusOnError"], ext_proc["statusOnError"])}
    return dict(sorted(config.items(), key=lambda item: (item[0] != "@type", item[0])))


_HTTP_STATUS_NAMES = {500: "InternalServerError", 502: "BadGateway", 503: "ServiceUnavailable", 504: "GatewayTimeout"}


def _vhost_name(listener: str, hostname: str) -> str:
    return f"{listener}/{hostname.replace('.', '_')}"


def _route_configuration(listener: dict[str, Any], routes: list[dict[str, Any]]) -> dict[str, Any]:
    hosts: dict[str, dict[str, Any]] = {}
    for route in routes:
        hostname = route.get("hostname", "")
        vhost = hosts.get(hostname)
        if vhost is None:
            vhost = {"domains": [hostname]}
            if listener.get("metadata"):
                vhost["metadata"] = _metadata(listener["metadata"])
            vhost["name"] = _vhost_name(listener["name"], hostname)
            vhost["routes"] = []
            hosts[hostname] = vhost
        vhost["routes"].append(_route(route, listener))
    return {"ignorePortInHostMatching": True, "name": listener["name"], "virtualHosts": list(hosts.values())}


def _metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """EG's ``buildXdsMetadata``: the owning resource under ``envoy-gateway``, annotations as a map."""
    resource: dict[str, Any] = {}
    if meta.get("annotations"):
        resource["annotations"] = {item["key"]: item["value"] for item in meta["annotations"]}
    for key in ("kind", "name", "namespace", "sectionName"):
        if meta.get(key):
            resource[key] = meta[key]
    return {"filterMetadata": {EG_METADATA: {"resources": [resource]}}}


def _string_match(match: dict[str, Any]) -> dict[str, Any]:
    for key in ("exact", "prefix", "suffix"):
        if key in match:
            return {key: match[key]}
    if "safeRegex" in match:
        return {"safeRegex": {"regex": match["safeRegex"]}}
    raise ValueError(f"unsupported string match {match}")


def _route_match(route: dict[str, Any]) -> dict[str, Any]:
    match: dict[str, Any] = {}
    headers = []
    for header in route.get("headerMatches") or []:
        item: dict[str, Any] = {"name": header["name"]}
        if header.get("invert"):
            item["invertMatch"] = True
        item["stringMatch"] = _string_match(header)
        headers.append(item)
    if headers:
        match["headers"] = headers
    path = route.get("pathMatch") or {"prefix": "/"}
    if "exact" in path:
        match["path"] = path["exact"]
    elif "safeRegex" in path:
        match["safeRegex"] = {"regex": path["safeRegex"]}
    elif path.get("prefix", "/") == "/":
        match["prefix"] = "/"
    else:
        match["pathSeparatedPrefix"] = path["prefix"].rstrip("/")
    queries = [
        {"name": query["name"], "stringMatch": _string_match(query)} for query in route.get("queryParamMatches") or []
    ]
    if queries:
        match["queryParameters"] = queries
    return match


def _route(route: dict[str, Any], listener: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"match": _route_match(route)}
    if route.get("metadata"):
        out["metadata"] = _metadata(route["metadata"])
    if route.get("name"):
        out["name"] = route["name"]
    headers_to_add = [
        {
            "appendAction": "APPEND_IF_EXISTS_OR_ADD" if header.get("append") else "OVERWRITE_IF_EXISTS_OR_ADD",
            "header": {"key": header["name"], "value": ",".join(header["value"])},
        }
        for header in route.get("addResponseHeaders") or []
    ]
    if route.get("directResponse") is not None:
        response = route["directResponse"]
        action: dict[str, Any] = {"status": response.get("statusCode", 200)}
        if response.get("body"):  # EG: a text format string with the body as inline bytes
            body = base64.b64encode(response["body"].encode()).decode()
            action["bodyFormat"] = {"textFormatSource": {"inlineBytes": body}}
        out["directResponse"] = action
    else:
        action = {"cluster": route["destination"]["name"]}
        rewrite = route.get("urlRewrite") or {}
        host = rewrite.get("host") or {}
        if host.get("backend"):
            action["appendXForwardedHost"] = True
            action["autoHostRewrite"] = True
        elif host.get("name"):
            action["appendXForwardedHost"] = True
            action["hostRewriteLiteral"] = host["name"]
        timeout = (((route.get("traffic") or {}).get("timeout") or {}).get("http") or {}).get("requestTimeout")
        if timeout:
            action["timeout"] = timeout
        action["upgradeConfigs"] = [{"upgradeType": "websocket"}]
        out["route"] = dict(sorted(action.items()))
    if headers_to_add:
        out["responseHeadersToAdd"] = headers_to_add
    per_filter = {}
    for ext_proc in (route.get("envoyExtensions") or {}).get("extProcs") or []:
        per_filter[f"envoy.filters.http.ext_proc/{ext_proc['name']}"] = {"@type": FILTER_CONFIG, "config": {}}
    per_filter.update(_ratelimit_per_route(route, listener["name"]))
    if per_filter:
        out["typedPerFilterConfig"] = dict(sorted(per_filter.items()))
    return out


# --------------------------------------------------------------------------------------------------------------
# global rate limits


def _global_rules(route: dict[str, Any]) -> list[dict[str, Any]]:
    return ((((route.get("traffic") or {}).get("rateLimit") or {}).get("global")) or {}).get("rules") or []


def _shared_domain(rule: dict[str, Any]) -> str:
    """A shared rule's domain is its policy (``<ns>/<policy>``): its name without ``/rule/<i>``."""
    return rule["name"].rsplit("/rule/", 1)[0]


def _domain_indexes(rules: list[dict[str, Any]]) -> list[int]:
    """EG's ``getDomainRuleIndex``: a rule's index among the rules of its kind (shared or not) on the route."""
    out, counts = [], {True: 0, False: 0}
    for rule in rules:
        shared = bool(rule.get("shared"))
        out.append(counts[shared])
        counts[shared] += 1
    return out


def _rule_actions(route: dict[str, Any], index: int, rule: dict[str, Any]) -> list[dict[str, Any]]:
    key = rule["name"] if rule.get("shared") else route["name"]
    actions: list[dict[str, Any]] = [{"genericKey": {"descriptorKey": key, "descriptorValue": key}}]
    matches = 0
    for header in rule.get("headerMatches") or []:
        descriptor = f"rule-{index}-match-{matches}"
        matches += 1
        if header.get("distinct"):
            actions.append({"requestHeaders": {"descriptorKey": descriptor, "headerName": header["name"]}})
        else:
            actions.append(
                {
                    "headerValueMatch": {
                        "descriptorKey": descriptor,
                        "descriptorValue": descriptor,
                        "expectMatch": not header.get("invert", False),
                        "headers": [{"name": header["name"], "stringMatch": _string_match(header)}],
                    }
                }
            )
    for query in rule.get("queryParamMatches") or []:
        descriptor = f"rule-{index}-match-{matches}"
        matches += 1
        actions.append(
            {
                "queryParameterValueMatch": {
                    "descriptorKey": descriptor,
                    "descriptorValue": descriptor,
                    "expectMatch": True,
                    "queryParameters": [{"name": query["name"], "stringMatch": _string_match(query)}],
                }
            }
        )
    if matches == 0:
        descriptor = f"rule-{index}-match--1"
        actions.append({"genericKey": {"descriptorKey": descriptor, "descriptorValue": descriptor}})
    return actions


def _cost(cost: dict[str, Any]) -> dict[str, Any]:
    if "number" in cost:
        return {"number": str(cost["number"])}
    return {"format": cost["format"]}


def _rate_limits(route: dict[str, Any], index: int, rule: dict[str, Any]) -> list[dict[str, Any]]:
    """EG's route ``rate_limits`` for one rule: one at request time (its cost, if any), and one applied at
    stream end with the response cost."""
    actions = _rule_actions(route, index, rule)
    limit = rule.get("limit") or {}
    from_metadata = limit.get("fromMetadata")
    dynamic_limit = (
        {
            "dynamicMetadata": {
                "metadataKey": {"key": from_metadata["namespace"], "path": [{"key": from_metadata["key"]}]}
            }
        }
        if from_metadata
        else None
    )
    request: dict[str, Any] = {"actions": actions}
    if rule.get("requestCost"):
        request["hitsAddend"] = _cost(rule["requestCost"])
    if dynamic_limit:
        request["limit"] = dynamic_limit
    out = [request]
    if rule.get("responseCost"):
        response: dict[str, Any] = {"actions": copy.deepcopy(actions), "applyOnStreamDone": True}
        response["hitsAddend"] = _cost(rule["responseCost"])
        if dynamic_limit:
            response["limit"] = copy.deepcopy(dynamic_limit)
        out.append(response)
    return out


def _ratelimit_per_route(route: dict[str, Any], listener: str) -> dict[str, Any]:
    per_filter: dict[str, Any] = {}
    rules = _global_rules(route)
    for index, rule in zip(_domain_indexes(rules), rules, strict=True):
        if rule.get("shared"):
            domain = _shared_domain(rule)
            name = f"envoy.filters.http.ratelimit/{domain}"
        else:
            domain, name = listener, "envoy.filters.http.ratelimit"
        entry = per_filter.setdefault(name, {"@type": RATE_LIMIT_PER_ROUTE, "domain": domain, "rateLimits": []})
        entry["rateLimits"] += _rate_limits(route, index, rule)
    return per_filter


_DESCRIPTOR_FLAGS = ("shadow_mode", "quota_mode", "detailed_metric", "value_to_metric", "share_threshold")


def _descriptor(key: str, value: str, rate_limit: dict[str, Any] | None) -> dict[str, Any]:
    """One descriptor as EG dumps its ratelimit configuration (every field, defaults included)."""
    return {
        "key": key,
        "value": value,
        "rate_limit": rate_limit,
        "descriptors": [],
        **dict.fromkeys(_DESCRIPTOR_FLAGS, False),
    }


def ratelimit_domains(ir: dict[str, Any]) -> list[dict[str, Any]]:
    """The envoyproxy/ratelimit configuration EG's rate limit service gets for the IR's global rules, one
    domain per listener (per policy for shared rules), in the YAML form of EG's ratelimit-config goldens."""
    domains: dict[str, dict[str, Any]] = {}
    for listener in ir.get("http") or []:
        for route in listener.get("routes") or []:
            rules = _global_rules(route)
            for index, rule in zip(_domain_indexes(rules), rules, strict=True):
                domain = _shared_domain(rule) if rule.get("shared") else listener["name"]
                key = rule["name"] if rule.get("shared") else route["name"]
                config = domains.setdefault(domain, {"name": domain, "domain": domain, "descriptors": []})
                top = next((d for d in config["descriptors"] if d["key"] == key), None)
                if top is None:
                    top = _descriptor(key, key, None)
                    config["descriptors"].append(top)
                elif rule.get("shared"):
                    continue  # a shared rule is one counter, however many routes it is on
                limit = {
                    "requests_per_unit": rule["limit"]["requests"],
                    "unit": rule["limit"]["unit"].upper(),
                    "unlimited": False,
                    "name": "",
                    "replaces": [],
                }
                chain = [
                    (spec["descriptorKey"], spec.get("descriptorValue", ""))
                    for action in _rule_actions(route, index, rule)[1:]
                    for spec in action.values()
                ]
                node = top
                for position, (child_key, child_value) in enumerate(chain):
                    child = _descriptor(child_key, child_value, limit if position == len(chain) - 1 else None)
                    node["descriptors"].append(child)
                    node = child
    return list(domains.values())


# --------------------------------------------------------------------------------------------------------------
# clusters, endpoints, secrets


def _locality_endpoints(destination: dict[str, Any], with_tls_match: bool) -> list[dict[str, Any]]:
    out = []
    for setting in destination.get("settings") or []:
        lb_endpoints = []
        for endpoint in setting.get("endpoints") or []:
            lb: dict[str, Any] = {
                "endpoint": {
                    "address": {"socketAddress": {"address": endpoint["host"], "portValue": endpoint["port"]}}
                },
                "loadBalancingWeight": 1,
            }
            if with_tls_match and setting.get("tls"):
                lb["metadata"] = {
                    "filterMetadata": {"envoy.transport_socket_match": {"name": _tls_match_name(destination, setting)}}
                }
            lb_endpoints.append(lb)
        locality: dict[str, Any] = {
            **({"lbEndpoints": lb_endpoints} if lb_endpoints else {}),
            "loadBalancingWeight": setting.get("weight", 1),
            "locality": {"region": setting["name"]},
        }
        if setting.get("metadata"):
            locality["metadata"] = _metadata(setting["metadata"])
        out.append(locality)
    return out


def _tls_match_name(destination: dict[str, Any], setting: dict[str, Any]) -> str:
    """Named by the setting's index among all the destination's settings."""
    index = next(i for i, other in enumerate(destination["settings"]) if other is setting)
    return f"{destination['name']}/tls/{index}"


def _cluster(destination: dict[str, Any], route: dict[str, Any] | None, xds: Xds) -> dict[str, Any]:
    settings = destination.get("settings") or []
    fqdn = any(s.get("addressType") == "FQDN" for s in settings)
    grpc = any(s.get("protocol") == "GRPC" for s in settings)
    tls_settings = [s for s in settings if s.get("tls")]
    cluster: dict[str, Any] = {"circuitBreakers": {"thresholds": [{"maxRetries": 1024}]}}
    if fqdn:
        cluster["clusterType"] = {
            "name": "envoy.cluster.dns",
            "typedConfig": {
                "@type": DNS_CLUSTER,
                "dnsLookupFamily": "V4_PREFERRED",
                "dnsRefreshRate": "30s",
                "respectDnsTtl": True,
            },
        }
    cluster["commonLbConfig"] = {}
    cluster["connectTimeout"] = "10s"
    cluster["dnsLookupFamily"] = "V4_PREFERRED"
    if not fqdn:
        cluster["edsClusterConfig"] = {
            "edsConfig": {"ads": {}, "resourceApiVersion": "V3"},
            "serviceName": destination["name"],
        }
    cluster["ignoreHealthOnHostRemoval"] = True
    if fqdn:
        cluster["loadAssignment"] = {
            "clusterName": destination["name"],
            "endpoints": _locality_endpoints(destination, with_tls_match=True),
        }
    else:
        assignment = {"clusterName": destination["name"], "endpoints": _locality_endpoints(destination, False)}
        if tls_settings:
            for locality, setting in zip(assignment["endpoints"], settings, strict=True):
                if setting.get("tls"):
                    for lb in locality.get("lbEndpoints", []):
                        lb["metadata"] = {
                            "filterMetadata": {
                                "envoy.transport_socket_match": {"name": _tls_match_name(destination, setting)}
                            }
                        }
        xds["endpoints"].append(assignment)
    cluster["loadBalancingPolicy"] = {
        "policies": [
            {
                "typedExtensionConfig": {
                    "name": "envoy.load_balancing_policies.least_request",
                    "typedConfig": {"@type": LEAST_REQUEST, "localityLbConfig": {"localityWeightedLbConfig": {}}},
                }
            }
        ]
    }
    if destination.get("metadata"):
        cluster["metadata"] = _metadata(destination["metadata"])
    cluster["name"] = destination["name"]
    backend_connection = ((route or {}).get("traffic") or {}).get("backendConnection") or {}
    cluster["perConnectionBufferLimitBytes"] = backend_connection.get("bufferLimit", DEFAULT_BUFFER_LIMIT)
    if tls_settings and len(tls_settings) == len(settings):  # else plaintext unless an endpoint's match says TLS
        cluster["transportSocket"] = {
            "name": "dummy.transport_socket",
            "typedConfig": {"@type": UPSTREAM_TLS, "commonTlsContext": {}},
        }
    if tls_settings:
        cluster["transportSocketMatches"] = [
            {
                "match": {"name": _tls_match_name(destination, setting)},
                "name": _tls_match_name(destination, setting),
                "transportSocket": {
                    "name": "envoy.transport_sockets.tls",
                    "typedConfig": _upstream_tls(setting["tls"], xds["secrets"]),
                },
            }
            for setting in tls_settings
        ]
    if not fqdn:
        cluster["type"] = "EDS"
    if grpc:
        cluster["typedExtensionProtocolOptions"] = {
            HTTP_PROTOCOL_OPTIONS: {
                "@type": f"type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}",
                "explicitHttpConfig": {
                    "http2ProtocolOptions": {"initialConnectionWindowSize": 1048576, "initialStreamWindowSize": 65536}
                },
            }
        }
    elif tls_settings:
        options: dict[str, Any] = {
            "@type": f"type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}",
            "autoConfig": {
                "http2ProtocolOptions": {"initialConnectionWindowSize": 1048576, "initialStreamWindowSize": 65536},
                "httpProtocolOptions": {},
            },
        }
        if any(not s["tls"].get("sni") and not s["tls"].get("autoSNIFromEndpointHostname") for s in tls_settings):
            options["upstreamHttpProtocolOptions"] = {"autoSni": True}  # SNI from each request's Host
        cluster["typedExtensionProtocolOptions"] = {HTTP_PROTOCOL_OPTIONS: options}
    return cluster


def _upstream_tls(tls: dict[str, Any], secrets: list[dict[str, Any]]) -> dict[str, Any]:
    """The UpstreamTlsContext of a TLS setting: SNI (or SNI and SAN from the endpoint's hostname), the CA as an
    SDS secret (the system trust store as a file), subject alternative names."""
    context: dict[str, Any] = {"@type": UPSTREAM_TLS}
    if tls.get("autoSNIFromEndpointHostname"):
        context["autoHostSni"] = True
    if not tls.get("sni"):
        context["autoSniSanValidation"] = True
    common: dict[str, Any] = {}
    if tls.get("alpnProtocols"):
        common["alpnProtocols"] = list(tls["alpnProtocols"])
    ca = tls.get("caCertificate")
    if ca:
        default: dict[str, Any] = {}
        sans = []
        for san in tls.get("subjectAltNames") or []:
            if "uri" in san:
                sans.append({"matcher": {"exact": san["uri"]}, "sanType": "URI"})
            elif "hostname" in san:
                sans.append({"matcher": {"exact": san["hostname"]}, "sanType": "DNS"})
        if not sans and tls.get("sni"):  # EG checks the certificate against the SNI it sends
            sans.append({"matcher": {"exact": tls["sni"]}, "sanType": "DNS"})
        if sans:
            default["matchTypedSubjectAltNames"] = sans
        common["combinedValidationContext"] = {
            "defaultValidationContext": default,
            "validationContextSdsSecretConfig": {"name": ca["name"], "sdsConfig": dict(ADS)},
        }
        if not any(secret["name"] == ca["name"] for secret in secrets):
            trusted = (
                {"inlineBytes": _b64(ca["certificate"])} if ca.get("certificate") else {"filename": SYSTEM_CA_FILE}
            )
            secrets.append({"name": ca["name"], "validationContext": {"trustedCa": trusted}})
    context["commonTlsContext"] = common
    if tls.get("sni"):
        context["sni"] = tls["sni"]
    return context


def _ratelimit_cluster(client_certificate: dict[str, Any] | None, address: tuple[str, int]) -> dict[str, Any]:
    """EG's cluster for its rate limit service (mutual TLS with the Envoy's certificate when the IR has one)."""
    destination = {
        "name": RATELIMIT_CLUSTER,
        "settings": [
            {
                "addressType": "FQDN",
                "endpoints": [{"host": address[0], "port": address[1]}],
                "name": f"{RATELIMIT_CLUSTER}/backend/-1",
                "protocol": "GRPC",
            }
        ],
    }
    cluster = _cluster(destination, None, {"endpoints": [], "secrets": []})
    if client_certificate:
        cluster["transportSocket"] = {
            "name": "envoy.transport_sockets.tls",
            "typedConfig": {
                "@type": UPSTREAM_TLS,
                "commonTlsContext": {
                    "tlsCertificateSdsSecretConfigs": [{"name": client_certificate["name"], "sdsConfig": dict(ADS)}],
                    "tlsParams": {"tlsMaximumProtocolVersion": "TLSv1_3"},
                    "validationContext": {"trustedCa": {"filename": "/certs/ca.crt"}},
                },
            },
        }
    return dict(sorted(cluster.items()))


# --------------------------------------------------------------------------------------------------------------
# Gateway API -> IR


def _ns(resource: dict[str, Any], default: str) -> str:
    return (resource.get("metadata") or {}).get("namespace") or default


def _duration_seconds(text: str) -> str:
    """A Gateway API duration (``300s``, ``1m``, ``1h30m``) as EG's IR writes it (Go's ``time.Duration``)."""
    seconds = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text):
        seconds += float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    whole = int(seconds)
    return f"{whole}s" if whole == seconds else f"{seconds:.3f}s"


def _quantity_bytes(quantity: str | int) -> int:
    if isinstance(quantity, int):
        return quantity
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|k|M|G)?", quantity)
    if not match:
        raise ValueError(f"unsupported quantity {quantity!r}")
    unit = {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "k": 1000, "M": 10**6, "G": 10**9}[match[2]]
    return int(match[1]) * unit


def _host_suffix(hostname: str) -> str:
    return hostname.replace(".", "_")


def _target_names(policy: dict[str, Any], kind: str) -> list[str]:
    refs = list(policy["spec"].get("targetRefs") or [])
    if policy["spec"].get("targetRef"):
        refs.append(policy["spec"]["targetRef"])
    return [ref["name"] for ref in refs if ref.get("kind") == kind]


def gateway_api_to_ir(
    resources: Iterable[dict[str, Any]],
    services: dict[tuple[str, str, int | None], tuple[str, int]] | None = None,
    default_namespace: str = "envoy-gateway-system",
) -> dict[str, dict[str, Any]]:
    """EG's Gateway API translator for the kinds listed in the module docstring: ``<ns>/<gateway>`` -> its IR.

    ``services`` maps ``(namespace, name, port)`` of a Service to the address EG would find for it (EG reads
    EndpointSlices, or the cluster IP, from the API server; here a test says where it listens)."""
    services = dict(services or {})
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for resource in resources:
        if isinstance(resource, dict) and resource.get("kind"):
            by_kind.setdefault(resource["kind"], []).append(resource)
    for service in by_kind.get("Service", []):
        ip = (service.get("spec") or {}).get("clusterIP")
        if ip:  # egctl translate: the cluster IP, on the backendRef's port (``None``: any port)
            services.setdefault((_ns(service, default_namespace), service["metadata"]["name"], None), (ip, 0))
    backends = {(_ns(b, default_namespace), b["metadata"]["name"]): b for b in by_kind.get("Backend", [])}
    filters = {(_ns(f, default_namespace), f["metadata"]["name"]): f for f in by_kind.get("HTTPRouteFilter", [])}
    tls_policies = {}
    for policy in by_kind.get("BackendTLSPolicy", []):
        for ref in policy["spec"].get("targetRefs") or []:
            tls_policies[(_ns(policy, default_namespace), ref.get("kind", "Service"), ref["name"])] = policy
    client_policies = by_kind.get("ClientTrafficPolicy", [])
    out: dict[str, dict[str, Any]] = {}
    listeners: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for gateway in by_kind.get("Gateway", []):
        namespace = _ns(gateway, default_namespace)
        name = gateway["metadata"]["name"]
        ir = out.setdefault(f"{namespace}/{name}", {"http": []})
        buffer_limit = None
        for policy in client_policies:
            if _ns(policy, default_namespace) == namespace and name in _target_names(policy, "Gateway"):
                limit = (policy["spec"].get("connection") or {}).get("bufferLimit")
                if limit is not None:
                    buffer_limit = _quantity_bytes(limit)
        for section in gateway["spec"].get("listeners") or []:
            if section.get("protocol") != "HTTP":
                continue  # TCP, UDP, TLS, HTTPS: not emulated
            kinds = ((section.get("allowedRoutes") or {}).get("kinds")) or [{"kind": "HTTPRoute"}]
            if not any(kind.get("kind") == "HTTPRoute" for kind in kinds):
                continue  # a listener for GRPCRoutes only: not emulated
            port = section["port"]
            listener: dict[str, Any] = {
                "address": "0.0.0.0",
                "externalPort": port,
                "hostnames": [section.get("hostname", "*")],
                "metadata": {"kind": "Gateway", "name": name, "namespace": namespace, "sectionName": section["name"]},
                "name": f"{namespace}/{name}/{section['name']}",
                "path": {"escapedSlashesAction": "UnescapeAndRedirect", "mergeSlashes": True},
                "port": port + 10000 if port < 1024 else port,
                "routes": [],
            }
            if buffer_limit is not None:
                listener["connection"] = {"bufferLimit": buffer_limit}
            ir["http"].append(listener)
            listeners.setdefault((namespace, name), []).append(listener)
    extension_policies = by_kind.get("EnvoyExtensionPolicy", [])
    traffic_policies = by_kind.get("BackendTrafficPolicy", [])
    for route in by_kind.get("HTTPRoute", []):
        namespace = _ns(route, default_namespace)
        route_name = route["metadata"]["name"]
        ext_procs = _route_ext_procs(route_name, namespace, extension_policies, services, default_namespace)
        traffic = _route_traffic(route_name, namespace, traffic_policies, default_namespace)
        for parent in route["spec"].get("parentRefs") or []:
            gateway_ns = parent.get("namespace") or namespace
            for listener in listeners.get((gateway_ns, parent["name"]), []):
                if parent.get("sectionName") and not listener["name"].endswith(f"/{parent['sectionName']}"):
                    continue
                hostnames = route["spec"].get("hostnames") or ["*"]
                ir_routes = []
                for rule_index, rule in enumerate(route["spec"].get("rules") or []):
                    destination = _destination(
                        route_name, namespace, rule_index, rule, backends, tls_policies, services
                    )
                    for match_index, match in enumerate(rule.get("matches") or [{"path": {"value": "/"}}]):
                        for hostname in hostnames:
                            ir_route = _ir_route(
                                route_name, namespace, rule_index, match_index, hostname, rule, match, filters
                            )
                            if ir_route.get("directResponse") is None:
                                ir_route["destination"] = copy.deepcopy(destination)
                            if ext_procs:
                                ir_route["envoyExtensions"] = {"extProcs": copy.deepcopy(ext_procs)}
                            route_traffic = copy.deepcopy(traffic)
                            timeout = (rule.get("timeouts") or {}).get("request")
                            if timeout:
                                route_traffic.setdefault("timeout", {})["http"] = {
                                    "requestTimeout": _duration_seconds(timeout)
                                }
                            if route_traffic:
                                ir_route["traffic"] = route_traffic
                            ir_routes.append(ir_route)
                listener["routes"] += ir_routes
    for ir in out.values():
        for listener in ir["http"]:
            listener["routes"].sort(key=_route_order)
    return out


def _route_order(route: dict[str, Any]) -> tuple[int, int, int, int]:
    """EG sorts a listener's routes: exact paths first, then regexes, then prefixes by length, then by the number
    of header and query matches (more first); Python's stable sort keeps the HTTPRoute's order among ties."""
    path = route.get("pathMatch") or {}
    kind = 0 if "exact" in path else 1 if "safeRegex" in path else 2
    length = len(path.get("exact") or path.get("safeRegex") or path.get("prefix") or "")
    return (kind, -length, -len(route.get("headerMatches") or []), -len(route.get("queryParamMatches") or []))


def _ir_route(
    route_name: str,
    namespace: str,
    rule_index: int,
    match_index: int,
    hostname: str,
    rule: dict[str, Any],
    match: dict[str, Any],
    filters: dict[tuple[str, str], dict[str, Any]],
) -> dict[str, Any]:
    ir_route: dict[str, Any] = {}
    headers = []
    for header in match.get("headers") or []:
        kind = header.get("type", "Exact")
        headers.append({"name": header["name"], ("exact" if kind == "Exact" else "safeRegex"): header["value"]})
    if headers:
        ir_route["headerMatches"] = headers
    ir_route["hostname"] = hostname
    ir_route["isHTTP2"] = False
    ir_route["metadata"] = {"kind": "HTTPRoute", "name": route_name, "namespace": namespace}
    if rule.get("name"):
        ir_route["metadata"]["sectionName"] = rule["name"]
    ir_route["name"] = (
        f"httproute/{namespace}/{route_name}/rule/{rule_index}/match/{match_index}/{_host_suffix(hostname)}"
    )
    path = match.get("path") or {"value": "/"}
    path_type = path.get("type", "PathPrefix")
    key = {"PathPrefix": "prefix", "Exact": "exact", "RegularExpression": "safeRegex"}[path_type]
    ir_route["pathMatch"] = {"distinct": False, "name": "", key: path.get("value", "/")}
    queries = [{"name": q["name"], "exact": q["value"]} for q in match.get("queryParams") or []]
    if queries:
        ir_route["queryParamMatches"] = queries
    for item in rule.get("filters") or []:
        if item.get("type") != "ExtensionRef":
            continue  # the Gateway API's own filters: not emulated
        ref = item["extensionRef"]
        spec = filters[(namespace, ref["name"])]["spec"]
        if "urlRewrite" in spec:
            hostname_rewrite = (spec["urlRewrite"] or {}).get("hostname") or {}
            if hostname_rewrite.get("type") == "Backend":
                ir_route["urlRewrite"] = {"host": {"backend": True}}
        if "directResponse" in spec:
            response = spec["directResponse"]
            direct: dict[str, Any] = {"statusCode": response.get("statusCode", 200)}
            body = (response.get("body") or {}).get("inline")
            if body is not None:
                direct["body"] = body
            ir_route["directResponse"] = direct
            if response.get("contentType"):
                ir_route["addResponseHeaders"] = [{"name": "Content-Type", "value": [response["contentType"]]}]
    return ir_route


def _service_setting(
    key: tuple[str, str, int], name: str, protocol: str, services: dict[tuple[str, str, int], tuple[str, int]]
) -> dict[str, Any]:
    if key in services:
        host, port = services[key]
    elif (key[0], key[1], None) in services:
        host, port = services[(key[0], key[1], None)][0], key[2]
    else:
        raise KeyError(f"Service {key[0]}/{key[1]}:{key[2]}: no address given for it (services=...)")
    return {  # no addressType: EG leaves it out for a Service's cluster IP
        "endpoints": [{"host": host, "port": port}],
        "metadata": {"kind": "Service", "name": key[1], "namespace": key[0], "sectionName": str(key[2])},
        "name": name,
        "protocol": protocol,
        "weight": 1,
    }


def _destination(
    route_name: str,
    namespace: str,
    rule_index: int,
    rule: dict[str, Any],
    backends: dict[tuple[str, str], dict[str, Any]],
    tls_policies: dict[tuple[str, str, str], dict[str, Any]],
    services: dict[tuple[str, str, int], tuple[str, int]],
) -> dict[str, Any]:
    name = f"httproute/{namespace}/{route_name}/rule/{rule_index}"
    settings = []
    for index, ref in enumerate(rule.get("backendRefs") or []):
        setting_name = f"{name}/backend/{index}"
        ref_ns = ref.get("namespace") or namespace
        if ref.get("kind") == "Backend":
            backend = backends[(ref_ns, ref["name"])]
            endpoints, address_type = [], "IP"
            for endpoint in backend["spec"]["endpoints"]:
                if "fqdn" in endpoint:
                    address_type = "FQDN"
                    endpoints.append({"host": endpoint["fqdn"]["hostname"], "port": endpoint["fqdn"]["port"]})
                else:
                    endpoints.append({"host": endpoint["ip"]["address"], "port": endpoint["ip"]["port"]})
            setting: dict[str, Any] = {
                "addressType": address_type,
                "endpoints": endpoints,
                "metadata": {"kind": "Backend", "name": ref["name"], "namespace": ref_ns},
                "name": setting_name,
                "protocol": "HTTP",
            }
            policy = tls_policies.get((ref_ns, "Backend", ref["name"]))
            if policy is not None:
                setting["tls"] = _backend_tls(policy, ref_ns)
            setting["weight"] = ref.get("weight", 1)
        else:
            setting = _service_setting((ref_ns, ref["name"], ref["port"]), setting_name, "HTTP", services)
            setting["weight"] = ref.get("weight", 1)
            policy = tls_policies.get((ref_ns, "Service", ref["name"]))
            if policy is not None:
                setting["tls"] = _backend_tls(policy, ref_ns)
        settings.append(setting)
    metadata = {"kind": "HTTPRoute", "name": route_name, "namespace": namespace}
    if rule.get("name"):
        metadata["sectionName"] = rule["name"]
    return {"metadata": metadata, "name": name, "settings": settings}


def _backend_tls(policy: dict[str, Any], namespace: str) -> dict[str, Any]:
    validation = policy["spec"].get("validation") or {}
    tls: dict[str, Any] = {"caCertificate": {"name": f"{policy['metadata']['name']}/{namespace}-ca"}}
    if validation.get("hostname"):
        tls["sni"] = validation["hostname"]
    sans = []
    for san in validation.get("subjectAltNames") or []:
        sans.append({"uri": san["uri"]} if san.get("type") == "URI" else {"hostname": san["hostname"]})
    if sans:
        tls["subjectAltNames"] = sans
    if validation.get("wellKnownCACertificates") == "System":
        tls["useSystemTrustStore"] = True
    return tls


def _route_ext_procs(
    route_name: str,
    namespace: str,
    policies: list[dict[str, Any]],
    services: dict[tuple[str, str, int], tuple[str, int]],
    default_namespace: str,
) -> list[dict[str, Any]]:
    """The ext_procs of the EnvoyExtensionPolicies targeting this HTTPRoute, as EG's ``buildExtProc``."""
    out = []
    for policy in policies:
        policy_ns = _ns(policy, default_namespace)
        if policy_ns != namespace or route_name not in _target_names(policy, "HTTPRoute"):
            continue
        policy_name = policy["metadata"]["name"]
        for index, ext_proc in enumerate(policy["spec"].get("extProc") or []):
            ref = ext_proc["backendRefs"][0]
            ref_ns = ref.get("namespace") or policy_ns
            cluster = f"envoyextensionpolicy/{policy_ns}/{policy_name}/{index}/{ref['name']}"
            ir: dict[str, Any] = {
                "authority": f"{ref['name']}.{ref_ns}:{ref['port']}" if ref.get("port") else f"{ref['name']}.{ref_ns}",
                "destination": {
                    "name": cluster,
                    "settings": [
                        _service_setting((ref_ns, ref["name"], ref["port"]), f"{cluster}/backend/0", "GRPC", services)
                    ],
                },
                "name": f"envoyextensionpolicy/{policy_ns}/{policy_name}/extproc/{index}",
            }
            if ext_proc.get("failOpen") is not None:
                ir["failOpen"] = ext_proc["failOpen"]
            if ext_proc.get("messageTimeout"):
                ir["messageTimeout"] = _duration_seconds(ext_proc["messageTimeout"])
            mode = ext_proc.get("processingMode") or {}
            if mode.get("request") is not None:
                ir["requestHeaderProcessing"] = True
                if mode["request"].get("body"):
                    ir["requestBodyProcessingMode"] = mode["request"]["body"]
                if mode["request"].get("attributes"):
                    ir["requestAttributes"] = list(mode["request"]["attributes"])
            if mode.get("response") is not None:
                ir["responseHeaderProcessing"] = True
                if mode["response"].get("body"):
                    ir["responseBodyProcessingMode"] = mode["response"]["body"]
                if mode["response"].get("attributes"):
                    ir["responseAttributes"] = list(mode["response"]["attributes"])
            if mode.get("allowModeOverride"):
                ir["allowModeOverride"] = True
            metadata = ext_proc.get("metadata") or {}
            if metadata.get("accessibleNamespaces"):
                ir["forwardingMetadataNamespaces"] = list(metadata["accessibleNamespaces"])
            if metadata.get("writableNamespaces"):
                ir["receivingMetadataNamespaces"] = list(metadata["writableNamespaces"])
            out.append(ir)
    return out


def _route_traffic(
    route_name: str, namespace: str, policies: list[dict[str, Any]], default_namespace: str
) -> dict[str, Any]:
    """A BackendTrafficPolicy's global rate limit rules and buffer limit for this HTTPRoute, in EG's IR."""
    traffic: dict[str, Any] = {}
    for policy in policies:
        policy_ns = _ns(policy, default_namespace)
        if policy_ns != namespace or route_name not in _target_names(policy, "HTTPRoute"):
            continue
        spec = policy["spec"]
        limit = (spec.get("connection") or {}).get("bufferLimit")
        if limit is not None:
            traffic["backendConnection"] = {"bufferLimit": _quantity_bytes(limit)}
        rules = []
        for index, rule in enumerate(((spec.get("rateLimit") or {}).get("global") or {}).get("rules") or []):
            ir_rule: dict[str, Any] = {}
            headers = []
            for selector in rule.get("clientSelectors") or []:
                for header in selector.get("headers") or []:
                    kind = header.get("type", "Exact")
                    item: dict[str, Any] = {"name": header["name"]}
                    if kind == "Distinct":
                        item["distinct"] = True
                    else:
                        item["exact" if kind == "Exact" else "safeRegex"] = header["value"]
                    if header.get("invert"):
                        item["invert"] = True
                    headers.append(item)
            if headers:
                ir_rule["headerMatches"] = headers
            ir_rule["limit"] = {"requests": rule["limit"]["requests"], "unit": rule["limit"]["unit"]}
            if rule.get("shared"):
                ir_rule["name"] = f"{policy_ns}/{policy['metadata']['name']}/rule/{index}"
                ir_rule["shared"] = True
            cost = rule.get("cost") or {}
            for side, key in (("request", "requestCost"), ("response", "responseCost")):
                spec_cost = cost.get(side)
                if not spec_cost:
                    continue
                if spec_cost.get("from") == "Number":
                    ir_rule[key] = {"number": spec_cost["number"]}
                else:
                    meta = spec_cost["metadata"]
                    ir_rule[key] = {"format": f"%DYNAMIC_METADATA({meta['namespace']}:{meta['key']})%"}
            rules.append(ir_rule)
        if rules:
            traffic["rateLimit"] = {"global": {"rules": rules}}
    return traffic


# --------------------------------------------------------------------------------------------------------------
# EnvoyPatchPolicy


def _convert_keys(node: Any, convert: Any, path: tuple[str, ...] = ()) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            inside_struct = any(part in ("filterMetadata", "filter_metadata") for part in path[:-1])
            is_field = re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", key) is not None and not inside_struct
            is_map = path and path[-1] in _MAP_FIELDS
            new_key = convert(key) if is_field and not is_map else key
            out[new_key] = _convert_keys(value, convert, (*path, new_key))
        return out
    if isinstance(node, list):
        return [_convert_keys(value, convert, path) for value in node]
    return node


_MAP_FIELDS = {
    "typedPerFilterConfig",
    "typed_per_filter_config",
    "typedExtensionProtocolOptions",
    "typed_extension_protocol_options",
    "filterMetadata",
    "filter_metadata",
    "typedFilterMetadata",
    "typed_filter_metadata",
}


def _snake(key: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", lambda m: "_" + m[1].lower(), key)


def _camel(key: str) -> str:
    return re.sub(r"_([a-z0-9])", lambda m: m[1].upper(), key)


def to_proto_names(resource: dict[str, Any]) -> dict[str, Any]:
    """Protobuf JSON with the proto field names (what EnvoyPatchPolicy paths are written in)."""
    return _convert_keys(resource, _snake)


def to_json_names(resource: dict[str, Any]) -> dict[str, Any]:
    """Protobuf JSON with the lowerCamelCase names (EG's goldens, Envoy's config dumps)."""
    return _convert_keys(resource, _camel)


_KIND_OF_TYPE = {url: kind for kind, url in TYPE_URLS.items()}
_NAME_FIELD = {"endpoints": "clusterName"}


def apply_patch_policies(xds: Xds, policies: Iterable[dict[str, Any]]) -> Xds:
    """EG's ``processJSONPatches``: each patch on the resource of its type and name (``path: ""`` with ``add``
    creates one), in the order the policies list them (EG orders policies by priority, then name)."""
    xds = copy.deepcopy(xds)
    ordered = sorted(policies, key=lambda p: (p.get("spec") or p).get("priority", 0))
    for policy in ordered:
        spec = policy.get("spec") or policy
        for patch in spec.get("jsonPatches") or []:
            kind = _KIND_OF_TYPE[patch["type"]]
            name_field = _NAME_FIELD.get(kind, "name")
            operation = dict(patch["operation"])
            if "jsonPath" in operation:
                raise NotImplementedError("EnvoyPatchPolicy jsonPath operations are not emulated")
            resources = xds[kind]
            index = next((i for i, r in enumerate(resources) if r.get(name_field) == patch["name"]), None)
            if operation.get("path", "") == "" and operation["op"] == "add":
                new = _normalize(to_json_names(operation["value"]))
                if index is None:
                    resources.append(new)
                else:
                    resources[index] = new
                continue
            if index is None:
                raise KeyError(f"EnvoyPatchPolicy: no {kind} resource named {patch['name']!r}")
            document = to_proto_names(resources[index])
            patched = jsonpatch.apply_patch(document, [operation])
            resources[index] = _normalize(to_json_names(patched))
    return xds


_ENUM_ZEROS = {"lbPolicy": "ROUND_ROBIN"}


def _normalize(resource: dict[str, Any]) -> dict[str, Any]:
    """What EG's round trip through the typed message does to a patched value: JSON numbers for uint32 weights
    written as strings, enum fields at their default left out."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: (int(v) if k == "loadBalancingWeight" and isinstance(v, str) else walk(v))
                for k, v in node.items()
                if not (k in _ENUM_ZEROS and v == _ENUM_ZEROS[k])  # proto3 JSON leaves out default enum values
            }
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(resource)


# --------------------------------------------------------------------------------------------------------------
# file-based xDS for the real Envoy


READY_LISTENER_PREFIX = "envoy-gateway-proxy-ready-"
EG_ONLY_CLUSTERS = ("xds_cluster", "local_cluster")  # EG's ADS server, zone-aware routing over ADS: no EG here


def eg_default_resources(config_dump: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """EG's bootstrap and its ready listener, as an ``egctl translate`` config dump prints them. EG writes
    both from fixed templates (its bootstrap's stats listener and clusters; ``buildReadyListener``), the same
    for every Gateway, so they are read from EG's output instead of emulated."""
    dump = yaml.safe_load(config_dump.read_text(encoding="utf-8"))
    bootstrap: dict[str, Any] = {}
    ready: dict[str, Any] = {}
    for gateway in dump["xds"].values():
        for config in gateway["configs"]:
            if config["@type"].endswith(".BootstrapConfigDump"):
                bootstrap = config["bootstrap"]
            elif config["@type"].endswith(".ListenersConfigDump"):
                for entry in config.get("dynamicListeners") or []:
                    listener = entry["activeState"]["listener"]
                    if listener["name"].startswith(READY_LISTENER_PREFIX):
                        ready = {k: v for k, v in listener.items() if k != "@type"}
    if not bootstrap or not ready:
        raise ValueError(f"{config_dump}: no EG bootstrap or ready listener in it")
    return bootstrap, ready


def with_ready_listener(xds: Xds, ready: dict[str, Any], address: tuple[str, int]) -> Xds:
    """EG's ready listener first among the listeners (EG translates it before the Gateway's), on ``address``."""
    xds = copy.deepcopy(xds)
    listener = copy.deepcopy(ready)
    listener["address"] = {"socketAddress": {"address": address[0], "portValue": address[1]}}
    xds["listeners"].insert(0, listener)
    return xds


def _eg_bootstrap(eg_bootstrap: dict[str, Any], admin_port: int, stats_port: int) -> dict[str, Any]:
    """EG's bootstrap on loopback ports, without what needs EG itself (:data:`EG_ONLY_CLUSTERS`)."""
    bootstrap = copy.deepcopy(eg_bootstrap)
    bootstrap["admin"]["address"] = {"socketAddress": {"address": "127.0.0.1", "portValue": admin_port}}
    static = bootstrap["staticResources"]
    static["clusters"] = [c for c in static["clusters"] if c["name"] not in EG_ONLY_CLUSTERS]
    for cluster in static["clusters"]:  # prometheus_stats: the stats listener's route to the admin port
        for locality in cluster["loadAssignment"]["endpoints"]:
            for endpoint in locality["lbEndpoints"]:
                endpoint["endpoint"]["address"]["socketAddress"]["portValue"] = admin_port
    for listener in static.get("listeners") or []:
        listener["address"] = {"socketAddress": {"address": "127.0.0.1", "portValue": stats_port}}
    if (bootstrap.get("clusterManager") or {}).get("localClusterName") in EG_ONLY_CLUSTERS:
        del bootstrap["clusterManager"]
    return bootstrap


def write_file_based(
    xds: Xds,
    directory: Path,
    admin_port: int,
    node_id: str = "envoy-gateway",
    eg_bootstrap: dict[str, Any] | None = None,
    stats_port: int = 0,
) -> Path:
    """The xDS as files Envoy watches (LDS and CDS files, RDS, EDS and SDS files per resource), and a bootstrap
    that reads them; returns the bootstrap's path. With ``eg_bootstrap`` (from :func:`eg_default_resources`)
    the bootstrap is EG's own, its stats listener on ``stats_port``, its ADS replaced by those files."""
    directory.mkdir(parents=True, exist_ok=True)
    xds = copy.deepcopy(xds)

    def source(kind: str, name: str) -> dict[str, Any]:
        file = directory / f"{kind}-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.yaml"
        return {"pathConfigSource": {"path": str(file)}, "resourceApiVersion": "V3"}, file

    def write(file: Path, type_url: str, resource: dict[str, Any]) -> None:
        file.write_text(yaml.safe_dump({"resources": [{"@type": type_url, **resource}]}, sort_keys=False))

    for route in xds["routes"]:
        _, file = source("rds", route["name"])
        write(file, TYPE_URLS["routes"], route)
    for assignment in xds["endpoints"]:
        _, file = source("eds", assignment["clusterName"])
        write(file, TYPE_URLS["endpoints"], assignment)
    for secret in xds["secrets"]:
        _, file = source("sds", secret["name"])
        write(file, TYPE_URLS["secrets"], secret)

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            if "rds" in node and "configSource" in node["rds"]:
                node["rds"]["configSource"] = source("rds", node["rds"]["routeConfigName"])[0]
            if "edsClusterConfig" in node:
                node["edsClusterConfig"]["edsConfig"] = source("eds", node["edsClusterConfig"]["serviceName"])[0]
            if "sdsConfig" in node and "name" in node and "ads" in node["sdsConfig"]:
                node["sdsConfig"] = source("sds", node["name"])[0]
            for value in node.values():
                rewrite(value)
        elif isinstance(node, list):
            for value in node:
                rewrite(value)
        return node

    rewrite(xds)
    lds, cds = directory / "lds.yaml", directory / "cds.yaml"
    lds.write_text(
        yaml.safe_dump(
            {"resources": [{"@type": TYPE_URLS["listeners"], **r} for r in xds["listeners"]]}, sort_keys=False
        )
    )
    cds.write_text(
        yaml.safe_dump({"resources": [{"@type": TYPE_URLS["clusters"], **r} for r in xds["clusters"]]}, sort_keys=False)
    )
    bootstrap = _eg_bootstrap(eg_bootstrap, admin_port, stats_port) if eg_bootstrap else {}
    bootstrap["node"] = {**bootstrap.get("node", {}), "id": node_id, "cluster": node_id}
    bootstrap.setdefault("admin", {"address": {"socketAddress": {"address": "127.0.0.1", "portValue": admin_port}}})
    bootstrap["dynamicResources"] = {
        "ldsConfig": {"pathConfigSource": {"path": str(lds)}, "resourceApiVersion": "V3"},
        "cdsConfig": {"pathConfigSource": {"path": str(cds)}, "resourceApiVersion": "V3"},
    }
    path = directory / "bootstrap.yaml"
    path.write_text(yaml.safe_dump(bootstrap, sort_keys=False))
    return path


# --------------------------------------------------------------------------------------------------------------
# EG's extension manager: PostTranslateModify on the wire

POST_TRANSLATE_MODIFY_PATH = "/envoygateway.extension.EnvoyGatewayExtension/PostTranslateModify"
EMPTY_ANY_STAND_IN = "type.googleapis.com/google.protobuf.Empty"  # envoy-data-plane cannot encode an empty Any
# PostTranslateModifyRequest: clusters = 2, secrets = 3, listeners = 4, routes = 5; the response: 1, 2, 3, 4
_REQUEST_FIELDS = {"clusters": 2, "secrets": 3, "listeners": 4, "routes": 5}
_RESPONSE_FIELDS = {1: "clusters", 2: "secrets", 3: "listeners", 4: "routes"}


def _message_class(kind: str) -> Any:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if kind == "clusters":
            from envoy_data_plane.envoy.config.cluster.v3 import Cluster as Message
        elif kind == "listeners":
            from envoy_data_plane.envoy.config.listener.v3 import Listener as Message
        elif kind == "routes":
            from envoy_data_plane.envoy.config.route.v3 import RouteConfiguration as Message
        else:
            from envoy_data_plane.envoy.extensions.transport_sockets.tls.v3 import Secret as Message
    return Message


def _register_types(node: Any) -> None:
    """envoy-data-plane unpacks an ``Any`` only once the module of its type is imported."""
    import importlib
    import warnings

    if isinstance(node, dict):
        url = node.get("@type")
        if isinstance(url, str) and "/" in url:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                importlib.import_module("envoy_data_plane." + url.rsplit("/", 1)[1].rsplit(".", 1)[0])
        for value in node.values():
            _register_types(value)
    elif isinstance(node, list):
        for value in node:
            _register_types(value)


def _empty_any(node: Any, encoding: bool) -> Any:
    """A route's ``FilterConfig`` enabling a filter has an empty ``config`` Any: a stand-in type on the way out,
    an empty Any again on the way back (the stand-in never reaches Envoy)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "config" and node.get("@type") == FILTER_CONFIG:
                if encoding and value == {}:
                    value = {"@type": EMPTY_ANY_STAND_IN}
                elif not encoding and value in ({"@type": EMPTY_ANY_STAND_IN}, {"@type": ""}):
                    value = {}
            out[key] = _empty_any(value, encoding)
        return out
    if isinstance(node, list):
        return [_empty_any(value, encoding) for value in node]
    return node


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encode_resource(kind: str, resource: dict[str, Any]) -> bytes:
    """One xDS resource (proto3 JSON, as EG's goldens write it) in Envoy's binary encoding."""
    import warnings

    resource = _empty_any(resource, encoding=True)
    _register_types(resource)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return bytes(_message_class(kind)().from_dict(resource))


def decode_resource(kind: str, raw: bytes) -> dict[str, Any]:
    """Envoy's binary encoding back to proto3 JSON; the module of each type an ``Any`` names is imported as
    it turns up (an extension server adds types the request did not have)."""
    import importlib
    import warnings

    for _ in range(100):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return _empty_any(_message_class(kind)().parse(raw).to_dict(), encoding=False)
        except TypeError as error:
            found = re.fullmatch(
                r"Can't unpack unregistered type: type\.googleapis\.com/(.+)\.[A-Za-z0-9]+", str(error)
            )
            if not found:
                raise
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                importlib.import_module(f"envoy_data_plane.{found[1]}")
    raise TypeError(f"{kind}: too many unregistered types")


def post_translate_modify_request(xds: Xds) -> bytes:
    """The ``PostTranslateModifyRequest`` EG's extension manager sends (no extension context: the rendered
    manifests have no extension resources)."""
    out = bytearray()
    for kind, field_number in _REQUEST_FIELDS.items():
        for resource in xds[kind]:
            payload = encode_resource(kind, resource)
            out += _varint(field_number << 3 | 2) + _varint(len(payload)) + payload
    return bytes(out)


def post_translate_modify_response(raw: bytes, endpoints: list[dict[str, Any]]) -> Xds:
    """The xDS of a ``PostTranslateModifyResponse`` (EDS endpoints are not part of the hook: kept as they are)."""
    xds: Xds = {kind: [] for kind in TYPE_URLS}
    xds["endpoints"] = copy.deepcopy(endpoints)
    for kind, payloads in wire_resources(raw).items():
        xds[kind] = [decode_resource(kind, payload) for payload in payloads]
    return xds


def wire_resources(raw: bytes, request: bool = False) -> dict[str, list[bytes]]:
    """The resources of a ``PostTranslateModifyResponse`` (or ``request``), each as the bytes it has in the
    message, undecoded: what "byte-identical" is checked on."""
    fields = {number: kind for kind, number in _REQUEST_FIELDS.items()} if request else _RESPONSE_FIELDS
    out: dict[str, list[bytes]] = {kind: [] for kind in _REQUEST_FIELDS}
    position = 0
    while position < len(raw):
        tag, position = _read_varint(raw, position)
        if tag & 7 != 2:
            raise ValueError(f"PostTranslateModify message: field {tag >> 3} has wire type {tag & 7}")
        length, position = _read_varint(raw, position)
        payload, position = raw[position : position + length], position + length
        if tag >> 3 in fields:
            out[fields[tag >> 3]].append(payload)
    return out


def request_of_wire_resources(resources: dict[str, list[bytes]]) -> bytes:
    """A ``PostTranslateModifyRequest`` carrying exactly these resource bytes (EG's next translation sending
    what the extension server answered)."""
    out = bytearray()
    for kind, field_number in _REQUEST_FIELDS.items():
        for payload in resources.get(kind, []):
            out += _varint(field_number << 3 | 2) + _varint(len(payload)) + payload
    return bytes(out)


def _read_varint(raw: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = raw[position]
        position += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, position
