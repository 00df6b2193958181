"""Load Envoy AI Gateway / Envoy Gateway resources from YAML into a ``GatewayConfig``.

Every problem found is collected (file, ``kind/name``, field path) so ``tokenvoy validate`` can list them
all at once instead of failing on the first.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from tokenvoy.apis.backend_schemas import API_KEY_KINDS, BACKEND_SCHEMAS, CREDENTIAL_KINDS
from tokenvoy.config.model import (
    AI_GATEWAY_METADATA_NAMESPACE,
    ApiKeyAuth,
    ApiKeyCredential,
    AWSCredentials,
    AzureCredentials,
    Backend,
    BackendRef,
    BodyMutation,
    Budget,
    BudgetSelector,
    BudgetSelectorType,
    ClientAuth,
    CostSettings,
    CostType,
    Endpoint,
    GatewayConfig,
    GCPCredentials,
    HeaderMatch,
    HeaderMatchType,
    HeaderMutation,
    JwtAuth,
    JwtProvider,
    Listener,
    MetricsSettings,
    ModelAccessRule,
    ModelPrice,
    RequestCost,
    RetrySettings,
    Route,
    Rule,
    Secret,
    SecurityPolicy,
    TLSValidation,
    TracingSettings,
)

try:  # the C loader is ~10x faster on large multi-document files
    _YamlLoader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - libyaml missing
    _YamlLoader = yaml.SafeLoader

FAKE_PROVIDER_ANNOTATION = "tokenvoy.io/fake-provider"
BUDGET_MODE_ANNOTATION = "tokenvoy.io/budget-mode"  # check (default) | reservation
DEFAULT_MAX_TOKENS_ANNOTATION = "tokenvoy.io/default-max-tokens"  # reservation estimate without max_tokens
RESPONSES_API_ANNOTATION = "tokenvoy.io/responses-api"  # on an AIServiceBackend: native (default) | chat-completions
# Each schema's default ``spec.schema.prefix``: what goes before the API path the translator writes
# (``/v1`` + ``/chat/completions``; Bedrock's ``/model/{id}/converse`` and Azure's ``/openai/deployments/…``
# have none; the GCP schemas get ``/v1/projects/{project}/locations/{region}`` from their GCPCredentials).
DEFAULT_PREFIXES = {name: schema.default_prefix for name, schema in BACKEND_SCHEMAS.items()}
SUPPORTED_SCHEMAS = set(BACKEND_SCHEMAS)
GCP_SCHEMAS = frozenset(name for name, schema in BACKEND_SCHEMAS.items() if schema.prefix_from_gcp)
IGNORED_KINDS = {
    "GatewayClass": "a standalone gateway has no controller to select",
    "EnvoyProxy": "tokenvoy renders its own Envoy bootstrap",
    "Namespace": "namespaces only scope names here",
    "ClientTrafficPolicy": "tokenvoy sets its own listener options",
}
# Read only when a BackendTLSPolicy or a Backend's `spec.tls` names them (CA bundles); else reported ignored.
_REFERENCED_KINDS = {"ConfigMap": "not referenced by a BackendTLSPolicy or a Backend's tls"}
_ENV_REFERENCE = re.compile(r"^\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)\}$")
_FILE_REFERENCE = re.compile(r"^\$\{file:(.+)\}$")


_SCOPE_ONLY = "namespaces only scope names, and names are unique in a config"
_SYSTEM_CAS = "System (the only value accepted) is what tokenvoy trusts when no caCertificateRefs are given"
# Fields of the published APIs accepted without an effect on a standalone gateway, and why. Every other field
# the loader accepts changes the loaded config or is refused naming it (tests/test_config_fields.py).
INERT_FIELDS: dict[str, dict[str, str]] = {
    "AIGatewayRoute": {
        "spec.parentRefs": "a standalone gateway has one listener: every route is attached to it",
        "spec.rules[].name": "names the rule for Kubernetes policy attachment; tokenvoy names rules <route>/rule/<n>",
        "spec.rules[].backendRefs[].namespace": _SCOPE_ONLY,
    },
    "AIServiceBackend": {"spec.backendRef.namespace": _SCOPE_ONLY},
    "BackendSecurityPolicy": {
        f"spec.{field}.{ref}.namespace": _SCOPE_ONLY
        for field, ref in (
            ("apiKey", "secretRef"),
            ("azureAPIKey", "secretRef"),
            ("anthropicAPIKey", "secretRef"),
            ("azureCredentials", "clientSecretRef"),
            ("awsCredentials", "credentialsFile.secretRef"),
            ("gcpCredentials", "credentialsFile.secretRef"),
        )
    },
    "Backend": {
        "spec.endpoints[].zone": "zone-aware routing chooses among endpoints; a Backend has one",
        "spec.tls.autoSNIFromEndpointHostname": "tokenvoy sends the endpoint's hostname as SNI already (or tls.sni)",
        "spec.tls.wellKnownCACertificates": _SYSTEM_CAS,
    },
    "BackendTrafficPolicy": {
        "spec.targetRefs[].group": "the target's kind is checked; its group follows from it",
        "spec.rateLimit.global.rules[].xRateLimitHeaders": "DraftVersion03, the only value accepted, is always sent",
    },
    "BackendTLSPolicy": {
        "spec.targetRefs[].group": "the target is an Envoy Gateway Backend of this config (its kind is checked)",
        "spec.validation.wellKnownCACertificates": _SYSTEM_CAS,
    },
    "SecurityPolicy": {
        "spec.apiKeyAuth.credentialRefs[].namespace": _SCOPE_ONLY,
        "spec.jwt.providers[].remoteJWKS.backendRef.namespace": _SCOPE_ONLY,
        "spec.jwt.providers[].remoteJWKS.backendRefs[].namespace": _SCOPE_ONLY,
        "spec.jwt.providers[].remoteJWKS.backendRefs[].weight": "a JWKS is fetched from one Backend",
        "spec.apiKeyAuth.sanitize": "true, the only value accepted, is what tokenvoy always does (the client's "
        "key never reaches a provider)",
        "spec.targetRefs[].group": "the target's kind is checked; its group follows from it",
        "spec.targetRef.group": "the target's kind is checked; its group follows from it",
        "spec.jwt.providers[].recomputeRoute": "extproc picks the route after authentication and clears the "
        "route cache itself",
    },
    "Gateway": {
        "spec.gatewayClassName": "a standalone gateway has no controller to select",
        "spec.infrastructure": "labels, annotations and parameters of the Kubernetes Deployment running Envoy",
        "spec.listeners[].name": "names the listener routes attach to; there is one",
    },
}


class ConfigError(Exception):
    """Raised with every problem found, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass
class _Resource:
    kind: str
    name: str
    spec: dict[str, Any]
    metadata: dict[str, Any]
    source: str
    raw: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass
class _Problems:
    items: list[str] = field(default_factory=list)

    def add(self, resource: _Resource | None, path: str, message: str) -> None:
        where = f"{resource.source}: {resource.ref}" if resource else ""
        self.items.append(f"{where}: {path}: {message}" if path else f"{where}: {message}")


def load_config(paths: Iterable[str | os.PathLike[str]]) -> GatewayConfig:
    """Read one or more multi-document YAML files of gateway resources."""
    documents: list[tuple[str, Any]] = []
    problems = _Problems()
    sources = []
    for path in paths:
        source = str(path)
        sources.append(source)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            problems.items.append(f"{source}: cannot read: {exc.strerror}")
            continue
        documents.extend((source, doc) for doc in _parse_yaml(source, text, problems))
    config = load_documents(documents, problems)
    return GatewayConfig(
        listener=config.listener,
        routes=config.routes,
        backends=config.backends,
        budgets=config.budgets,
        sources=tuple(sources),
        ignored=config.ignored,
        metrics=config.metrics,
        pricing=config.pricing,
        cost=config.cost,
        tracing=config.tracing,
        client_auth=config.client_auth,
        model_access=config.model_access,
    )


def load_text(text: str, source: str = "<config>") -> GatewayConfig:
    problems = _Problems()
    documents = [(source, doc) for doc in _parse_yaml(source, text, problems)]
    return load_documents(documents, problems)


def parse_documents(source: str, text: str) -> list[tuple[str, Any]]:
    """(source, document) for each YAML document of ``text``; ConfigError on YAML that does not parse."""
    problems = _Problems()
    documents = [(source, doc) for doc in _parse_yaml(source, text, problems)]
    if problems.items:
        raise ConfigError(problems.items)
    return documents


def _parse_yaml(source: str, text: str, problems: _Problems) -> list[Any]:
    try:
        return [doc for doc in yaml.load_all(text, Loader=_YamlLoader) if doc is not None]
    except yaml.YAMLError as exc:
        problems.items.append(f"{source}: {_describe_yaml_error(exc)}")
        return []


def _describe_yaml_error(exc: yaml.YAMLError) -> str:
    """Position and problem only: PyYAML's own text can quote the offending line, which may hold a secret."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "cannot parse"
        return f"invalid YAML{where}: {problem}"
    return "invalid YAML"


def load_documents(documents: list[tuple[str, Any]], problems: _Problems | None = None) -> GatewayConfig:
    problems = problems or _Problems()
    resources: dict[str, dict[str, _Resource]] = {}
    ignored: list[str] = []
    for source, doc in documents:
        if not isinstance(doc, dict) or "kind" not in doc:
            problems.items.append(f"{source}: a document without `kind` (every document must be a resource)")
            continue
        kind = str(doc["kind"])
        metadata = doc.get("metadata") or {}
        name = metadata.get("name") if isinstance(metadata, dict) else None
        if not isinstance(name, str) or not name:
            problems.items.append(f"{source}: {kind}: metadata.name: required")
            continue
        spec = doc.get("spec")
        resource = _Resource(kind, name, {} if spec is None else spec, metadata, source, doc)
        if kind in IGNORED_KINDS:
            ignored.append(f"{resource.ref} ({source}): ignored, {IGNORED_KINDS[kind]}")
            continue
        if kind not in _KNOWN_KINDS:
            problems.add(resource, "kind", f"unsupported kind {kind!r} (supported: {', '.join(_KNOWN_KINDS)})")
            continue
        if not isinstance(resource.spec, dict):
            problems.add(resource, "spec", f"must be a mapping, got {type(resource.spec).__name__}")
            continue
        by_name = resources.setdefault(kind, {})
        if name in by_name:
            problems.add(resource, "metadata.name", f"duplicate, also defined in {by_name[name].source}")
            continue
        by_name[name] = resource

    secrets = {name: r for name, r in resources.get("Secret", {}).items()}
    envoy_backends = resources.get("Backend", {})
    _check_envoy_backends(envoy_backends, problems)
    config_maps = resources.get("ConfigMap", {})
    tls, used_config_maps = _tls_validations(
        resources.get("BackendTLSPolicy", {}), envoy_backends, config_maps, secrets, problems
    )

    def jwks_backend(name: str) -> Endpoint | None:
        backend = envoy_backends.get(name)
        return None if backend is None else _envoy_endpoint(backend, tls.get(name), problems)

    client_auth = _client_auth(
        resources.get("SecurityPolicy", {}),
        secrets,
        config_maps,
        jwks_backend,
        set(resources.get("AIGatewayRoute", {})),
        set(resources.get("Gateway", {})),
        used_config_maps,
        problems,
    )
    ignored += [
        f"{resource.ref} ({resource.source}): ignored, {_REFERENCED_KINDS[resource.kind]}"
        for resource in config_maps.values()
        if resource.name not in used_config_maps
    ]
    policies = _security_policies(resources.get("BackendSecurityPolicy", {}), secrets, problems)
    backends = _backends(resources.get("AIServiceBackend", {}), envoy_backends, policies, problems, tls=tls)
    routes = _routes(resources.get("AIGatewayRoute", {}), backends, problems, ignored)
    budgets = _budgets(
        resources.get("BackendTrafficPolicy", {}), {r.name for r in routes}, set(resources.get("Gateway", {})), problems
    )
    routes = _apply_retries(resources.get("BackendTrafficPolicy", {}), routes, problems)
    listener = _listener(resources.get("Gateway", {}), problems)
    metrics, pricing = _tokenvoy_config(resources.get("TokenvoyConfig", {}), problems)
    tracing = _tracing_settings(resources.get("TokenvoyConfig", {}), problems)
    backends = _with_anthropic_betas(backends, _anthropic_betas(resources.get("TokenvoyConfig", {}), problems))
    cost = _cost_settings(resources.get("TokenvoyConfig", {}), problems)
    model_access = _model_access(resources.get("TokenvoyConfig", {}), client_auth, problems)
    if not routes and not problems.items:
        problems.items.append("no AIGatewayRoute found: the gateway would answer 404 to every request")
    if problems.items:
        raise ConfigError(problems.items)
    return GatewayConfig(
        listener=listener,
        routes=tuple(routes),
        backends=backends,
        budgets=tuple(budgets),
        ignored=tuple(ignored),
        metrics=metrics,
        pricing=pricing,
        cost=cost,
        tracing=tracing,
        client_auth=client_auth,
        model_access=model_access,
    )


def _check_fields(resource: _Resource, value: Any, path: str, allowed: set[str], problems: _Problems) -> bool:
    if not isinstance(value, dict):
        problems.add(resource, path, f"must be a mapping, got {type(value).__name__}")
        return False
    for key in value:
        if key not in allowed:
            problems.add(resource, f"{path}.{key}", f"unknown field (known: {', '.join(sorted(allowed))})")
    return True


def _mapping(resource: _Resource, value: Any, path: str, problems: _Problems) -> dict[str, Any]:
    """``value`` when it is a mapping (absent = empty); anything else is reported, by type only."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.add(resource, path, f"must be a mapping, got {type(value).__name__}")
        return {}
    return value


