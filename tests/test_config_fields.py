"""Every field of the published CRDs, for every kind the loader reads: it has an effect, or it is refused.

The walk enumerates each property path of the CRD schemas (``../shared/crds``) and sets each leaf field, on
a baseline config, to a value the CRD itself accepts. Then the loaded ``GatewayConfig`` differs from the
baseline's (the field is consumed), or the load fails naming the field or one containing it (refused), or
the field is reported in ``GatewayConfig.ignored`` (printed by ``tokenvoy run`` and ``tokenvoy validate``),
or it is listed with its reason in the loader's ``INERT_FIELDS``. A field that does none of these is
accepted and ignored: the test fails, naming it. A container refused as a whole (``not supported by
tokenvoy``) covers the fields under it.
"""

from __future__ import annotations

import copy
import re
from functools import cache
from typing import Any

import pytest
import yaml

from tests.crds import _crd_schemas, crd_errors
from tokenvoy.config.loader import INERT_FIELDS, ConfigError, load_documents

BASELINE = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: tokenvoy}
spec:
  gatewayClassName: tokenvoy
  listeners: [{name: http, protocol: HTTP, port: 1975}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: llm}
spec:
  parentRefs: [{name: tokenvoy}]
  rules:
    - matches: [{headers: [{name: x-ai-eg-model, value: gpt-4o}]}]
      backendRefs: [{name: openai}]
  llmRequestCosts: [{metadataKey: llm_total_token, type: TotalToken}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {name: openai}
spec:
  schema: {name: OpenAI}
  backendRef: {name: openai, kind: Backend, group: gateway.envoyproxy.io}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: openai}
spec:
  endpoints: [{fqdn: {hostname: api.openai.com, port: 443}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: BackendSecurityPolicy
metadata: {name: openai-key}
spec:
  type: APIKey
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIServiceBackend, name: openai}]
  apiKey: {secretRef: {name: openai-key}}
---
apiVersion: v1
kind: Secret
metadata: {name: openai-key}
stringData: {apiKey: sk-test, credentials: "[default]", service_account.json: "{}", client-secret: s}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: BackendTrafficPolicy
metadata: {name: budget}
spec:
  targetRefs: [{group: aigateway.envoyproxy.io, kind: AIGatewayRoute, name: llm}]
  rateLimit:
    type: Global
    global:
      rules:
        - clientSelectors: [{headers: [{name: x-user-id, type: Distinct}]}]
          limit: {requests: 1000, unit: Hour}
          cost:
            request: {from: Number, number: 0}
            response: {from: Metadata, metadata: {namespace: io.envoy.ai_gateway, key: llm_total_token}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: anthropic-tls}
