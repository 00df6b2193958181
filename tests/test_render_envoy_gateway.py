"""``tokenvoy render --target envoy-gateway``: every manifest validates against the published schemas, the
routing of Envoy AI Gateway's own golden is reproduced resource by resource, deploy/kubernetes/ is fresh,
and what native Envoy Gateway cannot do is refused naming the rule. There is no Kubernetes cluster here:
these tests check the manifests against the schemas and goldens, not their effect on a running cluster."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.manifests import cel_results, is_custom, schema_errors
from tokenvoy.config.defaults import default_config_yaml
from tokenvoy.config.loader import ConfigError, load_text, parse_documents
from tokenvoy.render.cli import main as render_main
from tokenvoy.render.envoy_gateway import (
    BUFFER_LIMIT,
    CONFIG_FILE,
    ENVOY_GATEWAY_CONFIG_FILE,
    GatewayOptions,
    Manifests,
    render_envoy_gateway,
)
from tokenvoy.render.gateway_cli import read_documents, write_manifests

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
GOLDEN_IN = SHARED / "envoy-gateway" / "ai-gateway" / "translate_basic.in.yaml"
GOLDEN_OUT = SHARED / "envoy-gateway" / "ai-gateway" / "translate_basic.out.yaml"
DEPLOY = ROOT / "deploy" / "kubernetes"
REGENERATE = "regenerate with: env -u OPENAI_API_KEY tokenvoy render --target envoy-gateway --out deploy/kubernetes"
EXAMPLES = GatewayOptions(gateway="eg")  # the examples name no Gateway
NATIVE_EXAMPLES = ["openai.yaml", "budget-shapes.yaml", "team-budgets.yaml"]


def _render(text: str, source: str = "<test>") -> Manifests:
    return render_envoy_gateway(parse_documents(source, text))


def _default() -> Manifests:
    return _render(default_config_yaml({}), "<default>")


def _basic() -> Manifests:
    return render_envoy_gateway(read_documents([str(GOLDEN_IN)]))


def _by(manifests: Manifests, kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in manifests.resources() if r["kind"] == kind}


CASES = {
    "default": _default,
    "translate_basic": _basic,
    **{
        name: (lambda name=name: render_envoy_gateway(read_documents([str(ROOT / "examples" / name)]), EXAMPLES))
        for name in NATIVE_EXAMPLES
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_rendered_resource_validates_against_its_published_schema(case: str) -> None:
    manifests = CASES[case]()
    kinds = set()
    for resource in manifests.resources():
        kinds.add(resource["kind"])
        assert schema_errors(resource) == [], f"{resource['kind']}/{resource['metadata']['name']}"
    assert {"HTTPRoute", "HTTPRouteFilter", "Backend", "EnvoyExtensionPolicy", "BackendTrafficPolicy"} <= kinds
    assert {"ConfigMap", "Deployment", "Service", "ClientTrafficPolicy"} <= kinds
    for route in (r for r in manifests.resources() if r["kind"] == "HTTPRoute"):
        assert route["spec"]["parentRefs"], "a route EG would attach to no Gateway"


def test_the_validators_refuse_what_the_real_apis_refuse() -> None:
    manifests = _basic()
    policy = copy.deepcopy(_by(manifests, "EnvoyExtensionPolicy")["tokenvoy-extproc"])
    processor = policy["spec"]["extProc"][0]
    processor["backendRef"] = processor.pop("backendRefs")[0]  # EG refuses the singular form (a CEL rule)
    assert any("BackendRefs must be used" in e for e in schema_errors(policy))
    processor["processingMode"]["request"]["attributes"] = ["xds.upstream_host_metadata"]  # the pattern refuses
    assert any("does not match" in e for e in schema_errors(policy))
    deployment = copy.deepcopy(_by(manifests, "Deployment")["tokenvoy-extproc"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"grpc": {"port": "grpc"}}
    assert schema_errors(deployment), "a named port in a gRPC probe is not an integer"
    deployment = copy.deepcopy(_by(manifests, "Deployment")["tokenvoy-extproc"])
    deployment["spec"]["template"]["spec"]["containers"][0]["probes"] = {}
    assert schema_errors(deployment), "strict validation refuses unknown fields"


def test_the_backend_tls_policies_are_valid_as_gateway_api_v1_too() -> None:
    # Rendered as v1alpha3 (what EG 1.3's Gateway API serves); a cluster that serves only v1 takes the same spec.
    policies = list(_by(_basic(), "BackendTLSPolicy").values())
    assert policies and {p["apiVersion"] for p in policies} == {"gateway.networking.k8s.io/v1alpha3"}
    for policy in policies:
        assert schema_errors({**policy, "apiVersion": "gateway.networking.k8s.io/v1"}) == []


def test_the_crds_cel_rules_are_evaluated_not_only_their_structure() -> None:
    evaluated = sum(cel_results(r)[1] for r in _basic().resources() if is_custom(r))
    assert evaluated > 100


# What the routing of Envoy AI Gateway's controller output (translate_basic.out.yaml) and ours share, and the
# differences, each stated (docs/envoy-gateway.md lists them for users).
def _golden() -> dict[tuple[str, str], dict[str, Any]]:
    documents = yaml.safe_load_all(GOLDEN_OUT.read_text(encoding="utf-8"))
    return {(d["kind"], d["metadata"]["name"]): d for d in documents if d}


def _routing(rule: dict[str, Any]) -> dict[str, Any]:
    """A rule without the fields where tokenvoy differs on purpose (timeouts, see below)."""
    return {key: value for key, value in rule.items() if key != "timeouts"}


def test_translate_basic_routes_as_envoy_ai_gateways_golden_resource_by_resource() -> None:
    golden = _golden()
    ours = {(r["kind"], r["metadata"]["name"]): r for r in _basic().resources()}
    routing_kinds = {"GatewayClass", "Gateway", "Backend", "BackendTLSPolicy", "HTTPRoute", "HTTPRouteFilter"}
    golden_routing = {key for key in golden if key[0] in routing_kinds}
    assert golden_routing <= ours.keys(), "every routing resource of the golden, under the same name"
    for key in sorted(golden_routing):
        kind = key[0]
        theirs, mine = golden[key], ours[key]
        assert mine["apiVersion"] == theirs["apiVersion"], key
        if kind == "HTTPRoute":
            assert mine["spec"]["parentRefs"] == theirs["spec"]["parentRefs"]
            assert [_routing(r) for r in mine["spec"]["rules"]] == [_routing(r) for r in theirs["spec"]["rules"]]
            # Differences: the request timeout is tokenvoy's 300 s (Envoy AI Gateway's 60 s) ...
            assert {r["timeouts"]["request"] for r in theirs["spec"]["rules"] if "timeouts" in r} == {"60s"}
            assert {r["timeouts"]["request"] for r in mine["spec"]["rules"] if "timeouts" in r} == {"300s"}
            # ... and no annotations for AI Gateway's extension server, no owner (there is no AIGatewayRoute
            # controller in the cluster: the HTTPRoute is the applied resource).
            assert "annotations" not in mine["metadata"] and "ownerReferences" not in mine["metadata"]
        elif key[1].startswith("ai-eg-route-not-found"):
            # Same status; the body is an error in OpenAI's shape (Envoy AI Gateway's is plain text).
            assert mine["spec"]["directResponse"]["statusCode"] == theirs["spec"]["directResponse"]["statusCode"]
            assert mine["spec"]["directResponse"]["contentType"] == "application/json"
            message = theirs["spec"]["directResponse"]["body"]["inline"]
            assert message in yaml.safe_load(mine["spec"]["directResponse"]["body"]["inline"])["error"]["message"]
        else:
            assert mine["spec"] == theirs["spec"], key
    # The golden's Secrets (AI Gateway's filter config, the user's credentials) are not rendered: extproc mounts
    # the user's Secrets by name, their values never leave them.
    assert {key for key in golden if key[0] == "Secret"}.isdisjoint(ours)
    assert {kind for kind, _ in ours} - routing_kinds == {
        "ConfigMap", "Deployment", "Service", "EnvoyExtensionPolicy", "BackendTrafficPolicy", "ClientTrafficPolicy"
    }  # fmt: skip


def test_no_secret_value_is_rendered_and_extproc_reads_each_from_its_mounted_secret(tmp_path: Path) -> None:
    manifests = _basic()
    texts = "".join(
        write_manifests(manifests, tmp_path) and (p.read_text() for p in tmp_path.rglob("*") if p.is_file())
    )
    assert "AWS_SECRET_ACCESS_KEY" not in texts and "apiKey: apiKey" not in texts
    config_map = _by(manifests, "ConfigMap")["tokenvoy-config"]
    extproc = load_text(config_map["data"][CONFIG_FILE])
    policy = extproc.backends["envoy-ai-gateway-basic-openai"].security
    assert policy is not None and policy.api_key is not None
    assert (policy.api_key.source, policy.api_key.reference) == (
        "file",
        "/etc/tokenvoy/secrets/envoy-ai-gateway-basic-openai-apikey/apiKey",
    )
    pod = _by(manifests, "Deployment")["tokenvoy-extproc"]["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounted = volumes[mounts["/etc/tokenvoy/secrets/envoy-ai-gateway-basic-openai-apikey"]]
    assert mounted["secret"]["secretName"] == "envoy-ai-gateway-basic-openai-apikey"
    # The Service-backed AIServiceBackend reaches the Service's cluster DNS name from extproc's point of view.
    service_backend = extproc.backends["envoy-ai-gateway-basic-testupstream"].endpoint
    assert (service_backend.host, service_backend.port) == (
        "envoy-ai-gateway-basic-testupstream.default.svc.cluster.local",
        80,
    )


def test_the_router_ext_proc_buffers_bodies_may_stream_answers_and_writes_the_ai_gateway_namespace() -> None:
    manifests = _default()
    (policy,) = _by(manifests, "EnvoyExtensionPolicy").values()
    assert policy["spec"]["targetRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "default"}
    ]
    (processor,) = policy["spec"]["extProc"]
    assert processor["processingMode"]["allowModeOverride"] is True
    assert (
        processor["processingMode"]["request"]["body"] == processor["processingMode"]["response"]["body"] == "Buffered"
    )
    assert processor["metadata"]["writableNamespaces"] == ["io.envoy.ai_gateway"]
    assert processor["failOpen"] is False
    service = _by(manifests, "Service")["tokenvoy-extproc"]
    port = processor["backendRefs"][0]["port"]
    assert processor["backendRefs"][0]["name"] == "tokenvoy-extproc" and port in [
        p["port"] for p in service["spec"]["ports"]
    ]
    container = _by(manifests, "Deployment")["tokenvoy-extproc"]["spec"]["template"]["spec"]["containers"][0]
    assert "--translate-in-router" in container["args"]
    assert container["readinessProbe"]["grpc"]["port"] == port


def test_the_default_budget_is_an_eg_rate_limit_charged_from_the_token_metadata() -> None:
    manifests = _default()
    budget = _by(manifests, "BackendTrafficPolicy")["per-user-token-budget"]
    assert budget["spec"]["targetRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "default"}
    ]
    (rule,) = budget["spec"]["rateLimit"]["global"]["rules"]
    assert rule["clientSelectors"] == [{"headers": [{"name": "x-user-id", "type": "Distinct"}]}]
    assert rule["limit"] == {"requests": 100_000, "unit": "Hour"}
    assert rule["cost"]["response"] == {
        "from": "Metadata",
        "metadata": {"namespace": "io.envoy.ai_gateway", "key": "llm_total_token"},
    }
    assert budget["spec"]["connection"]["bufferLimit"] == BUFFER_LIMIT == "50Mi"
    (client,) = _by(manifests, "ClientTrafficPolicy").values()
    assert client["spec"]["connection"]["bufferLimit"] == "50Mi"
    assert client["spec"]["targetRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "tokenvoy"}
    ]
    config = manifests.envoy_gateway_config
    assert config["extensionApis"] == {"enableBackend": True} and config["rateLimit"]["backend"]["type"] == "Redis"


def test_the_fake_provider_backends_point_at_the_fake_providers_service() -> None:
    manifests = _default()
    backend = _by(manifests, "Backend")["fake"]
    assert backend["spec"]["endpoints"] == [
        {"fqdn": {"hostname": "tokenvoy-fake-provider.default.svc.cluster.local", "port": 1976}}
    ]
    service = _by(manifests, "Service")["tokenvoy-fake-provider"]
    assert service["spec"]["ports"][0]["port"] == 1976
    deployment = _by(manifests, "Deployment")["tokenvoy-fake-provider"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["args"][:1] == ["testupstream"]


def test_prometheus_finds_the_metrics_port() -> None:
    manifests = _default()
    template = _by(manifests, "Deployment")["tokenvoy-extproc"]["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
    assert int(annotations["prometheus.io/port"]) == ports["metrics"]
    assert template["spec"]["containers"][0]["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}


FALLBACK = """\
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIGatewayRoute
metadata: {name: chat}
spec:
  rules:
    - backendRefs: [{name: openai}, {name: anthropic, priority: 1}]
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {name: openai}
spec: {schema: {name: OpenAI}, backendRef: {name: openai, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: aigateway.envoyproxy.io/v1alpha1
kind: AIServiceBackend
metadata: {name: anthropic}
spec: {schema: {name: Anthropic}, backendRef: {name: anthropic, kind: Backend, group: gateway.envoyproxy.io}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: openai}
spec: {endpoints: [{fqdn: {hostname: api.openai.com, port: 443}}]}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: anthropic}
spec: {endpoints: [{fqdn: {hostname: api.anthropic.com, port: 443}}]}
"""


def test_a_cross_provider_fallback_is_refused_naming_the_rule() -> None:
    with pytest.raises(ConfigError) as error:
        _render(FALLBACK)
    assert any("chat/rule/0" in p and "tokenvoy run" in p and "openai, anthropic" in p for p in error.value.problems)


def test_reservation_budgets_and_two_policies_on_one_route_are_refused() -> None:
    text = default_config_yaml({})
    reserved = text.replace(
        "  name: per-user-token-budget\n",
        "  name: per-user-token-budget\n  annotations: {tokenvoy.io/budget-mode: reservation}\n",
    )
    with pytest.raises(ConfigError, match="reservation mode needs tokenvoy's ratelimit"):
        _render(reserved)
    second = text.split("---\n")[2].replace("per-user-token-budget", "second-budget")
    assert "BackendTrafficPolicy" in second
    with pytest.raises(ConfigError, match="also targeted by BackendTrafficPolicy/per-user-token-budget"):
        _render(text + "---\n" + second)


def test_render_cli_writes_the_files_in_kubectl_apply_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "99-removed.yaml"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("kind: Old\n")
    assert render_main(["--target", "envoy-gateway", "--config", str(GOLDEN_IN), "--out", str(tmp_path)]) == 0
    applied = sorted(p.name for p in tmp_path.glob("*.yaml"))
    assert applied == ["00-gateway.yaml", "10-tokenvoy.yaml", "20-backends.yaml", "30-routes.yaml", "40-policies.yaml"]
    assert not stale.exists(), "a file of an earlier render is removed"
    assert (tmp_path / ENVOY_GATEWAY_CONFIG_FILE).is_file()  # a subdirectory: `kubectl apply -f DIR` skips it
    written = list(yaml.safe_load_all((tmp_path / "10-tokenvoy.yaml").read_text()))
    assert [d["kind"] for d in written] == ["ConfigMap", "Deployment", "Service"]
    assert "gateway.yaml: |" in (tmp_path / "10-tokenvoy.yaml").read_text()  # extproc's config, readable
    assert load_text(written[0]["data"][CONFIG_FILE]).routes[0].name == "envoy-ai-gateway-basic"
    assert (
        render_main(["--target", "envoy-gateway", "--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path)]) == 2
    )
    assert "nope.yaml: cannot read" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        render_main(["--target", "envoy-gateway", "--reloadable", "--out", str(tmp_path)])
    assert "--reloadable is for --target envoy" in capsys.readouterr().err


def test_deploy_kubernetes_is_what_the_renderer_makes_from_the_default_config(tmp_path: Path) -> None:
    write_manifests(_default(), tmp_path)
    expected = {p.relative_to(tmp_path): p.read_text() for p in tmp_path.rglob("*") if p.is_file()}
    committed = {p.relative_to(DEPLOY): p.read_text() for p in DEPLOY.rglob("*") if p.is_file()}
    assert committed.keys() == expected.keys(), REGENERATE
    for name, text in expected.items():
        assert committed[name] == text, f"deploy/kubernetes/{name} is stale; {REGENERATE}"


def _charges(rate_limits: list[dict[str, Any]]) -> list[tuple[bool, str]]:
    """How each rate-limit entry charges: (at stream done, the hits addend's kind)."""
    charges = []
    for entry in rate_limits:
        done = bool(entry.get("applyOnStreamDone", entry.get("apply_on_stream_done", False)))
        addend = entry.get("hitsAddend", entry.get("hits_addend", {}))
        charges.append((done, "format" if "format" in addend else "number"))
    return charges


def test_eg_charges_a_metadata_response_cost_as_the_envoy_config_the_native_test_runs() -> None:
    # EG's golden for a rule with a request and a response cost (xds-ir ratelimit, route req-and-resp-cost) and
    # tokenvoy's rendered budget (what tests/integration/test_envoy_gateway_native.py serves to Envoy): a check
    # at request time with a fixed addend, then the charge at stream end from the dynamic metadata.
    from tokenvoy.render.bootstrap import budget_rate_limits

    golden = yaml.safe_load((SHARED / "envoy-gateway" / "xds-ir" / "out" / "ratelimit.routes.yaml").read_text())
    routes = {route["name"]: route for host in golden[0]["virtualHosts"] for route in host["routes"]}
    egs = routes["req-and-resp-cost"]["typedPerFilterConfig"]["envoy.filters.http.ratelimit"]["rateLimits"]
    ours = budget_rate_limits(list(load_text(default_config_yaml({})).budgets))
    assert _charges(egs) == _charges(ours) == [(False, "number"), (True, "format")]
    assert egs[1]["hitsAddend"]["format"] == "%DYNAMIC_METADATA(something.com:key)%"
    assert ours[1]["hits_addend"]["format"] == "%DYNAMIC_METADATA(io.envoy.ai_gateway:llm_total_token)%"


def _with_rule(rule: str) -> str:
    """FALLBACK's config with its one rule replaced."""
    return FALLBACK.replace("    - backendRefs: [{name: openai}, {name: anthropic, priority: 1}]\n", rule)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("    - backendRefs: [{name: openai}]\n      streamIdleTimeout: 5s\n", "streamIdleTimeout is not supported"),
        (
            "    - backendRefs: [{name: openai}, {name: openai, modelNameOverride: gpt-4o}]\n",
            "need different translations or credentials",
        ),
    ],
)
def test_rules_native_eg_cannot_serve_are_refused(rule: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        render_envoy_gateway(parse_documents("<test>", _with_rule(rule)), GatewayOptions(gateway="eg"))


def test_weighted_backend_refs_that_translate_alike_keep_their_weights() -> None:
    text = _with_rule("    - backendRefs: [{name: openai, weight: 3}, {name: openai-eu, weight: 1}]\n") + (
        "---\napiVersion: aigateway.envoyproxy.io/v1alpha1\nkind: AIServiceBackend\nmetadata: {name: openai-eu}\n"
        "spec: {schema: {name: OpenAI}, backendRef: {name: openai-eu, kind: Backend, group: gateway.envoyproxy.io}}\n"
        "---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\nmetadata: {name: openai-eu}\n"
        "spec: {endpoints: [{fqdn: {hostname: eu.api.openai.com, port: 443}}]}\n"
    )
    manifests = render_envoy_gateway(parse_documents("<test>", text), GatewayOptions(gateway="eg"))
    (route,) = _by(manifests, "HTTPRoute").values()
    assert [(r["name"], r["weight"]) for r in route["spec"]["rules"][0]["backendRefs"]] == [
        ("openai", 3),
        ("openai-eu", 1),
    ]
    assert route["spec"]["parentRefs"] == [{"name": "eg", "group": "gateway.networking.k8s.io", "kind": "Gateway"}]
    assert all(schema_errors(r) == [] for r in manifests.resources())


def test_a_route_with_no_gateway_to_attach_to_and_a_config_in_two_namespaces_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"spec\.parentRefs: required with --target envoy-gateway"):
        _render(_with_rule("    - backendRefs: [{name: openai}]\n"))
    two = _with_rule("    - backendRefs: [{name: openai}]\n").replace(
        "metadata: {name: openai}", "metadata: {name: openai, namespace: a}", 1
    )
    two = two.replace("metadata: {name: chat}", "metadata: {name: chat, namespace: b}")
    with pytest.raises(ConfigError, match="spans namespaces"):
        render_envoy_gateway(parse_documents("<test>", two), GatewayOptions(gateway="eg"))
    assert render_envoy_gateway(
        parse_documents("<test>", two), GatewayOptions(gateway="eg", namespace="ai")
    ).resources()