def _list(resource: _Resource, value: Any, path: str, problems: _Problems) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        problems.add(resource, path, f"must be a list, got {type(value).__name__}")
        return []
    return value


def _unsupported(resource: _Resource, value: dict[str, Any], path: str, fields: dict[str, str], problems: _Problems):
    """Valid Envoy Gateway fields that tokenvoy cannot honour and must not silently drop."""
    for key, why in fields.items():
        if value.get(key) not in (None, False, [], {}):
            problems.add(resource, f"{path}.{key}", f"not supported by tokenvoy: {why}")


def _string(resource: _Resource, value: Any, path: str, problems: _Problems, required: bool = True) -> str | None:
    if value is None:
        if required:
            problems.add(resource, path, "required")
        return None
    if not isinstance(value, str) or not value:
        problems.add(resource, path, f"must be a non-empty string, got {value!r}")
        return None
    return value


def _integer(resource: _Resource, value: Any, path: str, problems: _Problems, default: int, minimum: int = 0) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        problems.add(resource, path, f"must be an integer >= {minimum}, got {value!r}")
        return default
    return value


def _secret_value(resource: _Resource, key: str, problems: _Problems) -> Secret | None:
    origin = f"{resource.ref} key {key!r}"
    string_data = _mapping(resource, resource.raw.get("stringData"), "stringData", problems)
    data = _mapping(resource, resource.raw.get("data"), "data", problems)
    if key in string_data:
        value = str(string_data[key])
        if match := _ENV_REFERENCE.match(value):
            return Secret("env", match.group(1), origin)
        if match := _FILE_REFERENCE.match(value):
            return Secret("file", match.group(1), origin)
        return Secret("literal", value, origin)
    if key in data:
        import base64
        import binascii

        try:
            return Secret("literal", base64.b64decode(str(data[key]), validate=True).decode(), origin)
        except (binascii.Error, UnicodeDecodeError):
            problems.add(resource, f"data.{key}", "is not valid base64")
            return None
    problems.add(resource, "stringData", f"has no key {key!r} (nor has data)")
    return None


_API_KEY_FIELDS = {kind.policy_type: kind.spec_field for kind in API_KEY_KINDS}
_POLICY_TYPE_FIELDS = {kind.policy_type: kind.spec_field for kind in CREDENTIAL_KINDS.values()}
_SECURITY_POLICY_FIELDS = {"type", "targetRefs", "credentialOverride", *_POLICY_TYPE_FIELDS.values()}
_SECRET_REF_FIELDS = {"name", "namespace", "group", "kind"}
_AWS_FIELDS = {"region", "credentialsFile", "oidcExchangeToken"}
_AWS_FILE_FIELDS = {"secretRef", "profile"}
_GCP_FIELDS = {"projectName", "region", "credentialsFile", "workloadIdentityFederationConfig"}
_AZURE_FIELDS = {"clientID", "tenantID", "clientSecretRef", "oidcExchangeToken"}
# The Secret keys Envoy AI Gateway reads for each credential (tokenvoy reads the same ones).
AWS_CREDENTIALS_KEY = "credentials"
GCP_SERVICE_ACCOUNT_KEY = "service_account.json"
AZURE_CLIENT_SECRET_KEY = "client-secret"
_OIDC_UNSUPPORTED = "OIDC token exchange is not supported by a standalone gateway; use a credentials Secret"


def _security_policies(
    items: dict[str, _Resource], secrets: dict[str, _Resource], problems: _Problems
) -> dict[str, SecurityPolicy]:
    """Map each targeted AIServiceBackend name to its policy."""
    by_backend: dict[str, SecurityPolicy] = {}
    for resource in items.values():
        spec = resource.spec
        if not _check_fields(resource, spec, "spec", _SECURITY_POLICY_FIELDS, problems):
            continue
        _unsupported(
            resource,
            spec,
            "spec",
            {"credentialOverride": "per-request credentials; the gateway signs with the policy's own credential"},
            problems,
        )
        policy_type = _string(resource, spec.get("type"), "spec.type", problems)
        if policy_type is None:
            continue
        field_name = _POLICY_TYPE_FIELDS.get(policy_type)
        if field_name is None:
            problems.add(
                resource, "spec.type", f"{policy_type!r} is not supported (supported: {', '.join(_POLICY_TYPE_FIELDS)})"
            )
            continue
        for other in _POLICY_TYPE_FIELDS.values():
            if other != field_name and spec.get(other) is not None:
                problems.add(resource, f"spec.{other}", f"must not be set when spec.type is {policy_type}")
        if spec.get(field_name) is None:
            problems.add(resource, f"spec.{field_name}", f"required when spec.type is {policy_type}")
            continue
        policy = _policy(resource, policy_type, field_name, secrets, problems)
        if policy is None:
            continue
        for index, target in enumerate(_list(resource, spec.get("targetRefs"), "spec.targetRefs", problems)):
            target = _mapping(resource, target, f"spec.targetRefs[{index}]", problems)
            _reference_kind(
                resource, target, f"spec.targetRefs[{index}]", "AIServiceBackend", "aigateway.envoyproxy.io", problems
            )
            target_name = _string(resource, target.get("name"), f"spec.targetRefs[{index}].name", problems)
            if target_name:
                by_backend[target_name] = policy
    return by_backend


def _policy(
    resource: _Resource, policy_type: str, field_name: str, secrets: dict[str, _Resource], problems: _Problems
) -> SecurityPolicy | None:
    path = f"spec.{field_name}"
    spec = resource.spec[field_name]
    if policy_type in _API_KEY_FIELDS:
        key_spec = _mapping(resource, spec, path, problems)
        api_key = _secret_ref(resource, key_spec.get("secretRef"), f"{path}.secretRef", secrets, "apiKey", problems)
        return SecurityPolicy(resource.name, policy_type, api_key=api_key)
    if policy_type == "AWSCredentials":
        if not _check_fields(resource, spec, path, _AWS_FIELDS, problems):
            return None
        _unsupported(resource, spec, path, {"oidcExchangeToken": _OIDC_UNSUPPORTED}, problems)
        region = _string(resource, spec.get("region"), f"{path}.region", problems)
        credentials_file, profile = None, "default"
        file_spec = spec.get("credentialsFile")
        if file_spec is not None and _check_fields(
            resource, file_spec, f"{path}.credentialsFile", _AWS_FILE_FIELDS, problems
        ):
            file_path = f"{path}.credentialsFile"
            credentials_file = _secret_ref(
                resource, file_spec.get("secretRef"), f"{file_path}.secretRef", secrets, AWS_CREDENTIALS_KEY, problems
            )
            profile = _string(resource, file_spec.get("profile"), f"{file_path}.profile", problems, False) or profile
        if region is None:
            return None
        return SecurityPolicy(resource.name, policy_type, aws=AWSCredentials(region, credentials_file, profile))
    if policy_type == "GCPCredentials":
        if not _check_fields(resource, spec, path, _GCP_FIELDS, problems):
            return None
        why = "Workload Identity Federation is not supported by a standalone gateway; use credentialsFile"
        _unsupported(resource, spec, path, {"workloadIdentityFederationConfig": why}, problems)
        project = _string(resource, spec.get("projectName"), f"{path}.projectName", problems)
        region = _string(resource, spec.get("region"), f"{path}.region", problems)
        service_account = None
        file_spec = spec.get("credentialsFile")
        if file_spec is not None and _check_fields(
            resource, file_spec, f"{path}.credentialsFile", {"secretRef"}, problems
        ):
            service_account = _secret_ref(
                resource,
                file_spec.get("secretRef"),
                f"{path}.credentialsFile.secretRef",
                secrets,
                GCP_SERVICE_ACCOUNT_KEY,
                problems,
            )
        for name, value in (("projectName", project), ("region", region)):
            if value is not None and "/" in value:
                problems.add(resource, f"{path}.{name}", f"must not contain '/', got {value!r}")
        if project is None or region is None:
            return None
        return SecurityPolicy(resource.name, policy_type, gcp=GCPCredentials(project, region, service_account))
    if not _check_fields(resource, spec, path, _AZURE_FIELDS, problems):
        return None
    _unsupported(resource, spec, path, {"oidcExchangeToken": _OIDC_UNSUPPORTED}, problems)
    client_id = _string(resource, spec.get("clientID"), f"{path}.clientID", problems)
    tenant_id = _string(resource, spec.get("tenantID"), f"{path}.tenantID", problems)
    client_secret = None
    if spec.get("clientSecretRef") is None and spec.get("oidcExchangeToken") is None:
        problems.add(resource, f"{path}.clientSecretRef", "required")
    elif spec.get("clientSecretRef") is not None:
        client_secret = _secret_ref(
            resource, spec["clientSecretRef"], f"{path}.clientSecretRef", secrets, AZURE_CLIENT_SECRET_KEY, problems
        )
    if client_id is None or tenant_id is None or client_secret is None:
        return None
    return SecurityPolicy(resource.name, policy_type, azure=AzureCredentials(client_id, tenant_id, client_secret))


def _secret_ref(
    resource: _Resource, value: Any, path: str, secrets: dict[str, _Resource], key: str, problems: _Problems
) -> Secret | None:
    """The ``key`` of the Secret a ``secretRef`` names (read lazily, never here)."""
    if value is None:
        problems.add(resource, path, "required")
        return None
    if not _check_fields(resource, value, path, _SECRET_REF_FIELDS, problems):
        return None
    kind = value.get("kind", "Secret")
    if kind not in ("Secret", None, ""):
        problems.add(resource, f"{path}.kind", f"must be Secret, got {kind!r}")
        return None
    if value.get("group") not in (None, ""):
        problems.add(resource, f"{path}.group", f'must be the core group (""), got {value["group"]!r}')
        return None
    name = _string(resource, value.get("name"), f"{path}.name", problems)
    if name is None:
        return None
    secret = secrets.get(name)
    if secret is None:
        problems.add(resource, f"{path}.name", f"Secret/{name} does not exist")
        return None
    return _secret_value(secret, key, problems)


def _reference_kind(
    resource: _Resource, ref: dict[str, Any], path: str, kind: str, group: str, problems: _Problems
) -> None:
    """A reference's ``kind`` and ``group``: absent, or the one kind tokenvoy resolves there."""
    for key, expected in (("kind", kind), ("group", group)):
        if ref.get(key) not in (None, expected):
            problems.add(resource, f"{path}.{key}", f"must be {expected}, got {ref.get(key)!r}")


_ENVOY_BACKEND_FIELDS = {"endpoints", "tls", "type", "appProtocols", "fallback"}
_ENDPOINT_FIELDS = {"fqdn", "ip", "hostname", "unix", "zone"}


def _check_envoy_backends(items: dict[str, _Resource], problems: _Problems) -> None:
    """The Envoy Gateway ``Backend`` fields tokenvoy cannot honour, once per Backend."""
    for resource in items.values():
        spec = resource.spec
        if not _check_fields(resource, spec, "spec", _ENVOY_BACKEND_FIELDS, problems):
            continue
        why = {
            "appProtocols": "tokenvoy speaks HTTP/1.1 to providers (over TLS on port 443 or with tls)",
            "fallback": "fallback Backends; give the AIGatewayRoute backendRefs priorities instead",
        }
        _unsupported(resource, spec, "spec", why, problems)
        if spec.get("type") not in (None, "Endpoints"):
            problems.add(resource, "spec.type", f"not supported by tokenvoy: only Endpoints, got {spec['type']!r}")
        endpoints = spec.get("endpoints")
        if isinstance(endpoints, list) and len(endpoints) > 1:
            problems.add(resource, "spec.endpoints", f"tokenvoy calls one endpoint per Backend, got {len(endpoints)}")
        for index, endpoint in enumerate(endpoints if isinstance(endpoints, list) else []):
            path = f"spec.endpoints[{index}]"
            if isinstance(endpoint, dict) and _check_fields(resource, endpoint, path, _ENDPOINT_FIELDS, problems):
                why = {
                    "hostname": "give the host name as fqdn.hostname",
                    "unix": "Unix-socket endpoints are not supported",
                }
                _unsupported(resource, endpoint, path, why, problems)


