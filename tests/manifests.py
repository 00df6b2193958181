"""Validators for rendered Kubernetes manifests: every custom resource against the published CRD schemas
(``../shared/crds``, their ``openAPIV3Schema`` with ``jsonschema``; the ``x-kubernetes-validations`` CEL
rules are evaluated with cel-python where it knows their functions), core kinds against the Kubernetes
OpenAPI schemas that ``kubernetes-validate`` ships (strict: unknown fields are errors)."""

from __future__ import annotations

from functools import cache
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import yaml

from tests.crds import CRDS

KUBERNETES_VERSION = "1.30.0"  # the Kubernetes API version the core kinds are checked against
CORE_KINDS = {("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "Service"), ("apps/v1", "Deployment")}
CRD_FILES = [
    *sorted((CRDS / "envoy-gateway").glob("*.yaml")),
    *sorted((CRDS / "ai-gateway").glob("*.yaml")),
]


@cache
def _crds() -> dict[tuple[str, str], dict[str, Any]]:
    schemas = {}
    for path in CRD_FILES:
        for doc in yaml.load_all(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                if version.get("served", True):
                    schemas[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = version["schema"][
                        "openAPIV3Schema"
                    ]
    return schemas


def _without_kubernetes_extensions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_kubernetes_extensions(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if isinstance(node, list):
        return [_without_kubernetes_extensions(v) for v in node]
    return node


def _cel_rules(schema: dict[str, Any], value: Any, path: str) -> list[tuple[str, str, Any, str]]:
    """(path, rule, self, message) for every x-kubernetes-validations rule that applies to ``value``."""
    found = []
    for rule in schema.get("x-kubernetes-validations") or []:
        found.append((path, rule["rule"], value, rule.get("message", rule["rule"])))
    if isinstance(value, dict):
        for key, child in value.items():
            child_schema = (schema.get("properties") or {}).get(key)
            if child_schema is None and isinstance(schema.get("additionalProperties"), dict):
                child_schema = schema["additionalProperties"]
            if child_schema is not None:
                found += _cel_rules(child_schema, child, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, child in enumerate(value):
            found += _cel_rules(schema["items"], child, f"{path}[{index}]")
    return found


_CEL_UNKNOWN = (celpy.CELParseError, celpy.CELEvalError)


@cache
def _cel_program(rule: str) -> Any:
    environment = celpy.Environment()
    return environment.program(environment.compile(rule))


def cel_results(resource: dict[str, Any]) -> tuple[list[str], int, int]:
    """(violations, rules evaluated, rules cel-python cannot evaluate) of the CRD's CEL rules."""
    schema = _crds()[(resource["apiVersion"], resource["kind"])]
    violations, evaluated, unknown = [], 0, 0
    for path, rule, value, message in _cel_rules(schema, resource, ""):
        try:
            result = _cel_program(rule).evaluate({"self": celpy.json_to_cel(value)})
        except _CEL_UNKNOWN:
            unknown += 1
            continue
        if isinstance(result, Exception):
            unknown += 1
            continue
        evaluated += 1
        if not bool(result):
            violations.append(f"{path or '.'}: {message}")
    return violations, evaluated, unknown


def is_custom(resource: dict[str, Any]) -> bool:
    return (resource["apiVersion"], resource["kind"]) in _crds()


def schema_errors(resource: dict[str, Any]) -> list[str]:
    """Every schema error of one rendered resource (empty: valid)."""
    key = (resource["apiVersion"], resource["kind"])
    if key in CORE_KINDS:
        try:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            return [f"{'.'.join(map(str, exc.path))}: {exc.message}"]
        return []
    if key not in _crds():
        return [f"no schema for {key}"]
    validator = jsonschema.Draft7Validator(_without_kubernetes_extensions(_crds()[key]))
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(resource)]
    return errors + cel_results(resource)[0]