def test_every_rendered_resource_but_the_gateway_is_labelled_and_a_config_change_rolls_extproc() -> None:
    manifests = _basic()
    unlabelled = {
        r["kind"]
        for r in manifests.resources()
        if (r["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") != "tokenvoy"
    }
    assert unlabelled <= {"Gateway", "GatewayClass"}
    digest = _by(manifests, "Deployment")["tokenvoy-extproc"]["spec"]["template"]["metadata"]["annotations"]
    edited = GOLDEN_IN.read_text(encoding="utf-8").replace('modelsOwnedBy: "openai"', 'modelsOwnedBy: "someone"')
    changed = render_envoy_gateway(parse_documents("edited.yaml", edited))
    other = _by(changed, "Deployment")["tokenvoy-extproc"]["spec"]["template"]["metadata"]["annotations"]
    assert digest["tokenvoy.io/config-digest"] != other["tokenvoy.io/config-digest"]


def test_a_private_ca_config_map_is_rendered_with_the_tls_policy_that_names_it() -> None:
    from tests.test_config_tls import BASE, POLICY

    manifests = render_envoy_gateway(parse_documents("gw.yaml", BASE + POLICY), GatewayOptions(gateway="eg"))
    (policy,) = _by(manifests, "BackendTLSPolicy").values()
    assert policy["spec"]["validation"]["caCertificateRefs"] == [{"group": "", "kind": "ConfigMap", "name": "llm-ca"}]
    config_map = _by(manifests, "ConfigMap")["llm-ca"]
    assert "BEGIN CERTIFICATE" in config_map["data"]["ca.crt"]
    assert all(schema_errors(r) == [] for r in manifests.resources())


def test_a_budget_on_the_gateway_targets_every_route_and_is_shared_across_them() -> None:
    # tokenvoy counts one policy's budget across all its routes; EG keeps a counter per route unless `shared`.
    text = default_config_yaml({}).replace(
        "    - group: aigateway.envoyproxy.io\n      kind: AIGatewayRoute\n      name: default\n  rateLimit:",
        "    - group: gateway.networking.k8s.io\n      kind: Gateway\n      name: tokenvoy\n  rateLimit:",
    )
    second = "---\n" + text.split("---\n")[1].replace("name: default", "name: second", 1)
    manifests = _render(text + second)
    budget = _by(manifests, "BackendTrafficPolicy")["per-user-token-budget"]
    assert [t["name"] for t in budget["spec"]["targetRefs"]] == ["default", "second"]
    assert [rule["shared"] for rule in budget["spec"]["rateLimit"]["global"]["rules"]] == [True]
    assert "tokenvoy-buffer-limit" not in _by(manifests, "BackendTrafficPolicy")  # every route has its policy
    assert all(schema_errors(r) == [] for r in manifests.resources())