def _envoy_endpoint(resource: _Resource, tls: TLSValidation | None, problems: _Problems) -> Endpoint | None:
    endpoints = _list(resource, resource.spec.get("endpoints"), "spec.endpoints", problems)
    if not endpoints:
        problems.add(resource, "spec.endpoints", "required: at least one endpoint")
        return None
    first = endpoints[0]
    address = first.get("fqdn") or first.get("ip") if isinstance(first, dict) else None
    if not isinstance(address, dict):
        problems.add(resource, "spec.endpoints[0]", "needs `fqdn` {hostname, port} or `ip` {address, port}")
        return None
    host = address.get("hostname") or address.get("address")
    host = _string(resource, host, "spec.endpoints[0].fqdn.hostname", problems)
    port = _integer(resource, address.get("port"), "spec.endpoints[0].port", problems, default=443, minimum=1)
    if host is None:
        return None
    on = tls is not None or "tls" in resource.spec or port == 443
    return Endpoint(host=host, port=port, tls=on, tls_validation=tls)


def _backends(
    items: dict[str, _Resource],
    envoy_backends: dict[str, _Resource],
    policies: dict[str, SecurityPolicy],
    problems: _Problems,
    tls: dict[str, TLSValidation] | None = None,
) -> dict[str, Backend]:
    backends: dict[str, Backend] = {}
    for resource in items.values():
        spec = resource.spec
        if not _check_fields(
            resource, spec, "spec", {"schema", "backendRef", "headerMutation", "bodyMutation"}, problems
        ):
            continue
        schema = _mapping(resource, spec.get("schema"), "spec.schema", problems)
        schema_name = _string(resource, schema.get("name"), "spec.schema.name", problems)
        if schema_name is not None and schema_name not in SUPPORTED_SCHEMAS:
            problems.add(resource, "spec.schema.name", f"{schema_name!r} is not supported yet")
        backend_ref = _mapping(resource, spec.get("backendRef"), "spec.backendRef", problems)
        _reference_kind(resource, backend_ref, "spec.backendRef", "Backend", "gateway.envoyproxy.io", problems)
        _unsupported(
            resource, backend_ref, "spec.backendRef", {"port": "the port is the Backend's endpoint's"}, problems
        )
        ref_name = _string(resource, backend_ref.get("name"), "spec.backendRef.name", problems)
        endpoint = None
        fake = False
        if ref_name is not None:
            envoy_backend = envoy_backends.get(ref_name)
            if envoy_backend is None:
                problems.add(resource, "spec.backendRef.name", f"Backend/{ref_name} does not exist")
            else:
                endpoint = _envoy_endpoint(envoy_backend, (tls or {}).get(ref_name), problems)
                annotations = envoy_backend.metadata.get("annotations") or {}
                fake = (
                    isinstance(annotations, dict)
                    and str(annotations.get(FAKE_PROVIDER_ANNOTATION, "")).lower() == "true"
                )
        if schema_name is None or endpoint is None:
            continue
        prefix = schema.get("prefix") or DEFAULT_PREFIXES.get(schema_name, "")
        policy = policies.get(resource.name)
        if not schema.get("prefix") and schema_name in GCP_SCHEMAS and policy is not None and policy.gcp is not None:
            prefix = f"/v1/projects/{policy.gcp.project}/locations/{policy.gcp.region}"
        via_chat = _responses_via_chat(resource, schema_name, problems)
        backends[resource.name] = Backend(
            name=resource.name,
            schema=schema_name,
            schema_version=schema.get("version"),
            path_prefix="/" + str(prefix).strip("/") if str(prefix).strip("/") else "",
            endpoint=endpoint,
            security=policy,
            fake_provider=fake,
            header_mutation=_header_mutation(resource, spec.get("headerMutation"), "spec.headerMutation", problems),
            body_mutation=_body_mutation(resource, spec.get("bodyMutation"), "spec.bodyMutation", problems),
            responses_via_chat=via_chat,
        )
    return backends


_RESPONSES_API_MODES = ("native", "chat-completions")


def _responses_via_chat(resource: _Resource, schema: str, problems: _Problems) -> bool:
    """The AIServiceBackend's ``tokenvoy.io/responses-api`` annotation: whether ``/v1/responses`` requests reach
    it translated to Chat Completions (for an OpenAI-compatible server that lacks the Responses API)."""
    annotations = resource.metadata.get("annotations") or {}
    value = annotations.get(RESPONSES_API_ANNOTATION) if isinstance(annotations, dict) else None
    if value is None:
        return False
    mode = str(value).lower()
    field = f"metadata.annotations.{RESPONSES_API_ANNOTATION}"
    if mode not in _RESPONSES_API_MODES:
        problems.add(resource, field, f"must be native or chat-completions, got {value!r}")
        return False
    choosers = [name for name, row in BACKEND_SCHEMAS.items() if row.chooses_responses_api]
    if schema not in choosers:
        problems.add(resource, field, f"only {' and '.join(choosers)} backends choose; {schema} is always translated")
        return False
    return mode == "chat-completions"


_TLS_POLICY_FIELDS = {"targetRefs", "validation", "options"}
_TLS_VALIDATION_FIELDS = {"caCertificateRefs", "hostname", "subjectAltNames", "wellKnownCACertificates"}
_BACKEND_TLS_FIELDS = {
    "sni",
    "caCertificateRefs",
    "wellKnownCACertificates",
    "insecureSkipVerify",
    "alpnProtocols",
    "autoSNIFromEndpointHostname",
    "ciphers",
    "clientCertificateRef",
    "ecdhCurves",
    "fingerprints",
    "maxVersion",
    "minVersion",
    "signatureAlgorithms",
}
_BACKEND_TLS_UNSUPPORTED = {
    "insecureSkipVerify": "tokenvoy always verifies provider certificates; trust a private CA with caCertificateRefs",
    "clientCertificateRef": "client certificates (mTLS) to providers are not supported yet",
    "fingerprints": "certificate pinning is not supported yet",
    "ciphers": "tokenvoy uses Envoy's default cipher suites",
    "ecdhCurves": "tokenvoy uses Envoy's default curves",
    "signatureAlgorithms": "tokenvoy uses Envoy's default signature algorithms",
    "minVersion": "tokenvoy uses Envoy's default (TLS 1.2 and up)",
    "maxVersion": "tokenvoy uses Envoy's default (TLS 1.2 and up)",
    "alpnProtocols": "tokenvoy speaks HTTP/1.1 to providers",
}


def _tls_validations(
    policies: dict[str, _Resource],
    envoy_backends: dict[str, _Resource],
    config_maps: dict[str, _Resource],
    secrets: dict[str, _Resource],
    problems: _Problems,
) -> tuple[dict[str, TLSValidation], set[str]]:
    """Backend name → how its certificate is verified, from ``BackendTLSPolicy`` (Gateway API) and the
    Envoy Gateway Backend's own ``spec.tls``; also the ConfigMaps they read (the others are ignored)."""
    validations: dict[str, TLSValidation] = {}
    used: set[str] = set()
    for resource in envoy_backends.values():
        spec = _mapping(resource, resource.spec.get("tls"), "spec.tls", problems)
        if not spec or not _check_fields(resource, spec, "spec.tls", _BACKEND_TLS_FIELDS, problems):
            continue
        _unsupported(resource, spec, "spec.tls", _BACKEND_TLS_UNSUPPORTED, problems)
        host = _endpoint_host(resource)
        sni = _string(resource, spec.get("sni"), "spec.tls.sni", problems, required=False) or host
        if sni is None:
            continue
        ca = _ca_bundle(resource, spec, "spec.tls", config_maps, secrets, used, problems)
        if ca is not None or sni != host:  # else the defaults: SNI and verified name are the host, system CAs
            validations[resource.name] = TLSValidation(sni, ca, (), resource.ref)
    for resource in policies.values():
        spec = resource.spec
        if not _check_fields(resource, spec, "spec", _TLS_POLICY_FIELDS, problems):
            continue
        _unsupported(resource, spec, "spec", {"options": "TLS options are not supported"}, problems)
        validation = _mapping(resource, spec.get("validation"), "spec.validation", problems)
        if not _check_fields(resource, validation, "spec.validation", _TLS_VALIDATION_FIELDS, problems):
            continue
        hostname = _string(resource, validation.get("hostname"), "spec.validation.hostname", problems)
        names = []
        for index, item in enumerate(
            _list(resource, validation.get("subjectAltNames"), "spec.validation.subjectAltNames", problems)
        ):
            path = f"spec.validation.subjectAltNames[{index}]"
            item = _mapping(resource, item, path, problems)
            if item.get("type", "Hostname") != "Hostname":
                problems.add(resource, f"{path}.type", f"{item.get('type')!r} is not supported (only Hostname)")
                continue
            if (name := _string(resource, item.get("hostname"), f"{path}.hostname", problems)) is not None:
                names.append(name)
        ca = _ca_bundle(resource, validation, "spec.validation", config_maps, secrets, used, problems)
        if hostname is None:
            continue
        for index, target in enumerate(_list(resource, spec.get("targetRefs"), "spec.targetRefs", problems)):
            path = f"spec.targetRefs[{index}]"
            target = _mapping(resource, target, path, problems)
            _unsupported(resource, target, path, {"sectionName": "a policy applies to the whole Backend"}, problems)
            name = _string(resource, target.get("name"), f"{path}.name", problems)
            if name is None:
                continue
            if target.get("kind", "Backend") != "Backend" or name not in envoy_backends:
                problems.add(resource, path, f"{target.get('kind', 'Backend')}/{name} is not a Backend of this config")
                continue
            validations[name] = TLSValidation(hostname, ca, tuple(names), resource.ref)
    return validations, used


def _ca_bundle(
    resource: _Resource,
    spec: dict[str, Any],
    path: str,
    config_maps: dict[str, _Resource],
    secrets: dict[str, _Resource],
    used: set[str],
    problems: _Problems,
) -> str | None:
    """The PEM of ``caCertificateRefs`` (ConfigMap or Secret key ``ca.crt``); None = the system bundle."""
    well_known = spec.get("wellKnownCACertificates")
    if well_known not in (None, "System"):
        problems.add(resource, f"{path}.wellKnownCACertificates", f"must be System, got {well_known!r}")
    refs = _list(resource, spec.get("caCertificateRefs"), f"{path}.caCertificateRefs", problems)
    if refs and well_known is not None:
        problems.add(resource, path, "set caCertificateRefs or wellKnownCACertificates, not both")
    bundles = []
    for index, ref in enumerate(refs):
        ref_path = f"{path}.caCertificateRefs[{index}]"
        ref = _mapping(resource, ref, ref_path, problems)
        kind = ref.get("kind", "ConfigMap")
        name = _string(resource, ref.get("name"), f"{ref_path}.name", problems)
        if name is None:
            continue
        source = (config_maps if kind == "ConfigMap" else secrets if kind == "Secret" else {}).get(name)
        if source is None:
            problems.add(resource, f"{ref_path}.name", f"{kind}/{name} does not exist")
            continue
        if kind == "ConfigMap":
            used.add(name)
            data = _mapping(source, source.raw.get("data"), "data", problems)
            pem = data.get("ca.crt")
        else:
            secret = _secret_value(source, "ca.crt", problems)
            try:
                pem = secret.read() if secret is not None else None
            except ValueError as exc:
                problems.add(source, "data.ca.crt", str(exc))
                continue
        if not isinstance(pem, str) or "-----BEGIN CERTIFICATE-----" not in pem:
            problems.add(source, "data.ca.crt", "must hold a PEM certificate bundle (-----BEGIN CERTIFICATE-----)")
            continue
        bundles.append(pem.strip() + "\n")
    return "".join(bundles) or None


def _endpoint_host(resource: _Resource) -> str | None:
    endpoints = resource.spec.get("endpoints")
    first = endpoints[0] if isinstance(endpoints, list) and endpoints else None
    address = first.get("fqdn") or first.get("ip") if isinstance(first, dict) else None
    host = (address.get("hostname") or address.get("address")) if isinstance(address, dict) else None
    return host if isinstance(host, str) and host else None


_COST_TYPES = {item.value: item for item in CostType}
# Field names as published in the AIGatewayRoute CRD (v1alpha1 and v1beta1); `filterConfig` is from
# earlier releases: accepted, and reported as ignored.
_ROUTE_FIELDS = {"parentRefs", "rules", "llmRequestCosts", "hostnames", "filterConfig"}
_RULE_FIELDS = {"name", "matches", "backendRefs", "timeouts", "modelsOwnedBy", "modelsCreatedAt", "streamIdleTimeout"}
_MATCH_FIELDS = {"headers"}
_HEADER_MATCH_FIELDS = {"name", "type", "value"}
_BACKEND_REF_FIELDS = {
    "name",
    "namespace",
    "group",
    "kind",
    "weight",
    "priority",
    "modelNameOverride",
    "headerMutation",
    "bodyMutation",
}
_COST_FIELDS = {"metadataKey", "type", "cel"}


_FILTER_CONFIG_IGNORED = (
    "it sizes Envoy AI Gateway's external processor container (earlier releases); tokenvoy runs its own extproc"
)


