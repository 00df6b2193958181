"""Published CRD schemas (``../shared/crds``) as validators: tests check configs against the real APIs."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import jsonschema
import yaml

CRDS = Path(__file__).resolve().parents[2] / "shared" / "crds"


def _without_kubernetes_extensions(node):
    if isinstance(node, dict):
        return {k: _without_kubernetes_extensions(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if isinstance(node, list):
        return [_without_kubernetes_extensions(v) for v in node]
    return node


CRD_FILES = [
    CRDS / "ai-gateway" / "aigateway.envoyproxy.io_aigatewayroutes.yaml",
    CRDS / "ai-gateway" / "aigateway.envoyproxy.io_aiservicebackends.yaml",
    CRDS / "ai-gateway" / "aigateway.envoyproxy.io_backendsecuritypolicies.yaml",
    CRDS / "envoy-gateway" / "gateway.envoyproxy.io_backends.yaml",
    CRDS / "envoy-gateway" / "gateway.envoyproxy.io_backendtrafficpolicies.yaml",
    CRDS / "envoy-gateway" / "gateway.envoyproxy.io_securitypolicies.yaml",
    CRDS / "envoy-gateway" / "gatewayapi-crds.yaml",  # Gateway
]


@cache
def _crd_schemas() -> dict[tuple[str, str], dict]:
    schemas = {}
    for path in CRD_FILES:
        for doc in yaml.load_all(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                api_version = f"{spec['group']}/{version['name']}"
                schema = _without_kubernetes_extensions(version["schema"]["openAPIV3Schema"])
                schemas[(api_version, spec["names"]["kind"])] = schema
    return schemas


def crd_errors(resource: dict) -> list[str]:
    schema = _crd_schemas()[(resource["apiVersion"], resource["kind"])]
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(resource)]
