"""Load Envoy AI Gateway / Envoy Gateway resources from YAML into a ``GatewayConfig``.

Every problem found is collected (file, ``kind/name``, field path) so ``tokenvoy validate`` can list them
all at once instead of failing on the first.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tokenvoy.config.model import (
    Backend,
    BackendRef,
    Budget,
    BudgetSelector,
    BudgetSelectorType,
    CostType,
    Endpoint,
    GatewayConfig,
    HeaderMatch,
    HeaderMatchType,
    Listener,
    RequestCost,
    Route,
    Rule,
    Secret,
    SecurityPolicy,
)

try:  # the C loader is ~10x faster on large multi-document files
    _YamlLoader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - libyaml missing
    _YamlLoader = yaml.SafeLoader

FAKE_PROVIDER_ANNOTATION = "tokenvoy.io/fake-provider"
SUPPORTED_SCHEMAS = {"OpenAI"}
IGNORED_KINDS = {
    "GatewayClass": "a standalone gateway has no controller to select",
    "EnvoyProxy": "tokenvoy renders its own Envoy bootstrap",
    "Namespace": "namespaces only scope names here",
    "ConfigMap": "not referenced by a standalone gateway",
}
_ENV_REFERENCE = re.compile(r"^\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)\}$")
_FILE_REFERENCE = re.compile(r"^\$\{file:(.+)\}$")


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
    )


def load_text(text: str, source: str = "<config>") -> GatewayConfig:
    problems = _Problems()
    documents = [(source, doc) for doc in _parse_yaml(source, text, problems)]
    return load_documents(documents, problems)


def _parse_yaml(source: str, text: str, problems: _Problems) -> list[Any]:
    try:
        return [doc for doc in yaml.load_all(text, Loader=_YamlLoader) if doc is not None]
    except yaml.YAMLError as exc:
        problems.items.append(f"{source}: invalid YAML: {exc}")
        return []


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
        resource = _Resource(kind, name, doc.get("spec") or {}, metadata, source, doc)
        if kind in IGNORED_KINDS:
            ignored.append(f"{resource.ref} ({source}): ignored, {IGNORED_KINDS[kind]}")
            continue
        if kind not in _KNOWN_KINDS:
            problems.add(resource, "kind", f"unsupported kind {kind!r} (supported: {', '.join(_KNOWN_KINDS)})")
            continue
        by_name = resources.setdefault(kind, {})
        if name in by_name:
            problems.add(resource, "metadata.name", f"duplicate, also defined in {by_name[name].source}")
            continue
        by_name[name] = resource

    secrets = {name: r for name, r in resources.get("Secret", {}).items()}
    envoy_backends = resources.get("Backend", {})
    policies = _security_policies(resources.get("BackendSecurityPolicy", {}), secrets, problems)
    backends = _backends(resources.get("AIServiceBackend", {}), envoy_backends, policies, problems)
    routes = _routes(resources.get("AIGatewayRoute", {}), backends, problems)
    budgets = _budgets(resources.get("BackendTrafficPolicy", {}), {r.name for r in routes}, problems)
    listener = _listener(resources.get("Gateway", {}), problems)
    if not routes and not problems.items:
        problems.items.append("no AIGatewayRoute found: the gateway would answer 404 to every request")
    if problems.items:
        raise ConfigError(problems.items)
    return GatewayConfig(
        listener=listener, routes=tuple(routes), backends=backends, budgets=tuple(budgets), ignored=tuple(ignored)
    )


def _check_fields(resource: _Resource, value: Any, path: str, allowed: set[str], problems: _Problems) -> bool:
    if not isinstance(value, dict):
        problems.add(resource, path, f"must be a mapping, got {type(value).__name__}")
        return False
    for key in value:
        if key not in allowed:
            problems.add(resource, f"{path}.{key}", f"unknown field (known: {', '.join(sorted(allowed))})")
    return True


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
    string_data = resource.raw.get("stringData") or {}
    data = resource.raw.get("data") or {}
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
    problems.add(resource, "stringData", f"has no key {key!r}")
    return None


_API_KEY_FIELDS = {"APIKey": "apiKey", "AzureAPIKey": "azureAPIKey", "AnthropicAPIKey": "anthropicAPIKey"}


def _security_policies(
    items: dict[str, _Resource], secrets: dict[str, _Resource], problems: _Problems
) -> dict[str, SecurityPolicy]:
    """Map each targeted AIServiceBackend name to its policy."""
    by_backend: dict[str, SecurityPolicy] = {}
    for resource in items.values():
        spec = resource.spec
        policy_type = _string(resource, spec.get("type"), "spec.type", problems)
        if policy_type is None:
            continue
        field_name = _API_KEY_FIELDS.get(policy_type)
        if field_name is None:
            problems.add(
                resource, "spec.type", f"{policy_type!r} is not supported yet (supported: {', '.join(_API_KEY_FIELDS)})"
            )
            continue
        secret_ref = ((spec.get(field_name) or {}).get("secretRef") or {}).get("name")
        secret_name = _string(resource, secret_ref, f"spec.{field_name}.secretRef.name", problems)
        api_key = None
        if secret_name is not None:
            secret = secrets.get(secret_name)
            if secret is None:
                problems.add(resource, f"spec.{field_name}.secretRef.name", f"Secret/{secret_name} does not exist")
            else:
                api_key = _secret_value(secret, "apiKey", problems)
        policy = SecurityPolicy(resource.name, policy_type, api_key)
        for index, target in enumerate(spec.get("targetRefs") or []):
            target_name = _string(resource, target.get("name"), f"spec.targetRefs[{index}].name", problems)
            if target_name:
                by_backend[target_name] = policy
    return by_backend


def _envoy_endpoint(resource: _Resource, problems: _Problems) -> Endpoint | None:
    endpoints = resource.spec.get("endpoints") or []
    if not endpoints:
        problems.add(resource, "spec.endpoints", "required: at least one endpoint")
        return None
    first = endpoints[0]
    address = first.get("fqdn") or first.get("ip")
    if not isinstance(address, dict):
        problems.add(resource, "spec.endpoints[0]", "needs `fqdn` {hostname, port} or `ip` {address, port}")
        return None
    host = address.get("hostname") or address.get("address")
    host = _string(resource, host, "spec.endpoints[0].fqdn.hostname", problems)
    port = _integer(resource, address.get("port"), "spec.endpoints[0].port", problems, default=443, minimum=1)
    if host is None:
        return None
    tls = "tls" in resource.spec or port == 443
    return Endpoint(host=host, port=port, tls=tls)


def _backends(
    items: dict[str, _Resource],
    envoy_backends: dict[str, _Resource],
    policies: dict[str, SecurityPolicy],
    problems: _Problems,
) -> dict[str, Backend]:
    backends: dict[str, Backend] = {}
    for resource in items.values():
        spec = resource.spec
        if not _check_fields(
            resource, spec, "spec", {"schema", "backendRef", "headerMutation", "bodyMutation"}, problems
        ):
            continue
        schema = spec.get("schema") or {}
        schema_name = _string(resource, schema.get("name"), "spec.schema.name", problems)
        if schema_name is not None and schema_name not in SUPPORTED_SCHEMAS:
            problems.add(resource, "spec.schema.name", f"{schema_name!r} is not supported yet")
        ref_name = _string(resource, (spec.get("backendRef") or {}).get("name"), "spec.backendRef.name", problems)
        endpoint = None
        fake = False
        if ref_name is not None:
            envoy_backend = envoy_backends.get(ref_name)
            if envoy_backend is None:
                problems.add(resource, "spec.backendRef.name", f"Backend/{ref_name} does not exist")
            else:
                endpoint = _envoy_endpoint(envoy_backend, problems)
                annotations = envoy_backend.metadata.get("annotations") or {}
                fake = str(annotations.get(FAKE_PROVIDER_ANNOTATION, "")).lower() == "true"
        if schema_name is None or endpoint is None:
            continue
        prefix = schema.get("prefix") or "/v1"
        backends[resource.name] = Backend(
            name=resource.name,
            schema=schema_name,
            schema_version=schema.get("version"),
            path_prefix="/" + str(prefix).strip("/") if str(prefix).strip("/") else "",
            endpoint=endpoint,
            security=policies.get(resource.name),
            fake_provider=fake,
        )
    return backends


_COST_TYPES = {item.value: item for item in CostType}


def _routes(items: dict[str, _Resource], backends: dict[str, Backend], problems: _Problems) -> list[Route]:
    routes = []
    for resource in items.values():
        spec = resource.spec
        allowed = {"parentRefs", "rules", "llmRequestCosts", "hostnames", "filterConfig"}
        if not _check_fields(resource, spec, "spec", allowed, problems):
            continue
        rules = []
        for rule_index, rule_spec in enumerate(spec.get("rules") or []):
            path = f"spec.rules[{rule_index}]"
            rule_allowed = {"name", "matches", "backendRefs", "timeouts", "modelsOwnedBy", "modelsCreatedAt"}
            if not _check_fields(resource, rule_spec, path, rule_allowed, problems):
                continue
            matches = []
            for match_index, match in enumerate(rule_spec.get("matches") or []):
                headers = []
                for header_index, header in enumerate(match.get("headers") or []):
                    header_path = f"{path}.matches[{match_index}].headers[{header_index}]"
                    match_type = header.get("type", "Exact")
                    if match_type not in ("Exact", "RegularExpression"):
                        problems.add(resource, f"{header_path}.type", f"unknown match type {match_type!r}")
                        continue
                    name = _string(resource, header.get("name"), f"{header_path}.name", problems)
                    value = _string(resource, header.get("value"), f"{header_path}.value", problems)
                    if match_type == "RegularExpression" and value is not None:
                        try:
                            re.compile(value)
                        except re.error as exc:
                            problems.add(resource, f"{header_path}.value", f"invalid regular expression: {exc}")
                    if name and value is not None:
                        headers.append(HeaderMatch(name.lower(), value, HeaderMatchType(match_type)))
                matches.append(tuple(headers))
            refs = []
            for ref_index, ref in enumerate(rule_spec.get("backendRefs") or []):
                ref_path = f"{path}.backendRefs[{ref_index}]"
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
                        model_name_override=ref.get("modelNameOverride") or None,
                    )
                )
            if not refs:
                problems.add(resource, f"{path}.backendRefs", "required: at least one backend")
                continue
            rule_name = f"{resource.name}/rule/{rule_index}"
            rules.append(Rule(name=rule_name, matches=tuple(matches), backend_refs=tuple(refs)))
        costs = []
        for cost_index, cost in enumerate(spec.get("llmRequestCosts") or []):
            cost_path = f"spec.llmRequestCosts[{cost_index}]"
            key = _string(resource, cost.get("metadataKey"), f"{cost_path}.metadataKey", problems)
            cost_type = _COST_TYPES.get(cost.get("type"))
            if cost_type is None:
                problems.add(
                    resource, f"{cost_path}.type", f"must be one of {', '.join(_COST_TYPES)}, got {cost.get('type')!r}"
                )
                continue
            cel = cost.get("cel")
            if cost_type is CostType.CEL and not cel:
                problems.add(resource, f"{cost_path}.cel", "required when type is CEL")
                continue
            if key:
                costs.append(RequestCost(key, cost_type, cel))
        routes.append(Route(name=resource.name, rules=tuple(rules), costs=tuple(costs)))
    return routes


_UNITS = {"Second", "Minute", "Hour", "Day", "Week", "Month", "Year"}


def _budgets(items: dict[str, _Resource], route_names: set[str], problems: _Problems) -> list[Budget]:
    budgets = []
    for resource in items.values():
        spec = resource.spec
        targets = []
        for index, target in enumerate(spec.get("targetRefs") or []):
            name = target.get("name")
            if name not in route_names:
                problems.add(resource, f"spec.targetRefs[{index}].name", f"AIGatewayRoute/{name} does not exist")
            else:
                targets.append(name)
        rate_limit = spec.get("rateLimit") or {}
        rules = ((rate_limit.get("global") or {}).get("rules")) or []
        for rule_index, rule in enumerate(rules):
            path = f"spec.rateLimit.global.rules[{rule_index}]"
            selectors = []
            for selector_index, selector in enumerate(rule.get("clientSelectors") or []):
                for header_index, header in enumerate(selector.get("headers") or []):
                    header_path = f"{path}.clientSelectors[{selector_index}].headers[{header_index}]"
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
            limit = rule.get("limit") or {}
            requests = _integer(resource, limit.get("requests"), f"{path}.limit.requests", problems, 0, 1)
            unit = limit.get("unit")
            if unit not in _UNITS:
                problems.add(resource, f"{path}.limit.unit", f"must be one of {', '.join(sorted(_UNITS))}")
                continue
            cost = rule.get("cost") or {}
            request_cost = (cost.get("request") or {}).get("number", 1 if not cost else 0)
            response = cost.get("response") or {}
            response_key = None
            if response:
                metadata = response.get("metadata") or {}
                if response.get("from") != "Metadata":
                    problems.add(resource, f"{path}.cost.response.from", "only Metadata is supported for responses")
                response_key = _string(resource, metadata.get("key"), f"{path}.cost.response.metadata.key", problems)
            budgets.append(
                Budget(
                    name=f"{resource.name}/rule/{rule_index}",
                    selectors=tuple(selectors),
                    limit=requests,
                    unit=unit,
                    request_cost=int(request_cost),
                    response_cost_key=response_key,
                    routes=tuple(targets),
                )
            )
    return budgets


def _listener(items: dict[str, _Resource], problems: _Problems) -> Listener:
    for resource in items.values():
        listeners = resource.spec.get("listeners") or []
        if listeners:
            port = _integer(resource, listeners[0].get("port"), "spec.listeners[0].port", problems, 1975, 1)
            return Listener(port=port)
    return Listener()


_KNOWN_KINDS = (
    "AIGatewayRoute",
    "AIServiceBackend",
    "BackendSecurityPolicy",
    "Backend",
    "Secret",
    "BackendTrafficPolicy",
    "Gateway",
)