def _routes(
    items: dict[str, _Resource], backends: dict[str, Backend], problems: _Problems, ignored: list[str]
) -> list[Route]:
    routes = []
    for resource in items.values():
        spec = resource.spec
        if not _check_fields(resource, spec, "spec", _ROUTE_FIELDS, problems):
            continue
        if spec.get("filterConfig") is not None:
            ignored.append(f"{resource.ref} ({resource.source}): spec.filterConfig ignored, {_FILTER_CONFIG_IGNORED}")
        # `/v1/models` `created` defaults to the route's creation, as in Envoy AI Gateway.
        created = resource.metadata.get("creationTimestamp")
        route_created_at = _rfc3339_seconds(resource, created, "metadata.creationTimestamp", problems)
        rules = []
        for rule_index, rule_spec in enumerate(_list(resource, spec.get("rules"), "spec.rules", problems)):
            path = f"spec.rules[{rule_index}]"
            if not _check_fields(resource, rule_spec, path, _RULE_FIELDS, problems):
                continue
            matches = []
            for match_index, match in enumerate(_list(resource, rule_spec.get("matches"), f"{path}.matches", problems)):
                match_path = f"{path}.matches[{match_index}]"
                if not _check_fields(resource, match, match_path, _MATCH_FIELDS, problems):
                    continue
                headers = []
                for header_index, header in enumerate(
                    _list(resource, match.get("headers"), f"{match_path}.headers", problems)
                ):
                    header_path = f"{match_path}.headers[{header_index}]"
                    if not _check_fields(resource, header, header_path, _HEADER_MATCH_FIELDS, problems):
                        continue
                    match_type = header.get("type", "Exact")
                    if match_type not in ("Exact", "RegularExpression"):
                        problems.add(
                            resource,
                            f"{header_path}.type",
                            f"unknown match type {match_type!r} (known: Exact, RegularExpression)",
                        )
                        continue
                    name = _string(resource, header.get("name"), f"{header_path}.name", problems)
                    value = _string(resource, header.get("value"), f"{header_path}.value", problems)
                    if match_type == "RegularExpression" and value is not None and (error := _regex_problem(value)):
                        problems.add(resource, f"{header_path}.value", error)
                    if name and value is not None:
                        headers.append(HeaderMatch(name.lower(), value, HeaderMatchType(match_type)))
                matches.append(tuple(headers))
            refs = []
            ref_specs = _list(resource, rule_spec.get("backendRefs"), f"{path}.backendRefs", problems)
            for ref_index, ref in enumerate(ref_specs):
                ref_path = f"{path}.backendRefs[{ref_index}]"
                if not _check_fields(resource, ref, ref_path, _BACKEND_REF_FIELDS, problems):
                    continue
                _reference_kind(resource, ref, ref_path, "AIServiceBackend", "aigateway.envoyproxy.io", problems)
                ref_name = _string(resource, ref.get("name"), f"{ref_path}.name", problems)
                if ref_name is None:
                    continue
                if ref_name not in backends:
                    problems.add(resource, f"{ref_path}.name", f"AIServiceBackend/{ref_name} does not exist")
                    continue
                refs.append(
                    BackendRef(
                        backend=ref_name,
                        weight=_integer(resource, ref.get("weight"), f"{ref_path}.weight", problems, 1, 0),
                        priority=_integer(resource, ref.get("priority"), f"{ref_path}.priority", problems, 0, 0),
                        model_name_override=_string(
                            resource,
                            ref.get("modelNameOverride") or None,
                            f"{ref_path}.modelNameOverride",
                            problems,
                            False,
                        ),
                        header_mutation=_header_mutation(
                            resource, ref.get("headerMutation"), f"{ref_path}.headerMutation", problems
                        ),
                        body_mutation=_body_mutation(
                            resource, ref.get("bodyMutation"), f"{ref_path}.bodyMutation", problems
                        ),
                    )
                )
            if not refs:
                if not ref_specs:  # otherwise each bad entry is reported already
                    problems.add(resource, f"{path}.backendRefs", "required: at least one backend")
                continue
            rule_name = f"{resource.name}/rule/{rule_index}"
            request_ms, backend_ms = _timeouts(resource, rule_spec.get("timeouts"), f"{path}.timeouts", problems)
            idle_ms = _duration_ms(resource, rule_spec.get("streamIdleTimeout"), f"{path}.streamIdleTimeout", problems)
            owned_by = _string(resource, rule_spec.get("modelsOwnedBy"), f"{path}.modelsOwnedBy", problems, False)
            created_at = _rfc3339_seconds(
                resource, rule_spec.get("modelsCreatedAt"), f"{path}.modelsCreatedAt", problems
            )
            rule = Rule(name=rule_name, matches=tuple(matches), backend_refs=tuple(refs))
            rules.append(
                replace(
                    rule,
                    request_timeout_ms=request_ms,
                    backend_request_timeout_ms=backend_ms,
                    models_owned_by=owned_by or rule.models_owned_by,
                    models_created_at=created_at if created_at is not None else route_created_at,
                    stream_idle_timeout_ms=idle_ms or None,
                )
            )
        costs = []
        for cost_index, cost in enumerate(
            _list(resource, spec.get("llmRequestCosts"), "spec.llmRequestCosts", problems)
        ):
            cost_path = f"spec.llmRequestCosts[{cost_index}]"
            if not _check_fields(resource, cost, cost_path, _COST_FIELDS, problems):
                continue
            key = _string(resource, cost.get("metadataKey"), f"{cost_path}.metadataKey", problems)
            cost_type = _COST_TYPES.get(cost.get("type"))
            if cost_type is None:
                problems.add(
                    resource, f"{cost_path}.type", f"must be one of {', '.join(_COST_TYPES)}, got {cost.get('type')!r}"
                )
                continue
            cel = cost.get("cel")
            if cost_type is CostType.CEL:
                cel = _string(resource, cel, f"{cost_path}.cel", problems)
                if cel is None:
                    continue
                if key and (error := _cel_error(key, cel)):
                    problems.add(resource, f"{cost_path}.cel", error)
                    continue
            if key:
                costs.append(RequestCost(key, cost_type, cel))
        hostnames = _hostnames(resource, spec.get("hostnames"), problems)
        routes.append(Route(name=resource.name, rules=tuple(rules), costs=tuple(costs), hostnames=hostnames))
    return routes


# Gateway API `Hostname` (as the AIGatewayRoute CRD validates it): a DNS name, optionally `*.`-prefixed.
_HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_MAX_HOSTNAMES = 16


def _hostnames(resource: _Resource, value: Any, problems: _Problems) -> tuple[str, ...]:
    """``spec.hostnames``: the route serves only requests whose Host (port aside) is one of them."""
    names: list[str] = []
    items = _list(resource, value, "spec.hostnames", problems)
    if len(items) > _MAX_HOSTNAMES:
        problems.add(resource, "spec.hostnames", f"at most {_MAX_HOSTNAMES} entries, got {len(items)}")
    for index, name in enumerate(items):
        path = f"spec.hostnames[{index}]"
        if not isinstance(name, str) or len(name) > 253 or not _HOSTNAME.match(name):
            problems.add(resource, path, f"must be a lower-case DNS name, optionally *.-prefixed (no IP), got {name!r}")
        elif _is_ip_address(name):
            problems.add(resource, path, f"must be a DNS name, not an IP address, got {name!r}")
        elif name in names:
            problems.add(resource, path, f"{name!r} is listed twice")
        else:
            names.append(name)
    return tuple(names)