spec:
  targetRefs: [{group: gateway.envoyproxy.io, kind: Backend, name: anthropic}]
  validation: {hostname: api.anthropic.com, wellKnownCACertificates: System}
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {name: claude}
spec:
  rules: [{matches: [{headers: [{name: x-ai-eg-model, value: claude}]}], backendRefs: [{name: anthropic}]}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {name: anthropic}
spec:
  schema: {name: Anthropic}
  backendRef: {name: anthropic, kind: Backend, group: gateway.envoyproxy.io}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata: {name: anthropic}
spec:
  endpoints: [{fqdn: {hostname: api.anthropic.com, port: 443}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: SecurityPolicy
metadata: {name: clients}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: tokenvoy}]
  apiKeyAuth:
    credentialRefs: [{name: client-keys}]
    extractFrom: [{headers: [x-api-key]}]
---
apiVersion: v1
kind: Secret
metadata: {name: client-keys}
stringData: {alice: tv-alice}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: jwks}
data: {jwks: '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'}
"""
# Other shapes of one kind, for the paths that only mean something there (`spec.<field>` → the spec).
VARIANTS: dict[tuple[str, str], dict[str, Any]] = {
    ("BackendSecurityPolicy", "spec.awsCredentials"): {
        "type": "AWSCredentials",
        "awsCredentials": {"region": "us-east-1", "credentialsFile": {"secretRef": {"name": "openai-key"}}},
    },
    ("BackendSecurityPolicy", "spec.gcpCredentials"): {
        "type": "GCPCredentials",
        "gcpCredentials": {
            "projectName": "p",
            "region": "us-central1",
            "credentialsFile": {"secretRef": {"name": "openai-key"}},
        },
    },
    ("BackendSecurityPolicy", "spec.azureCredentials"): {
        "type": "AzureCredentials",
        "azureCredentials": {"clientID": "c", "tenantID": "t", "clientSecretRef": {"name": "openai-key"}},
    },
    ("BackendSecurityPolicy", "spec.azureAPIKey"): {
        "type": "AzureAPIKey",
        "azureAPIKey": {"secretRef": {"name": "openai-key"}},
    },
    ("BackendSecurityPolicy", "spec.anthropicAPIKey"): {
        "type": "AnthropicAPIKey",
        "anthropicAPIKey": {"secretRef": {"name": "openai-key"}},
    },
    ("SecurityPolicy", "spec.jwt"): {
        "jwt": {"providers": [{"name": "corp", "localJWKS": {"type": "Inline", "inline": '{"keys": [{"kty": "x"}]}'}}]}
    },
    ("SecurityPolicy", "spec.jwt.providers[].remoteJWKS"): {
        "jwt": {"providers": [{"name": "corp", "remoteJWKS": {"uri": "https://sso.example.com/jwks"}}]}
    },
    ("SecurityPolicy", "spec.jwt.providers[].localJWKS.valueRef"): {
        "jwt": {
            "providers": [
                {
                    "name": "corp",
                    "localJWKS": {"type": "ValueRef", "valueRef": {"group": "", "kind": "ConfigMap", "name": "jwks"}},
                }
            ]
        }
    },
    ("Backend", "spec.tls"): {"endpoints": [{"fqdn": {"hostname": "api.openai.com", "port": 443}}], "tls": {}},
    ("Backend", "spec.endpoints[].ip"): {"endpoints": [{"ip": {"address": "10.0.0.1", "port": 8443}}]},
}
# Values the CRD accepts that differ from what the loader assumes when the field is absent (a generated
# sample would equal the default and show no difference).
VALUES: dict[tuple[str, str], Any] = {
    ("AIGatewayRoute", "spec.rules[].backendRefs[].priority"): 1,
    ("AIGatewayRoute", "spec.rules[].matches[].headers[].type"): "RegularExpression",
    ("AIGatewayRoute", "spec.rules[].modelsCreatedAt"): "2024-05-21T10:00:00Z",
    ("AIGatewayRoute", "spec.rules[].streamIdleTimeout"): "7s",
    ("Backend", "spec.type"): "DynamicResolver",
    ("Backend", "spec.endpoints[].ip.address"): "10.0.0.2",
    ("Gateway", "spec.addresses"): [{"type": "Hostname", "value": "gw.example.com"}],
    ("Gateway", "spec.listeners[].protocol"): "HTTPS",
}
# Fields whose effect one change cannot show, and how the loader uses them.
CONSUMED = {
    ("BackendSecurityPolicy", "spec.type"): "selects the credential field read; alone, a new type misses its field",
}


def _variant(kind: str, path: str) -> dict[str, Any] | None:
    """The spec to start from for ``path``: the longest ``VARIANTS`` prefix of it, else the baseline's."""
    found = [(prefix, spec) for (k, prefix), spec in VARIANTS.items() if k == kind and path.startswith(prefix)]
    return max(found, key=lambda item: len(item[0]))[1] if found else None


def _apply_variant(target: dict[str, Any], kind: str, path: str) -> None:
    variant = _variant(kind, path)
    if variant is not None:
        targets = target["spec"].get("targetRefs")
        target["spec"] = copy.deepcopy(variant) | ({"targetRefs": targets} if targets else {})


@cache
def _schemas() -> dict[str, list[dict[str, Any]]]:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for (_, kind), schema in _crd_schemas().items():
        by_kind.setdefault(kind, []).append(schema["properties"]["spec"])
    return by_kind


