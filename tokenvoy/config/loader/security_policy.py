"""Envoy Gateway ``SecurityPolicy``: client authentication for the whole gateway (``apiKeyAuth``, ``jwt``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tokenvoy.config.loader.ai_gateway_route import ROUTE_TARGET_KINDS
from tokenvoy.config.loader.cursor import Problems, Resource, _check_fields, _list, _mapping, _string, _unsupported
from tokenvoy.config.loader.jwt import _EXTRACT_FROM_FIELDS, _jwt_auth
from tokenvoy.config.loader.secrets import SECRET_REF_FIELDS, secret_keys, secret_value
from tokenvoy.config.loader.values import HEADER_NAME
from tokenvoy.config.model import (
    ApiKeyAuth,
    ApiKeyCredential,
    ClientAuth,
    Endpoint,
)

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

# Where the client id goes when the policy names no forwardClientIDHeader: the header budgets, metrics and
# the access log already read, so the default config's per-user budget applies to every authenticated client.
DEFAULT_CLIENT_ID_HEADER = "x-user-id"
_KEY_SOURCES_WHY = "API keys are read from headers (keys in URLs and cookies end up in logs and browsers)"


def _client_auth(
    items: dict[str, Resource],
    secrets: dict[str, Resource],
    config_maps: dict[str, Resource],
    jwks_backend: Callable[[str], Endpoint | None],
    route_names: set[str],
    gateway_names: set[str],
    used_config_maps: set[str],
    problems: Problems,
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


def _client_auth_targets(resource: Resource, route_names: set[str], gateway_names: set[str], problems: Problems):
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
        elif kind in ROUTE_TARGET_KINDS:
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


def _api_key_auth(resource: Resource, value: Any, secrets: dict[str, Resource], problems: Problems):
    path = "spec.apiKeyAuth"
    if not _check_fields(resource, value, path, _API_KEY_AUTH_FIELDS, problems):
        return None
    credentials: dict[str, ApiKeyCredential] = {}
    refs = _list(resource, value.get("credentialRefs"), f"{path}.credentialRefs", problems)
    if not refs:
        problems.add(resource, f"{path}.credentialRefs", "required: at least one Secret of client keys")
    for index, ref in enumerate(refs):
        ref_path = f"{path}.credentialRefs[{index}]"
        if not _check_fields(resource, ref, ref_path, SECRET_REF_FIELDS, problems):
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
        for client in secret_keys(secret, problems):
            if client in credentials:
                problems.add(secret, f"stringData.{client}", f"client id {client!r} is defined twice")
                continue
            key = secret_value(secret, client, problems)
            if key is not None:
                credentials[client] = ApiKeyCredential(client, key)
        if not secret_keys(secret, Problems()):
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
            if not isinstance(header, str) or not HEADER_NAME.match(header):
                problems.add(
                    resource, f"{source_path}.headers[{header_index}]", f"must be a header name, got {header!r}"
                )
            elif header.lower() not in headers:
                headers.append(header.lower())
    forward = value.get("forwardClientIDHeader", DEFAULT_CLIENT_ID_HEADER)
    if not isinstance(forward, str) or not HEADER_NAME.match(forward):
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