def _is_ip_address(name: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


# --- timeouts, `/v1/models` fields, header/body mutations, retries (Envoy AI Gateway / Envoy Gateway shapes) ---

# Gateway API Duration (GEP-2257), as the published CRDs validate it.
_DURATION = re.compile(r"^(?:[0-9]{1,5}(?:h|m|s|ms)){1,4}$")
_DURATION_PART = re.compile(r"([0-9]{1,5})(ms|h|m|s)")
_DURATION_MS = {"h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}
_TIMEOUT_FIELDS = {"request", "backendRequest"}
_MUTATION_FIELDS = {"set", "remove"}
_HEADER_FIELDS = {"name", "value"}
_BODY_FIELD_FIELDS = {"path", "value"}
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")
# The gateway computes these itself; an edit would corrupt the request.
_GATEWAY_OWNED_HEADERS = {"content-length", "host", "transfer-encoding"}
_GATEWAY_OWNED_FIELDS = {"stream": "the gateway reads the client's `stream` to handle the response"}
_MAX_MUTATIONS = 16  # per list, as in the CRD


def _duration_ms(resource: _Resource, value: Any, path: str, problems: _Problems) -> int | None:
    """A Gateway API duration (``30s``, ``500ms``, ``1h2m``) in milliseconds; None if absent or invalid."""
    if value is None:
        return None
    if not isinstance(value, str) or not _DURATION.match(value):
        problems.add(resource, path, f"must be a Gateway API duration such as 30s, 500ms or 1h2m, got {value!r}")
        return None
    return sum(int(number) * _DURATION_MS[unit] for number, unit in _DURATION_PART.findall(value))


def _rfc3339_seconds(resource: _Resource, value: Any, path: str, problems: _Problems) -> int | None:
    """Unix seconds of an RFC 3339 timestamp (YAML may already have parsed it into a datetime)."""
    import datetime as dt

    if value is None:
        return None
    parsed = value
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            parsed = None
    if not isinstance(parsed, dt.datetime) or parsed.tzinfo is None:
        problems.add(
            resource,
            path,
            f"must be an RFC 3339 timestamp with a time zone such as 2024-05-21T10:00:00Z, got {value!r}",
        )
        return None
    return int(parsed.timestamp())


def _timeouts(resource: _Resource, value: Any, path: str, problems: _Problems) -> tuple[int | None, int | None]:
    if value is None or not _check_fields(resource, value, path, _TIMEOUT_FIELDS, problems):
        return None, None
    request = _duration_ms(resource, value.get("request"), f"{path}.request", problems)
    backend = _duration_ms(resource, value.get("backendRequest"), f"{path}.backendRequest", problems)
    if request and backend is not None and (backend == 0 or backend > request):
        problems.add(
            resource, f"{path}.backendRequest", f"must not be longer than timeouts.request ({value.get('request')})"
        )
    return request, backend


def _mutation_list(resource: _Resource, value: Any, path: str, problems: _Problems) -> list[Any]:
    items = _list(resource, value, path, problems)
    if len(items) > _MAX_MUTATIONS:
        problems.add(resource, path, f"at most {_MAX_MUTATIONS} entries, got {len(items)}")
    return items


def _header_mutation(resource: _Resource, value: Any, path: str, problems: _Problems) -> HeaderMutation | None:
    if value is None or not _check_fields(resource, value, path, _MUTATION_FIELDS, problems):
        return None
    set_headers: dict[str, str] = {}
    for index, entry in enumerate(_mutation_list(resource, value.get("set"), f"{path}.set", problems)):
        entry_path = f"{path}.set[{index}]"
        if not _check_fields(resource, entry, entry_path, _HEADER_FIELDS, problems):
            continue
        name = _header_name(resource, entry.get("name"), f"{entry_path}.name", problems)
        header_value = entry.get("value")
        if not isinstance(header_value, str) or "\n" in header_value or "\r" in header_value:
            problems.add(resource, f"{entry_path}.value", f"must be a single-line string, got {header_value!r}")
            continue
        if name is None:
            continue
        if name in set_headers:
            problems.add(resource, f"{entry_path}.name", f"{name!r} is set twice")
            continue
        set_headers[name] = header_value
    removed = _removals(resource, value, path, problems, _header_name, set_headers)
    return HeaderMutation(tuple(set_headers.items()), removed)


def _removals(
    resource: _Resource,
    value: dict[str, Any],
    path: str,
    problems: _Problems,
    parse_name: Callable[[_Resource, Any, str, _Problems], str | None],
    set_names: Container[str],
) -> tuple[str, ...]:
    """A mutation's ``remove`` list: valid names, once each, none of them also set."""
    removed: list[str] = []
    for index, entry in enumerate(_mutation_list(resource, value.get("remove"), f"{path}.remove", problems)):
        name = parse_name(resource, entry, f"{path}.remove[{index}]", problems)
        if name is None:
            continue
        if name in set_names:
            problems.add(resource, f"{path}.remove[{index}]", f"{name!r} is both set and removed")
        elif name not in removed:
            removed.append(name)
    return tuple(removed)


def _header_name(resource: _Resource, value: Any, path: str, problems: _Problems) -> str | None:
    if not isinstance(value, str) or not _HEADER_NAME.match(value):
        problems.add(resource, path, f"must be an HTTP header name, got {value!r}")
        return None
    name = value.lower()
    if name in _GATEWAY_OWNED_HEADERS:
        problems.add(resource, path, f"{name!r} cannot be changed: the gateway sets it")
        return None
    return name


def _body_mutation(resource: _Resource, value: Any, path: str, problems: _Problems) -> BodyMutation | None:
    if value is None or not _check_fields(resource, value, path, _MUTATION_FIELDS, problems):
        return None
    set_fields: dict[str, bytes] = {}
    for index, entry in enumerate(_mutation_list(resource, value.get("set"), f"{path}.set", problems)):
        entry_path = f"{path}.set[{index}]"
        if not _check_fields(resource, entry, entry_path, _BODY_FIELD_FIELDS, problems):
            continue
        field_name = _body_field(resource, entry.get("path"), f"{entry_path}.path", problems)
        raw = entry.get("value")
        if not isinstance(raw, str):
            problems.add(resource, f"{entry_path}.value", f"must be a string holding a JSON value, got {raw!r}")
            continue
        # As in Envoy AI Gateway: a JSON literal (`"scale"`, `42`, `true`, `{...}`) is inserted as is, any
        # other text as a JSON string. Text that looks like JSON but does not parse is an error, not a string.
        try:
            parsed = json.loads(raw)
        except ValueError:
            if raw.strip()[:1] in ('"', "{", "[") or raw.strip() in ("true", "false", "null"):
                problems.add(resource, f"{entry_path}.value", f"is not valid JSON: {raw!r}")
                continue
            parsed = raw
        if field_name is None:
            continue
        if field_name in set_fields:
            problems.add(resource, f"{entry_path}.path", f"{field_name!r} is set twice")
            continue
        set_fields[field_name] = json.dumps(parsed, separators=(",", ":"), ensure_ascii=False).encode()
    removed = _removals(resource, value, path, problems, _body_field, set_fields)
    return BodyMutation(tuple(set_fields.items()), removed)


def _body_field(resource: _Resource, value: Any, path: str, problems: _Problems) -> str | None:
    if not isinstance(value, str) or not value:
        problems.add(resource, path, f"must be a non-empty top-level field name, got {value!r}")
        return None
    if "." in value:
        problems.add(resource, path, f"only top-level fields can be changed, got the path {value!r}")
        return None
    if value in _GATEWAY_OWNED_FIELDS:
        problems.add(resource, path, f"{value!r} cannot be changed: {_GATEWAY_OWNED_FIELDS[value]}")
        return None
    return value


_RETRY_FIELDS = {"numRetries", "numAttemptsPerPriority", "retryOn", "perRetry"}
_RETRY_ON_FIELDS = {"triggers", "httpStatusCodes"}
_PER_RETRY_FIELDS = {"timeout", "backOff"}
_BACKOFF_FIELDS = {"baseInterval", "maxInterval"}
# Envoy Gateway's retry triggers, each an Envoy `retry_on` condition of the same name.
RETRY_TRIGGERS = (
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
)


def _retry_settings(resource: _Resource, value: Any, problems: _Problems) -> RetrySettings | None:
    path = "spec.retry"
    if not _check_fields(resource, value, path, _RETRY_FIELDS, problems):
        return None
    num_retries = None
    if value.get("numRetries") is not None:
        num_retries = _integer(resource, value.get("numRetries"), f"{path}.numRetries", problems, 0, 0)
    per_priority = None
    if value.get("numAttemptsPerPriority") is not None:
        per_priority = _integer(
            resource, value.get("numAttemptsPerPriority"), f"{path}.numAttemptsPerPriority", problems, 1, 1
        )
    triggers = codes = None
    retry_on = value.get("retryOn")
    if retry_on is not None and _check_fields(resource, retry_on, f"{path}.retryOn", _RETRY_ON_FIELDS, problems):
        if retry_on.get("triggers") is not None:
            triggers = []
            for index, trigger in enumerate(
                _list(resource, retry_on.get("triggers"), f"{path}.retryOn.triggers", problems)
            ):
                if trigger not in RETRY_TRIGGERS:
                    problems.add(
                        resource,
                        f"{path}.retryOn.triggers[{index}]",
                        f"unknown retry trigger {trigger!r} (known: {', '.join(RETRY_TRIGGERS)})",
                    )
                elif trigger not in triggers:
                    triggers.append(trigger)
            triggers = tuple(triggers)
        if retry_on.get("httpStatusCodes") is not None:
            codes = []
            for index, code in enumerate(
                _list(resource, retry_on.get("httpStatusCodes"), f"{path}.retryOn.httpStatusCodes", problems)
            ):
                if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
                    problems.add(
                        resource, f"{path}.retryOn.httpStatusCodes[{index}]", f"must be an HTTP status, got {code!r}"
                    )
                else:
                    codes.append(code)
            codes = tuple(codes)
            if triggers is not None and "retriable-status-codes" not in triggers:
                problems.add(
                    resource,
                    f"{path}.retryOn.httpStatusCodes",
                    "has no effect without the retriable-status-codes trigger in retryOn.triggers",
                )
    per_try = base = maximum = None
    per_retry = value.get("perRetry")
    if per_retry is not None and _check_fields(resource, per_retry, f"{path}.perRetry", _PER_RETRY_FIELDS, problems):
        per_try = _duration_ms(resource, per_retry.get("timeout"), f"{path}.perRetry.timeout", problems)
        back_off = per_retry.get("backOff")
        back_path = f"{path}.perRetry.backOff"
        if back_off is not None and _check_fields(resource, back_off, back_path, _BACKOFF_FIELDS, problems):
            base = _duration_ms(resource, back_off.get("baseInterval"), f"{back_path}.baseInterval", problems)
            maximum = _duration_ms(resource, back_off.get("maxInterval"), f"{back_path}.maxInterval", problems)
            if base == 0:
                problems.add(resource, f"{back_path}.baseInterval", "must be longer than 0")
            if base and maximum is not None and maximum < base:
                problems.add(resource, f"{back_path}.maxInterval", "must not be shorter than baseInterval")
    return RetrySettings(resource.ref, num_retries, per_priority, triggers, codes, per_try, base, maximum)


def _apply_retries(items: dict[str, _Resource], routes: list[Route], problems: _Problems) -> list[Route]:
    """Attach each BackendTrafficPolicy ``retry`` to the rules of the routes it targets (the targets
    themselves are checked, and reported, with the policy's rate limits)."""
    by_route: dict[str, RetrySettings] = {}
    names = {route.name for route in routes}
    for resource in items.values():
        if resource.spec.get("retry") is None:
            continue
        settings = _retry_settings(resource, resource.spec["retry"], problems)
        if settings is None:
            continue
        targets: set[str] = set()
        for target in _list(resource, resource.spec.get("targetRefs"), "spec.targetRefs", problems):
            if not isinstance(target, dict):
                continue
            kind = target.get("kind", "AIGatewayRoute")
            if kind == "Gateway":
                targets.update(names)
            elif kind in _ROUTE_TARGET_KINDS and target.get("name") in names:
                targets.add(target["name"])
        for name in sorted(targets):
            if name in by_route:
                problems.add(
                    resource, "spec.retry", f"AIGatewayRoute/{name} already has retries from {by_route[name].policy}"
                )
                continue
            by_route[name] = settings
    return [
        replace(route, rules=tuple(replace(rule, retry=by_route[route.name]) for rule in route.rules))
        if route.name in by_route
        else route
        for route in routes
    ]


def _regex_problem(pattern: str) -> str | None:
    """Envoy matches with RE2: Perl-only syntax that Python accepts would stop Envoy from starting."""
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"invalid regular expression: {exc}"
    try:
        # The parse tree `re` itself compiles from.
        from re import _constants as sre
        from re import _parser as sre_parse

        parsed = sre_parse.parse(pattern)
    except (ImportError, AttributeError, re.error):  # pragma: no cover - other Python versions
        return None
    unsupported = {
        sre.ASSERT: "lookaround assertions",
        sre.ASSERT_NOT: "lookaround assertions",
        sre.GROUPREF: "backreferences",
        sre.GROUPREF_EXISTS: "conditional groups",
        sre.ATOMIC_GROUP: "atomic groups",
        sre.POSSESSIVE_REPEAT: "possessive quantifiers",
    }
    if parsed.state.flags & re.VERBOSE:
        return "the (?x) flag is not supported by Envoy's RE2 regular expressions"
    for op, argument in _regex_nodes(parsed, sre_parse.SubPattern):
        if op in unsupported:
            return f"{unsupported[op]} are not supported by Envoy's RE2 regular expressions"
        if op == sre.AT and argument == sre.AT_END_STRING:
            return r"\Z is not supported by Envoy's RE2 regular expressions; use $"
        if op == sre.SUBPATTERN and argument[1] & re.VERBOSE:
            return "the (?x) flag is not supported by Envoy's RE2 regular expressions"
    return None


def _regex_nodes(value: Any, subpattern: type) -> Iterable[tuple[Any, Any]]:
    if isinstance(value, subpattern):
        for op, argument in value.data:
            yield op, argument
            yield from _regex_nodes(argument, subpattern)
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _regex_nodes(item, subpattern)


def _cel_error(key: str, expression: str) -> str | None:
    """Compile and test-evaluate a CEL cost now, so ``tokenvoy validate`` reports what extproc would refuse."""
    from tokenvoy.extproc.costs import CostConfigError, compile_costs  # imports celpy: only when CEL is used

    try:
        compile_costs((RequestCost(key, CostType.CEL, expression),))
    except CostConfigError as exc:
        return str(exc)
    return None


_UNITS = {"Second", "Minute", "Hour", "Day", "Week", "Month", "Year"}
_TRAFFIC_POLICY_RULE_FIELDS = {"clientSelectors", "limit", "cost", "shadowMode", "shared", "xRateLimitHeaders"}
_CLIENT_SELECTOR_FIELDS = {"headers", "sourceCIDR", "methods", "path", "queryParams"}
_SELECTOR_HEADER_FIELDS = {"name", "type", "value", "invert"}
_LIMIT_FIELDS = {"requests", "unit", "fromMetadata"}
_COST_SPEC_FIELDS = {"request", "response"}
_COST_SOURCE_FIELDS = {"from", "number", "metadata"}
# Route targets: an AIGatewayRoute, or the HTTPRoute Envoy AI Gateway generates with the same name.
_ROUTE_TARGET_KINDS = {"AIGatewayRoute", "HTTPRoute"}


def _budgets(
    items: dict[str, _Resource], route_names: set[str], gateway_names: set[str], problems: _Problems
) -> list[Budget]:
    budgets = []
    for resource in items.values():
        spec = resource.spec
        for key in spec:
            if key not in _TRAFFIC_POLICY_FIELDS:
                problems.add(resource, f"spec.{key}", f"not supported by tokenvoy: {_TRAFFIC_POLICY_WHY}")
        targets: list[str] = []
        whole_gateway = False
        for index, target in enumerate(_list(resource, spec.get("targetRefs"), "spec.targetRefs", problems)):
            target_path = f"spec.targetRefs[{index}]"
            target = _mapping(resource, target, target_path, problems)
            _unsupported(resource, target, target_path, {"sectionName": "a policy applies to whole routes"}, problems)
            name = target.get("name")
            kind = target.get("kind", "AIGatewayRoute")
            if kind == "Gateway":
                # Envoy AI Gateway's own examples attach token budgets to the Gateway: every route.
                if gateway_names and name not in gateway_names:
                    problems.add(resource, f"{target_path}.name", f"Gateway/{name} does not exist")
                whole_gateway = True
            elif kind not in _ROUTE_TARGET_KINDS:
                problems.add(
                    resource, f"{target_path}.kind", f"must be Gateway, AIGatewayRoute or HTTPRoute, got {kind!r}"
                )
            elif name not in route_names:
                problems.add(resource, f"{target_path}.name", f"AIGatewayRoute/{name} does not exist")
            else:
                targets.append(name)
        rate_limit = _mapping(resource, spec.get("rateLimit"), "spec.rateLimit", problems)
        _check_fields(resource, rate_limit, "spec.rateLimit", {"type", "global", "local"}, problems)
        _unsupported(resource, rate_limit, "spec.rateLimit", {"local": "only global (token budget) rules"}, problems)
        if rate_limit.get("type") not in (None, "Global"):
            problems.add(resource, "spec.rateLimit.type", "not supported by tokenvoy: only Global (token budget) rules")
        global_limit = _mapping(resource, rate_limit.get("global"), "spec.rateLimit.global", problems)
        _check_fields(resource, global_limit, "spec.rateLimit.global", {"rules"}, problems)
        rules = _list(resource, global_limit.get("rules"), "spec.rateLimit.global.rules", problems)
        reservation, default_max_tokens = _budget_mode(resource, problems)
        for rule_index, rule in enumerate(rules):
            budget = _budget(resource, rule, rule_index, problems)
            if budget is not None:
                routes = () if whole_gateway else tuple(targets)
                budget = replace(
                    budget,
                    routes=routes,
                    reservation=reservation is True,
                    concurrency=reservation is None,
                    default_max_tokens=default_max_tokens,
                )
                if reservation and not budget.response_cost_key:
                    problems.add(resource, f"metadata.annotations.{BUDGET_MODE_ANNOTATION}", _NO_RESPONSE_COST)
                budgets.append(budget)
    return budgets


_TRAFFIC_POLICY_FIELDS = {"targetRefs", "rateLimit", "retry"}
_TRAFFIC_POLICY_WHY = "here a BackendTrafficPolicy sets token budgets (rateLimit) and retries (retry) of its targetRefs"
_NO_RESPONSE_COST = "reservation needs every rule to have cost.response (the actual that replaces the estimate)"


def _budget_mode(resource: _Resource, problems: _Problems) -> tuple[bool | None, int]:
    """tokenvoy's annotations on a BackendTrafficPolicy (the resource stays valid against the published CRD).

    The mode: False = check, True = reservation, None = concurrency (in-flight requests)."""
    annotations = resource.metadata.get("annotations") or {}
    if not isinstance(annotations, dict):
        return False, 4096
    mode = str(annotations.get(BUDGET_MODE_ANNOTATION, "check")).lower()
    if mode not in ("check", "reservation", "concurrency"):
        problems.add(
            resource,
            f"metadata.annotations.{BUDGET_MODE_ANNOTATION}",
            f"must be check, reservation or concurrency, got {mode!r}",
        )
    raw = annotations.get(DEFAULT_MAX_TOKENS_ANNOTATION, "4096")
    try:
        default_max_tokens = int(str(raw))
    except ValueError:
        default_max_tokens = 0
    if default_max_tokens < 1:
        path = f"metadata.annotations.{DEFAULT_MAX_TOKENS_ANNOTATION}"
        problems.add(resource, path, f"must be a positive integer, got {raw!r}")
    return (None if mode == "concurrency" else mode == "reservation"), max(default_max_tokens, 1)


def _budget(resource: _Resource, rule: Any, rule_index: int, problems: _Problems) -> Budget | None:
    path = f"spec.rateLimit.global.rules[{rule_index}]"
    if not _check_fields(resource, rule, path, _TRAFFIC_POLICY_RULE_FIELDS, problems):
        return None
    _unsupported(resource, rule, path, {"shadowMode": "every budget is enforced"}, problems)
    if rule.get("xRateLimitHeaders") not in (None, "DraftVersion03"):
        problems.add(
            resource,
            f"{path}.xRateLimitHeaders",
            "not supported by tokenvoy: x-ratelimit-* (DraftVersion03) is always sent",
        )
    selectors = []
    for selector_index, selector in enumerate(
        _list(resource, rule.get("clientSelectors"), f"{path}.clientSelectors", problems)
    ):
        selector_path = f"{path}.clientSelectors[{selector_index}]"
        if not _check_fields(resource, selector, selector_path, _CLIENT_SELECTOR_FIELDS, problems):
            continue
        why = "budgets select clients by request headers only"
        _unsupported(
            resource,
            selector,
            selector_path,
            {"sourceCIDR": why, "methods": why, "path": why, "queryParams": why},
            problems,
        )
        for header_index, header in enumerate(
            _list(resource, selector.get("headers"), f"{selector_path}.headers", problems)
        ):
            header_path = f"{selector_path}.headers[{header_index}]"
            if not _check_fields(resource, header, header_path, _SELECTOR_HEADER_FIELDS, problems):
                continue
            _unsupported(resource, header, header_path, {"invert": "inverted header matches"}, problems)
            name = _string(resource, header.get("name"), f"{header_path}.name", problems)
            kind = header.get("type", "Exact")
            if kind not in ("Distinct", "Exact"):
                problems.add(resource, f"{header_path}.type", f"must be Distinct or Exact, got {kind!r}")
                continue
            value = header.get("value")
            if kind == "Exact" and not value:
                problems.add(resource, f"{header_path}.value", "required when type is Exact")
                continue
            if name:
                selectors.append(BudgetSelector(name.lower(), BudgetSelectorType(kind), value))
    limit_path = f"{path}.limit"
    limit = rule.get("limit")
    if limit is None:
        problems.add(resource, limit_path, "required")
        return None
    if not _check_fields(resource, limit, limit_path, _LIMIT_FIELDS, problems):
        return None
    _unsupported(resource, limit, limit_path, {"fromMetadata": "limits come from the configuration"}, problems)
    if limit.get("requests") is None:
        problems.add(resource, f"{limit_path}.requests", "required")
    requests = _integer(resource, limit.get("requests"), f"{limit_path}.requests", problems, 0, 0)
    unit = limit.get("unit")
    if unit not in _UNITS:
        problems.add(resource, f"{limit_path}.unit", f"must be one of {', '.join(sorted(_UNITS))}, got {unit!r}")
    # As in Envoy Gateway: without `cost.request` every request costs 1, without `cost.response` nothing is
    # charged when the response ends.
    cost_path = f"{path}.cost"
    cost = rule.get("cost")
    cost = {} if cost is None else cost
    if not _check_fields(resource, cost, cost_path, _COST_SPEC_FIELDS, problems):
        return None
    request_cost = 1
    request = cost.get("request")
    if request is not None and _check_fields(resource, request, f"{cost_path}.request", _COST_SOURCE_FIELDS, problems):
        if request.get("from", "Number") != "Number":
            problems.add(resource, f"{cost_path}.request.from", "only Number is supported for requests")
        else:
            _unsupported(resource, request, f"{cost_path}.request", {"metadata": "request costs are numbers"}, problems)
        request_cost = _integer(resource, request.get("number"), f"{cost_path}.request.number", problems, 1, 0)
    response_key = None
    response = cost.get("response")
    if response is not None and _check_fields(
        resource, response, f"{cost_path}.response", _COST_SOURCE_FIELDS, problems
    ):
        if response.get("from") != "Metadata":
            problems.add(resource, f"{cost_path}.response.from", "only Metadata is supported for responses")
        else:
            why = {"number": "response costs come from metadata"}
            _unsupported(resource, response, f"{cost_path}.response", why, problems)
            metadata = _mapping(resource, response.get("metadata"), f"{cost_path}.response.metadata", problems)
            if metadata.get("namespace") not in (None, AI_GATEWAY_METADATA_NAMESPACE):
                problems.add(
                    resource,
                    f"{cost_path}.response.metadata.namespace",
                    f"must be {AI_GATEWAY_METADATA_NAMESPACE} (extproc's costs), got {metadata['namespace']!r}",
                )
            response_key = _string(resource, metadata.get("key"), f"{cost_path}.response.metadata.key", problems)
    shared = rule.get("shared", False)
    if not isinstance(shared, bool):
        problems.add(resource, f"{path}.shared", f"must be true or false, got {shared!r}")
        shared = False
    return Budget(
        name=f"{resource.name}/rule/{rule_index}",
        selectors=tuple(selectors),
        limit=requests,
        unit=str(unit),
        request_cost=request_cost,
        response_cost_key=response_key,
        shared=shared,
    )


_GATEWAY_FIELDS = {
    "gatewayClassName",
    "listeners",
    "addresses",
    "tls",
    "allowedListeners",
    "defaultScope",
    "infrastructure",
}
_GATEWAY_UNSUPPORTED = {
    "addresses": "tokenvoy listens on the address of `tokenvoy run --host` (127.0.0.1 by default)",
    "tls": "tokenvoy's listener is plain HTTP",
    "allowedListeners": "ListenerSets are not supported",
    "defaultScope": "every route is attached to the one listener",
}
_LISTENER_FIELDS = {"name", "port", "protocol", "hostname", "tls", "allowedRoutes"}
_LISTENER_UNSUPPORTED = {
    "hostname": "scope routes to hosts with AIGatewayRoute hostnames",
    "tls": "tokenvoy's listener is plain HTTP (terminate TLS in front of it)",
    "allowedRoutes": "every route is attached to the one listener",
}


def _listener(items: dict[str, _Resource], problems: _Problems) -> Listener:
    for resource in items.values():
        if not _check_fields(resource, resource.spec, "spec", _GATEWAY_FIELDS, problems):
            continue
        _unsupported(resource, resource.spec, "spec", _GATEWAY_UNSUPPORTED, problems)
        listeners = _list(resource, resource.spec.get("listeners"), "spec.listeners", problems)
        if len(listeners) > 1:
            problems.add(resource, "spec.listeners", f"tokenvoy serves one listener, got {len(listeners)}")
        for index, entry in enumerate(listeners):
            path = f"spec.listeners[{index}]"
            if isinstance(entry, dict) and _check_fields(resource, entry, path, _LISTENER_FIELDS, problems):
                _unsupported(resource, entry, path, _LISTENER_UNSUPPORTED, problems)
                if entry.get("protocol") not in (None, "HTTP"):
                    problems.add(
                        resource, f"{path}.protocol", f"not supported by tokenvoy: only HTTP, got {entry['protocol']!r}"
                    )
        if listeners:
            first = _mapping(resource, listeners[0], "spec.listeners[0]", problems)
            port = _integer(resource, first.get("port"), "spec.listeners[0].port", problems, 1975, 1)
            return Listener(port=port)
    return Listener()


TOKENVOY_API_VERSION = "tokenvoy.io/v1alpha1"
_TOKENVOY_CONFIG_FIELDS = {"metrics", "pricing", "cost", "tracing", "anthropicBetas", "modelAccess"}
_COST_SETTINGS_FIELDS = {"catalog", "responseHeader"}
# The schemas whose requests carry Anthropic's beta flags (header, InvokeModel body, Converse extra fields).
ANTHROPIC_BETA_SCHEMAS = tuple(name for name, schema in BACKEND_SCHEMAS.items() if schema.anthropic_betas)
_TRACING_FIELDS = {"sessionIdHeader"}
_METRICS_FIELDS = {"requestHeaderLabels", "maxLabelValues", "clientFromUserAgent"}
_PRICE_FIELDS = {
    "model",
    "inputPerMillion",
    "cachedInputPerMillion",
    "cacheCreationInputPerMillion",
    "outputPerMillion",
}
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# Labels tokenvoy's own metrics already carry (tokenvoy.extproc.metrics), plus Prometheus' histogram/summary ones.
RESERVED_METRIC_LABELS = frozenset(
    {
        "gen_ai_operation_name",
        "gen_ai_provider_name",
        "gen_ai_original_model",
        "gen_ai_request_model",
        "gen_ai_response_model",
        "gen_ai_token_type",
        "error_type",
        "le",
        "quantile",
    }
)
CLIENT_LABEL = "client"


def _tokenvoy_config(
    items: dict[str, _Resource], problems: _Problems
) -> tuple[MetricsSettings, tuple[ModelPrice, ...]]:
    """tokenvoy's own settings (metrics labels, prices): one ``TokenvoyConfig`` per gateway, optional."""
    if not items:
        return MetricsSettings(), ()
    first, *others = items.values()
    for extra in others:
        problems.add(extra, "", f"only one TokenvoyConfig is allowed, also defined: {first.ref} ({first.source})")
    resource = first
    api_version = resource.raw.get("apiVersion")
    if api_version != TOKENVOY_API_VERSION:
        problems.add(resource, "apiVersion", f"must be {TOKENVOY_API_VERSION}, got {api_version!r}")
    if not _check_fields(resource, resource.spec, "spec", _TOKENVOY_CONFIG_FIELDS, problems):
        return MetricsSettings(), ()
    return _metrics_settings(resource, problems), _pricing(resource, problems)


def _cost_settings(items: dict[str, _Resource], problems: _Problems) -> CostSettings:
    """``spec.cost`` of the (first) TokenvoyConfig: ``catalog: bundled | none``, ``responseHeader: bool``."""
    resource = next(iter(items.values()), None)
    value = resource.spec.get("cost") if resource is not None and isinstance(resource.spec, dict) else None
    if value is None or resource is None:
        return CostSettings()
    if not _check_fields(resource, value, "spec.cost", _COST_SETTINGS_FIELDS, problems):
        return CostSettings()
    catalog = value.get("catalog", "bundled")
    if catalog not in ("bundled", "none"):
        problems.add(resource, "spec.cost.catalog", f"must be bundled or none, got {catalog!r}")
    header = value.get("responseHeader", False)
    if not isinstance(header, bool):
        problems.add(resource, "spec.cost.responseHeader", f"must be true or false, got {header!r}")
        header = False
    return CostSettings(catalog=catalog != "none", response_header=header)


def _tracing_settings(items: dict[str, _Resource], problems: _Problems) -> TracingSettings:
    """``spec.tracing`` of the (first) TokenvoyConfig; _tokenvoy_config reports the rest of the resource."""
    spec = next(iter(items.values())).spec if items else None
    value = spec.get("tracing") if isinstance(spec, dict) else None
    if value is None:
        return TracingSettings()
    resource = next(iter(items.values()))
    if not _check_fields(resource, value, "spec.tracing", _TRACING_FIELDS, problems):
        return TracingSettings()
    header = _string(resource, value.get("sessionIdHeader"), "spec.tracing.sessionIdHeader", problems, False)
    if header is not None and not re.fullmatch(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+", header):
        problems.add(resource, "spec.tracing.sessionIdHeader", f"must be an HTTP header name, got {header!r}")
        header = None
    return TracingSettings(header.lower() if header else None)


def _anthropic_betas(items: dict[str, _Resource], problems: _Problems) -> dict[str, frozenset[str]]:
    """``spec.anthropicBetas``: schema → the ``anthropic-beta`` flags its backends are sent (``*``: all)."""
    spec = next(iter(items.values())).spec if items else None
    value = spec.get("anthropicBetas") if isinstance(spec, dict) else None
    if value is None:
        return {}
    resource = next(iter(items.values()))
    path = "spec.anthropicBetas"
    if not _check_fields(resource, value, path, set(ANTHROPIC_BETA_SCHEMAS), problems):
        return {}
    allowed: dict[str, frozenset[str]] = {}
    for schema, flags in value.items():
        where = f"{path}.{schema}"
        entries = _list(resource, flags, where, problems)
        if flags is None:
            problems.add(resource, where, "must be a list of beta flags (`*` for all), got nothing")
            continue
        bad = [flag for flag in entries if not isinstance(flag, str) or not flag.strip() or "," in flag]
        if bad:
            problems.add(resource, where, f"each entry must be one beta flag (no commas), got {bad[0]!r}")
            continue
        allowed[schema] = frozenset(flag.strip() for flag in entries)
    return allowed


def _with_anthropic_betas(backends: dict[str, Backend], allowed: dict[str, frozenset[str]]) -> dict[str, Backend]:
    if not allowed:
        return backends
    return {
        name: replace(backend, anthropic_betas=allowed[backend.schema]) if backend.schema in allowed else backend
        for name, backend in backends.items()
    }


def _metrics_settings(resource: _Resource, problems: _Problems) -> MetricsSettings:
    path = "spec.metrics"
    spec = resource.spec.get("metrics")
    if spec is None:
        return MetricsSettings()
    if not _check_fields(resource, spec, path, _METRICS_FIELDS, problems):
        return MetricsSettings()
    client = spec.get("clientFromUserAgent", False)
    if not isinstance(client, bool):
        problems.add(resource, f"{path}.clientFromUserAgent", f"must be true or false, got {client!r}")
        client = False
    taken = set(RESERVED_METRIC_LABELS) | ({CLIENT_LABEL} if client else set())
    labels: list[tuple[str, str]] = []
    headers = _mapping(resource, spec.get("requestHeaderLabels"), f"{path}.requestHeaderLabels", problems)
    for header, label in headers.items():
        label_path = f"{path}.requestHeaderLabels.{header}"
        if not isinstance(header, str) or not header:
            problems.add(resource, label_path, "the header name must be a non-empty string")
            continue
        if not isinstance(label, str) or not _LABEL_NAME.match(label) or label.startswith("__"):
            problems.add(
                resource, label_path, f"{label!r} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, no `__`)"
            )
            continue
        if label in taken:
            problems.add(
                resource, label_path, f"label {label!r} is already used by tokenvoy's metrics or another header"
            )
            continue
        taken.add(label)
        labels.append((header.lower(), label))
    max_values = _integer(resource, spec.get("maxLabelValues"), f"{path}.maxLabelValues", problems, 100, 1)
    return MetricsSettings(tuple(labels), max_values, client)


def _price(resource: _Resource, value: Any, path: str, problems: _Problems, required: bool) -> float | None:
    if value is None:
        if required:
            problems.add(resource, path, "required")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
        problems.add(resource, path, f"must be a number >= 0 (USD per million tokens), got {value!r}")
        return None
    return float(value)


def _pricing(resource: _Resource, problems: _Problems) -> tuple[ModelPrice, ...]:
    prices: dict[str, ModelPrice] = {}
    for index, entry in enumerate(_list(resource, resource.spec.get("pricing"), "spec.pricing", problems)):
        path = f"spec.pricing[{index}]"
        if not _check_fields(resource, entry, path, _PRICE_FIELDS, problems):
            continue
        model = _string(resource, entry.get("model"), f"{path}.model", problems)
        values = [
            _price(resource, entry.get(key), f"{path}.{key}", problems, required)
            for key, required in (
                ("inputPerMillion", True),
                ("outputPerMillion", True),
                ("cachedInputPerMillion", False),
                ("cacheCreationInputPerMillion", False),
            )
        ]
        input_price, output_price, cached_price, creation_price = values
        if model is None or input_price is None or output_price is None:
            continue
        if model in prices:
            problems.add(resource, f"{path}.model", f"{model!r} is priced twice")
            continue
        prices[model] = ModelPrice(model, input_price, output_price, cached_price, creation_price)
    return tuple(prices.values())


_KNOWN_KINDS = (
    "AIGatewayRoute",
    "AIServiceBackend",
    "BackendSecurityPolicy",
    "Backend",
    "BackendTLSPolicy",
    "ConfigMap",
    "Secret",
    "BackendTrafficPolicy",
    "Gateway",
    "SecurityPolicy",
    "TokenvoyConfig",
)


# --- client authentication: Envoy Gateway SecurityPolicy (apiKeyAuth, jwt) and tokenvoy's modelAccess ---

_CLIENT_SECURITY_FIELDS = {
    "apiKeyAuth",
    "jwt",
    "targetRef",
    "targetRefs",
    "authorization",
    "basicAuth",
    "cors",
    "csrf",
    "extAuth",
    "oidc",
    "mergeType",
    "targetSelectors",
}
_CLIENT_SECURITY_UNSUPPORTED = {
    "authorization": "restrict models per client with TokenvoyConfig spec.modelAccess (docs/auth.md)",
    "basicAuth": "clients authenticate with apiKeyAuth or jwt",
    "cors": "not supported by tokenvoy",
    "csrf": "not supported by tokenvoy",
    "extAuth": "clients authenticate with apiKeyAuth or jwt",
    "oidc": "clients authenticate with apiKeyAuth or jwt",
    "mergeType": "one SecurityPolicy applies to the whole gateway",
    "targetSelectors": "target the Gateway (or every AIGatewayRoute) with targetRefs",
}
_API_KEY_AUTH_FIELDS = {"credentialRefs", "extractFrom", "forwardClientIDHeader", "sanitize"}
_EXTRACT_FROM_FIELDS = {"headers", "params", "cookies"}
_JWT_FIELDS = {"providers", "optional", "failOpen"}
_JWT_PROVIDER_FIELDS = {
    "name",
    "issuer",
    "audiences",
    "claimToHeaders",
    "extractFrom",
    "localJWKS",
    "remoteJWKS",
    "recomputeRoute",
}
_REMOTE_JWKS_FIELDS = {"uri", "cacheDuration", "failedRefetchDuration", "backendRef", "backendRefs", "backendSettings"}
_REMOTE_JWKS_UNSUPPORTED = {
    "backendSettings": "Envoy's defaults are used to fetch a JWKS",
}
# Where the client id goes when the policy names no forwardClientIDHeader: the header budgets, metrics and
# the access log already read, so the default config's per-user budget applies to every authenticated client.
DEFAULT_CLIENT_ID_HEADER = "x-user-id"
_KEY_SOURCES_WHY = "API keys are read from headers (keys in URLs and cookies end up in logs and browsers)"


def _client_auth(
    items: dict[str, _Resource],
    secrets: dict[str, _Resource],
    config_maps: dict[str, _Resource],
    jwks_backend: Callable[[str], Endpoint | None],
    route_names: set[str],
    gateway_names: set[str],
    used_config_maps: set[str],
    problems: _Problems,
) -> ClientAuth | None:
    """The one ``SecurityPolicy``: it must cover the whole gateway (``/v1/models`` is served before routing)."""
    if not items:
        return None
    first, *others = items.values()
    for extra in others:
        problems.add(extra, "", f"only one SecurityPolicy is supported, also defined: {first.ref} ({first.source})")
    resource = first
    spec = resource.spec
    if not _check_fields(resource, spec, "spec", _CLIENT_SECURITY_FIELDS, problems):
        return None
    _unsupported(resource, spec, "spec", _CLIENT_SECURITY_UNSUPPORTED, problems)
    _client_auth_targets(resource, route_names, gateway_names, problems)
    api_keys = jwt = None
    if spec.get("apiKeyAuth") is not None:
        api_keys = _api_key_auth(resource, spec["apiKeyAuth"], secrets, problems)
    if spec.get("jwt") is not None:
        jwt = _jwt_auth(resource, spec["jwt"], config_maps, jwks_backend, used_config_maps, problems)
    if spec.get("apiKeyAuth") is None and spec.get("jwt") is None:
        problems.add(resource, "spec", "needs apiKeyAuth or jwt (the client authentication tokenvoy enforces)")
    if api_keys is None and jwt is None:
        return None
    return ClientAuth(resource.ref, api_keys, jwt)


def _client_auth_targets(resource: _Resource, route_names: set[str], gateway_names: set[str], problems: _Problems):
    spec = resource.spec
    if spec.get("targetRef") is not None and spec.get("targetRefs") is not None:
        problems.add(resource, "spec.targetRef", "set targetRef or targetRefs, not both")
    targets = [("spec.targetRef", spec["targetRef"])] if spec.get("targetRef") is not None else []
    targets += [
        (f"spec.targetRefs[{index}]", target)
        for index, target in enumerate(_list(resource, spec.get("targetRefs"), "spec.targetRefs", problems))
    ]
    if not targets:
        problems.add(resource, "spec.targetRefs", "required: the Gateway (client authentication covers every route)")
    targeted: set[str] = set()
    whole_gateway = False
    for path, target in targets:
        target = _mapping(resource, target, path, problems)
        _unsupported(resource, target, path, {"sectionName": "a policy applies to the whole gateway"}, problems)
        kind = target.get("kind")
        name = _string(resource, target.get("name"), f"{path}.name", problems)
        if kind == "Gateway":
            whole_gateway = True
            if name and gateway_names and name not in gateway_names:
                problems.add(resource, f"{path}.name", f"Gateway/{name} does not exist")
        elif kind in _ROUTE_TARGET_KINDS:
            if name and name not in route_names:
                problems.add(resource, f"{path}.name", f"{kind}/{name} does not exist")
            elif name:
                targeted.add(name)
        else:
            problems.add(resource, f"{path}.kind", f"must be Gateway, AIGatewayRoute or HTTPRoute, got {kind!r}")
    missing = sorted(route_names - targeted)
    if targets and not whole_gateway and missing:
        problems.add(
            resource,
            "spec.targetRefs",
            "tokenvoy authenticates clients for the whole gateway (GET /v1/models included): target the Gateway "
            f"or every AIGatewayRoute (not targeted: {', '.join(missing)})",
        )


def _api_key_auth(resource: _Resource, value: Any, secrets: dict[str, _Resource], problems: _Problems):
    path = "spec.apiKeyAuth"
    if not _check_fields(resource, value, path, _API_KEY_AUTH_FIELDS, problems):
        return None
    credentials: dict[str, ApiKeyCredential] = {}
    refs = _list(resource, value.get("credentialRefs"), f"{path}.credentialRefs", problems)
    if not refs:
        problems.add(resource, f"{path}.credentialRefs", "required: at least one Secret of client keys")
    for index, ref in enumerate(refs):
        ref_path = f"{path}.credentialRefs[{index}]"
        if not _check_fields(resource, ref, ref_path, _SECRET_REF_FIELDS, problems):
            continue
        if ref.get("kind", "Secret") != "Secret" or ref.get("group") not in (None, ""):
            problems.add(resource, ref_path, f"must name a Secret (core group), got {ref.get('kind')!r}")
            continue
        name = _string(resource, ref.get("name"), f"{ref_path}.name", problems)
        if name is None:
            continue
        secret = secrets.get(name)
        if secret is None:
            problems.add(resource, f"{ref_path}.name", f"Secret/{name} does not exist")
            continue
        for client in _secret_keys(secret, problems):
            if client in credentials:
                problems.add(secret, f"stringData.{client}", f"client id {client!r} is defined twice")
                continue
            key = _secret_value(secret, client, problems)
            if key is not None:
                credentials[client] = ApiKeyCredential(client, key)
        if not _secret_keys(secret, _Problems()):
            problems.add(secret, "stringData", "holds no client keys (each key is a client id, its value the API key)")
    headers: list[str] = []
    sources = _list(resource, value.get("extractFrom"), f"{path}.extractFrom", problems)
    if not sources:
        problems.add(resource, f"{path}.extractFrom", "required: the headers clients send their key in")
    for index, source in enumerate(sources):
        source_path = f"{path}.extractFrom[{index}]"
        if not _check_fields(resource, source, source_path, _EXTRACT_FROM_FIELDS, problems):
            continue
        _unsupported(resource, source, source_path, {"params": _KEY_SOURCES_WHY, "cookies": _KEY_SOURCES_WHY}, problems)
        for header_index, header in enumerate(
            _list(resource, source.get("headers"), f"{source_path}.headers", problems)
        ):
            if not isinstance(header, str) or not _HEADER_NAME.match(header):
                problems.add(
                    resource, f"{source_path}.headers[{header_index}]", f"must be a header name, got {header!r}"
                )
            elif header.lower() not in headers:
                headers.append(header.lower())
    forward = value.get("forwardClientIDHeader", DEFAULT_CLIENT_ID_HEADER)
    if not isinstance(forward, str) or not _HEADER_NAME.match(forward):
        problems.add(resource, f"{path}.forwardClientIDHeader", f"must be a header name, got {forward!r}")
        forward = DEFAULT_CLIENT_ID_HEADER
    elif forward.lower() in headers:
        problems.add(resource, f"{path}.forwardClientIDHeader", f"{forward!r} is also a header keys are read from")
    if value.get("sanitize") not in (None, True):
        problems.add(
            resource,
            f"{path}.sanitize",
            "must be true (or absent): tokenvoy always removes the client's key; providers get their own credential",
        )
    if not credentials or not headers:
        return None
    return ApiKeyAuth(tuple(credentials.values()), tuple(headers), forward.lower())


def _secret_keys(secret: _Resource, problems: _Problems) -> list[str]:
    """The keys of a Secret (``stringData`` and ``data``), in order: client ids for apiKeyAuth."""
    names: list[str] = []
    for section in ("stringData", "data"):
        for key in _mapping(secret, secret.raw.get(section), section, problems):
            if str(key) not in names:
                names.append(str(key))
    return names


def _jwt_auth(
    resource: _Resource,
    value: Any,
    config_maps: dict[str, _Resource],
    jwks_backend: Callable[[str], Endpoint | None],
    used_config_maps: set[str],
    problems: _Problems,
) -> JwtAuth | None:
    path = "spec.jwt"
    if not _check_fields(resource, value, path, _JWT_FIELDS, problems):
        return None
    why = "a missing or invalid JWT is always refused (use optional: true to let requests without one pass)"
    _unsupported(resource, value, path, {"failOpen": why}, problems)
    optional = value.get("optional", False)
    if not isinstance(optional, bool):
        problems.add(resource, f"{path}.optional", f"must be true or false, got {optional!r}")
        optional = False
    providers: list[JwtProvider] = []
    entries = _list(resource, value.get("providers"), f"{path}.providers", problems)
    if not entries:
        problems.add(resource, f"{path}.providers", "required: at least one provider")
    for index, entry in enumerate(entries):
        provider = _jwt_provider(
            resource, entry, f"{path}.providers[{index}]", config_maps, jwks_backend, used_config_maps, problems
        )
        if provider is None:
            continue
        if any(other.name == provider.name for other in providers):
            problems.add(resource, f"{path}.providers[{index}].name", f"{provider.name!r} is defined twice")
            continue
        providers.append(provider)
    return JwtAuth(tuple(providers), optional) if providers and len(providers) == len(entries) else None


def _jwt_provider(
    resource: _Resource,
    entry: Any,
    path: str,
    config_maps: dict[str, _Resource],
    jwks_backend: Callable[[str], Endpoint | None],
    used_config_maps: set[str],
    problems: _Problems,
) -> JwtProvider | None:
    if not _check_fields(resource, entry, path, _JWT_PROVIDER_FIELDS, problems):
        return None
    name = _string(resource, entry.get("name"), f"{path}.name", problems)
    issuer = _string(resource, entry.get("issuer"), f"{path}.issuer", problems, required=False)
    audiences = []
    for index, audience in enumerate(_list(resource, entry.get("audiences"), f"{path}.audiences", problems)):
        if not isinstance(audience, str) or not audience:
            problems.add(resource, f"{path}.audiences[{index}]", f"must be a non-empty string, got {audience!r}")
        else:
            audiences.append(audience)
    claims: list[tuple[str, str]] = []
    for index, item in enumerate(_list(resource, entry.get("claimToHeaders"), f"{path}.claimToHeaders", problems)):
        item_path = f"{path}.claimToHeaders[{index}]"
        if not _check_fields(resource, item, item_path, {"claim", "header"}, problems):
            continue
        claim = _string(resource, item.get("claim"), f"{item_path}.claim", problems)
        header = _string(resource, item.get("header"), f"{item_path}.header", problems)
        if header is not None and not _HEADER_NAME.match(header):
            problems.add(resource, f"{item_path}.header", f"must be a header name, got {header!r}")
        elif claim and header:
            claims.append((claim, header.lower()))
    headers: list[tuple[str, str]] = []
    extract = entry.get("extractFrom")
    if extract is not None and _check_fields(resource, extract, f"{path}.extractFrom", _EXTRACT_FROM_FIELDS, problems):
        why = "JWTs are read from headers"
        _unsupported(resource, extract, f"{path}.extractFrom", {"params": why, "cookies": why}, problems)
        for index, item in enumerate(_list(resource, extract.get("headers"), f"{path}.extractFrom.headers", problems)):
            item_path = f"{path}.extractFrom.headers[{index}]"
            if not _check_fields(resource, item, item_path, {"name", "valuePrefix"}, problems):
                continue
            header = _string(resource, item.get("name"), f"{item_path}.name", problems)
            prefix = item.get("valuePrefix", "")
            if not isinstance(prefix, str):
                problems.add(resource, f"{item_path}.valuePrefix", f"must be a string, got {prefix!r}")
            elif header is not None:
                headers.append((header.lower(), prefix))
    local = entry.get("localJWKS")
    remote = entry.get("remoteJWKS")
    if (local is None) == (remote is None):
        problems.add(resource, path, "set exactly one of localJWKS and remoteJWKS")
        return None
    provider = JwtProvider(name or "", issuer, tuple(audiences), headers=tuple(headers), claim_to_headers=tuple(claims))
    if local is not None:
        jwks = _local_jwks(resource, local, f"{path}.localJWKS", config_maps, used_config_maps, problems)
        if jwks is None:
            return None
        inline, filename = jwks
        provider = replace(provider, local_jwks=inline, local_jwks_file=filename)
    else:
        remote_path = f"{path}.remoteJWKS"
        if not _check_fields(resource, remote, remote_path, _REMOTE_JWKS_FIELDS, problems):
            return None
        _unsupported(resource, remote, remote_path, _REMOTE_JWKS_UNSUPPORTED, problems)
        uri = _string(resource, remote.get("uri"), f"{remote_path}.uri", problems)
        if uri is not None and not re.match(r"^https://[^/\s:]+(:[0-9]{1,5})?(/\S*)?$", uri):
            problems.add(resource, f"{remote_path}.uri", f"must be an https:// URI, got {uri!r}")
            uri = None
        cache_ms = _duration_ms(resource, remote.get("cacheDuration"), f"{remote_path}.cacheDuration", problems)
        refetch_ms = _duration_ms(
            resource, remote.get("failedRefetchDuration"), f"{remote_path}.failedRefetchDuration", problems
        )
        endpoint = _jwks_endpoint(resource, remote, remote_path, jwks_backend, problems)
        if uri is None or endpoint is False:
            return None
        provider = replace(
            provider,
            remote_jwks_uri=uri,
            remote_jwks_endpoint=endpoint or None,
            failed_refetch_ms=refetch_ms or None,
            cache_duration_ms=cache_ms or provider.cache_duration_ms,
        )
    return provider if name else None


_JWKS_BACKEND_REF_FIELDS = {"group", "kind", "name", "namespace", "port", "weight", "fallback"}


def _jwks_endpoint(
    resource: _Resource,
    remote: dict[str, Any],
    path: str,
    jwks_backend: Callable[[str], Endpoint | None],
    problems: _Problems,
) -> Endpoint | bool | None:
    """``backendRef``/``backendRefs``: the Envoy Gateway ``Backend`` the JWKS is fetched from (its TLS from a
    BackendTLSPolicy or its own ``tls``); None: the URI's host over HTTPS; False: a problem was reported."""
    refs = [("backendRef", remote["backendRef"])] if remote.get("backendRef") is not None else []
    refs += [
        (f"backendRefs[{index}]", ref)
        for index, ref in enumerate(_list(resource, remote.get("backendRefs"), f"{path}.backendRefs", problems))
    ]
    if not refs:
        return None
    if len(refs) > 1:
        problems.add(resource, path, f"tokenvoy fetches a JWKS from one Backend, got {len(refs)} backend refs")
        return False
    where, ref = refs[0]
    ref_path = f"{path}.{where}"
    if not _check_fields(resource, ref, ref_path, _JWKS_BACKEND_REF_FIELDS, problems):
        return False
    why = {"port": "the port is the Backend's endpoint's", "fallback": "a JWKS is fetched from one Backend"}
    _unsupported(resource, ref, ref_path, why, problems)
    _reference_kind(resource, ref, ref_path, "Backend", "gateway.envoyproxy.io", problems)
    name = _string(resource, ref.get("name"), f"{ref_path}.name", problems)
    if name is None:
        return False
    endpoint = jwks_backend(name)
    if endpoint is None:
        problems.add(resource, f"{ref_path}.name", f"Backend/{name} does not exist")
        return False
    if not endpoint.tls:
        problems.add(
            resource, f"{ref_path}.name", f"Backend/{name} must be reached over TLS (port 443, tls, a BackendTLSPolicy)"
        )
        return False
    return endpoint


def _local_jwks(
    resource: _Resource,
    value: Any,
    path: str,
    config_maps: dict[str, _Resource],
    used_config_maps: set[str],
    problems: _Problems,
) -> tuple[str | None, str | None] | None:
    """(inline JWKS, JWKS file): ``inline``, or a ConfigMap's ``jwks`` value (``${file:/path}``: that file)."""
    if not _check_fields(resource, value, path, {"type", "inline", "valueRef"}, problems):
        return None
    kind = value.get("type", "Inline")
    if kind == "Inline":
        text = _string(resource, value.get("inline"), f"{path}.inline", problems)
        if text is None or value.get("valueRef") is not None:
            if value.get("valueRef") is not None:
                problems.add(resource, f"{path}.valueRef", "must not be set when type is Inline")
            return None
        return (text, None) if _is_jwks(resource, text, f"{path}.inline", problems) else None
    if kind != "ValueRef":
        problems.add(resource, f"{path}.type", f"must be Inline or ValueRef, got {kind!r}")
        return None
    ref = _mapping(resource, value.get("valueRef"), f"{path}.valueRef", problems)
    _reference_kind(resource, ref, f"{path}.valueRef", "ConfigMap", "", problems)
    name = _string(resource, ref.get("name"), f"{path}.valueRef.name", problems)
    config_map = config_maps.get(name or "")
    if name is None:
        return None
    if config_map is None:
        problems.add(resource, f"{path}.valueRef.name", f"ConfigMap/{name} does not exist")
        return None
    used_config_maps.add(name)
    data = _mapping(config_map, config_map.raw.get("data"), "data", problems)
    key = "jwks" if "jwks" in data else next(iter(data), None)  # as Envoy Gateway: `jwks`, else the first value
    text = data.get(key) if key is not None else None
    if not isinstance(text, str) or not text:
        problems.add(config_map, "data.jwks", "must hold a JWKS (JSON), or ${file:/path} of one")
        return None
    if match := _FILE_REFERENCE.match(text):
        return None, match.group(1)
    return (text, None) if _is_jwks(config_map, text, f"data.{key}", problems) else None


def _is_jwks(resource: _Resource, text: str, path: str, problems: _Problems) -> bool:
    """True when ``text`` looks like a JWKS: Envoy would refuse the whole listener otherwise."""
    try:
        parsed = json.loads(text)
    except ValueError:
        problems.add(resource, path, 'is not valid JSON (a JWKS: {"keys": [...]})')
        return False
    if not isinstance(parsed, dict) or not isinstance(parsed.get("keys"), list) or not parsed["keys"]:
        problems.add(resource, path, "must be a JWKS: a JSON object with a non-empty `keys` list")
        return False
    return True


_MODEL_ACCESS_FIELDS = {"header", "values", "models"}


def _model_access(
    items: dict[str, _Resource], client_auth: ClientAuth | None, problems: _Problems
) -> tuple[ModelAccessRule, ...]:
    """``TokenvoyConfig`` ``spec.modelAccess``: per-client model allowlists (``name*``: a prefix)."""
    spec = next(iter(items.values())).spec if items else None
    value = spec.get("modelAccess") if isinstance(spec, dict) else None
    if value is None:
        return ()
    resource = next(iter(items.values()))
    default_header = (
        client_auth.api_keys.client_id_header if client_auth and client_auth.api_keys else DEFAULT_CLIENT_ID_HEADER
    )
    rules = []
    for index, entry in enumerate(_list(resource, value, "spec.modelAccess", problems)):
        path = f"spec.modelAccess[{index}]"
        if not _check_fields(resource, entry, path, _MODEL_ACCESS_FIELDS, problems):
            continue
        header = entry.get("header", default_header)
        if not isinstance(header, str) or not _HEADER_NAME.match(header):
            problems.add(resource, f"{path}.header", f"must be a header name, got {header!r}")
            continue
        values = _string_list(resource, entry.get("values"), f"{path}.values", problems)
        models = _string_list(resource, entry.get("models"), f"{path}.models", problems)
        if values is None or models is None:
            continue
        exact = frozenset(model for model in models if not model.endswith("*"))
        prefixes = tuple(model[:-1] for model in models if model.endswith("*"))
        if "" in prefixes:
            problems.add(resource, f"{path}.models", "'*' alone allows every model: leave the client out instead")
            continue
        rules.append(ModelAccessRule(header.lower(), frozenset(values), exact, prefixes))
    return tuple(rules)


def _string_list(resource: _Resource, value: Any, path: str, problems: _Problems) -> list[str] | None:
    items = _list(resource, value, path, problems)
    if not items:
        problems.add(resource, path, "required: a non-empty list of strings")
        return None
    for index, item in enumerate(items):
        if not isinstance(item, str) or not item:
            problems.add(resource, f"{path}[{index}]", f"must be a non-empty string, got {item!r}")
            return None
    return items