KINDS = (
    "AIGatewayRoute",
    "AIServiceBackend",
    "BackendSecurityPolicy",
    "Backend",
    "BackendTrafficPolicy",
    "BackendTLSPolicy",
    "Gateway",
    "SecurityPolicy",
)


def _paths(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for key, child in (node.get("properties") or {}).items():
        found.append((f"{path}.{key}", child))
        found += _paths(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        found += _paths(node["items"], f"{path}[]")
    return found


def _all_paths(kind: str) -> dict[str, dict[str, Any]]:
    paths: dict[str, dict[str, Any]] = {}
    for schema in _schemas()[kind]:
        for path, node in _paths(schema, "spec"):
            paths.setdefault(path, node)
    return paths


def _sample(node: dict[str, Any], avoid: Any = None) -> Any:
    """A value the schema accepts (required fields filled in), unlike ``avoid`` where it can be."""
    for part in node.get("allOf", ()):  # e.g. `type: string` with `allOf: [{enum: …}]`
        node = {**part, **node, **({"enum": part["enum"]} if "enum" in part else {})}
    if "enum" in node:
        choices = [v for v in node["enum"] if v != avoid] or node["enum"]
        return choices[0]
    kind = node.get("type")
    if kind == "object" or "properties" in node:
        properties = node.get("properties", {})
        value = {key: _sample(properties[key]) for key in node.get("required", []) if key in properties}
        return value or ({"sample": "x"} if node.get("additionalProperties") else {})
    if kind == "array":
        return [_sample(node.get("items", {}))]
    if kind == "integer":
        low = node.get("minimum", 1)
        return low if low != avoid else low + 1
    if kind == "number":
        return node.get("minimum", 1)
    if kind == "boolean":
        return not avoid if isinstance(avoid, bool) else True
    if node.get("x-kubernetes-int-or-string") or "anyOf" in node:
        return 1
    if "pattern" in node:
        return _matching(node["pattern"], node.get("minLength", 1))
    return "sample-value" if node.get("maxLength", 100) >= 12 else "x"


def _matching(pattern: str, min_length: int) -> str:
    """A string the CRD's pattern accepts (a short list: the walk fails naming a pattern it lacks)."""
    candidates = (
        "7s",
        "sample-value",
        "sample.example.com",
        "System",
        "example.com/sample",
        "10.0.0.3",
        "/tmp/s",
        "spiffe://example.com/s",
        "10.0.0.0/8",
        "US",
        "https://example.com",
        "*",
    )
    for candidate in candidates:
        if len(candidate) >= min_length and re.fullmatch(pattern, candidate):
            return candidate
    raise AssertionError(f"no sample for the pattern {pattern!r}: add one to _matching")


def _is_leaf(node: dict[str, Any]) -> bool:
    items = node.get("items")
    return not node.get("properties") and not (isinstance(items, dict) and items.get("properties"))


def _documents() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(BASELINE) if doc]


def _load(documents: list[dict[str, Any]]):
    return load_documents([("walk.yaml", copy.deepcopy(doc)) for doc in documents])


def _set(spec: dict[str, Any], kind: str, path: str, schema: dict[str, Any], paths: dict[str, dict[str, Any]]) -> None:
    """Set ``path`` (``spec.a[].b``) in ``spec``, creating what lies on the way (index 0 of lists)."""
    parts = path.replace("[]", ".[]").split(".")[1:]
    node: Any = spec
    walked = "spec"
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        walked = f"{walked}[]" if part == "[]" else f"{walked}.{part}"
        if part == "[]":
            if not node:
                node.append(_sample(paths[walked[:-2]]["items"]))
            if last:
                node[0] = VALUES.get((kind, path), _sample(schema))
                return
            node = node[0]
            continue
        if last:
            node[part] = VALUES.get((kind, path), _sample(schema, node.get(part)))
            return
        if node.get(part) is None:
            node[part] = _sample(paths[walked])
        node = node[part]


def _named(problems: list[str], path: str) -> bool:
    """Some problem names ``path`` or a field that contains it."""
    shown = path.replace("[]", "[0]")
    return any(f": {shown}" in p and p.split(f": {shown}", 1)[1][:1] in (":", ".", "[") for p in problems) or (
        "." in shown.removeprefix("spec.") and _named(problems, path.rsplit(".", 1)[0].removesuffix("[]"))
    )


def _outcome(kind: str, path: str) -> str:
    documents = _documents()
    paths = _all_paths(kind)
    target = next(doc for doc in documents if doc["kind"] == kind)
    _apply_variant(target, kind, path)
    baseline = _load(documents)
    _set(target["spec"], kind, path, paths[path], paths)
    errors = crd_errors(target)
    assert not errors, f"{kind} {path}: the walk's value is not valid for the CRD (add one to VALUES): {errors}"
    try:
        loaded = _load(documents)
    except ConfigError as exc:
        assert _named(exc.problems, path), f"{kind} {path}: refused, but no problem names it: {exc.problems}"
        return "refused"
    if loaded.ignored != baseline.ignored:
        new = set(loaded.ignored) - set(baseline.ignored)
        shown = path.replace("[]", "[0]")
        assert any(shown in line for line in new), f"{kind} {path}: reported, but not by name: {new}"
        return "reported"
    changed = [
        f
        for f in ("listener", "routes", "backends", "budgets", "client_auth")
        if getattr(loaded, f) != getattr(baseline, f)
    ]
    return "consumed" if changed else "IGNORED"


def _refused_whole(kind: str, path: str, node: dict[str, Any]) -> bool:
    """A container the loader refuses as such (``not supported by tokenvoy``): its fields are covered."""
    documents = _documents()
    target = next(doc for doc in documents if doc["kind"] == kind)
    _apply_variant(target, kind, path)
    paths = _all_paths(kind)
    _set(target["spec"], kind, path, node, paths)
    if crd_errors(target):
        return False
    try:
        _load(documents)
    except ConfigError as exc:
        shown = path.replace("[]", "[0]")
        return any(f": {shown}: not supported by tokenvoy" in problem for problem in exc.problems)
    return False


def _walk(kind: str) -> dict[str, str]:
    """Each leaf field's outcome (containers are judged through their leaves, unless refused whole)."""
    outcomes: dict[str, str] = {}
    covered: list[str] = []
    for path, node in _all_paths(kind).items():
        if any(path.startswith(c) and path[len(c)] in ".[" for c in covered):
            continue
        if (kind, path) in CONSUMED:
            outcomes[path] = "consumed"
        elif _is_leaf(node):
            outcomes[path] = _outcome(kind, path)
        elif _refused_whole(kind, path, node):
            outcomes[path] = "refused"
            covered.append(path)
    return outcomes


def _inert(kind: str, path: str) -> bool:
    """Listed in the loader's ``INERT_FIELDS`` (itself, or a field containing it)."""
    return any(path == p or (path.startswith(p) and path[len(p)] in ".[") for p in INERT_FIELDS.get(kind, {}))


@pytest.mark.parametrize("kind", KINDS)
def test_every_crd_field_has_an_effect_or_is_refused_or_reported(kind):
    outcomes = _walk(kind)
    ignored = sorted(
        path
        for path, outcome in outcomes.items()
        if outcome == "IGNORED" and not _inert(kind, path) and (kind, path) not in CONSUMED
    )
    assert not ignored, f"{kind}: accepted without effect: {ignored}"
    assert outcomes, kind


def test_every_inert_field_is_a_published_field_without_effect():
    for kind, fields in INERT_FIELDS.items():
        paths = _all_paths(kind)
        for path, reason in fields.items():
            assert path in paths, (kind, path)
            assert reason, (kind, path)
            leaves = [p for p, node in paths.items() if (p == path or p.startswith(path)) and _is_leaf(node)]
            # no effect (a value other than the one tokenvoy assumes may be refused)
            assert all(_outcome(kind, p) in ("IGNORED", "refused") for p in leaves), (kind, path)
