"""Envoy Gateway ``SecurityPolicy``: client authentication for the whole gateway (``apiKeyAuth``, ``jwt``)."""

from __future__ import annotations

from collections.abc import Callable

from tokenvoy.config.loader.ai_gateway_route import ROUTE_TARGET_KINDS
from tokenvoy.config.loader.cursor import Cursor, Problems, Resource
from tokenvoy.config.loader.inert import SCOPE_ONLY
from tokenvoy.config.loader.jwt import EXTRACT_FROM_FIELDS, jwt_auth
from tokenvoy.config.loader.secrets import SECRET_REF_FIELDS, secret_keys, secret_value
from tokenvoy.config.loader.values import HEADER_NAME
from tokenvoy.config.model import (
    ApiKeyAuth,
    ApiKeyCredential,
    ClientAuth,
    Endpoint,
)

# Fields accepted without an effect on a standalone gateway, and why (INERT_FIELDS in __init__).
INERT = {
    "spec.apiKeyAuth.credentialRefs[].namespace": SCOPE_ONLY,
    "spec.jwt.providers[].remoteJWKS.backendRef.namespace": SCOPE_ONLY,
    "spec.jwt.providers[].remoteJWKS.backendRefs[].namespace": SCOPE_ONLY,
    "spec.jwt.providers[].remoteJWKS.backendRefs[].weight": "a JWKS is fetched from one Backend",
    "spec.apiKeyAuth.sanitize": "true, the only value accepted, is what tokenvoy always does (the client's "
    "key never reaches a provider)",
    "spec.targetRefs[].group": "the target's kind is checked; its group follows from it",
    "spec.targetRef.group": "the target's kind is checked; its group follows from it",
    "spec.jwt.providers[].recomputeRoute": "extproc picks the route after authentication and clears the "
    "route cache itself",
}

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


def read_client_auth(
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
    spec = Cursor.spec(first, problems)
    if not spec.fields(_CLIENT_SECURITY_FIELDS):
        return None
    spec.unsupported(_CLIENT_SECURITY_UNSUPPORTED)
    _check_targets(spec, route_names, gateway_names)
    api_keys = jwt = None
    if spec["apiKeyAuth"].present:
        api_keys = _api_key_auth(spec["apiKeyAuth"], secrets)
    if spec["jwt"].present:
        jwt = jwt_auth(spec["jwt"], config_maps, jwks_backend, used_config_maps)
    if not spec["apiKeyAuth"].present and not spec["jwt"].present:
        spec.report("needs apiKeyAuth or jwt (the client authentication tokenvoy enforces)")
    if api_keys is None and jwt is None:
        return None
    return ClientAuth(first.ref, api_keys, jwt)


def _check_targets(spec: Cursor, route_names: set[str], gateway_names: set[str]) -> None:
    if spec["targetRef"].present and spec["targetRefs"].present:
        spec["targetRef"].report("set targetRef or targetRefs, not both")
    targets = [spec["targetRef"]] if spec["targetRef"].present else []
    targets += spec["targetRefs"].items()
    if not targets:
        spec["targetRefs"].report("required: the Gateway (client authentication covers every route)")
    targeted: set[str] = set()
    whole_gateway = False
    for target in targets:
        target.mapping()
        target.unsupported({"sectionName": "a policy applies to the whole gateway"})
        kind = target.get("kind")
        name = target["name"].string()
        if kind == "Gateway":
            whole_gateway = True
            if name and gateway_names and name not in gateway_names:
                target["name"].report(f"Gateway/{name} does not exist")
        elif kind in ROUTE_TARGET_KINDS:
            if name and name not in route_names:
                target["name"].report(f"{kind}/{name} does not exist")
            elif name:
                targeted.add(name)
        else:
            target["kind"].report(f"must be Gateway, AIGatewayRoute or HTTPRoute, got {kind!r}")
    missing = sorted(route_names - targeted)
    if targets and not whole_gateway and missing:
        spec["targetRefs"].report(
            "tokenvoy authenticates clients for the whole gateway (GET /v1/models included): target the Gateway "
            f"or every AIGatewayRoute (not targeted: {', '.join(missing)})"
        )


def _api_key_auth(spec: Cursor, secrets: dict[str, Resource]) -> ApiKeyAuth | None:
    if not spec.fields(_API_KEY_AUTH_FIELDS):
        return None
    credentials: dict[str, ApiKeyCredential] = {}
    refs = spec["credentialRefs"].items()
    if not refs:
        spec["credentialRefs"].report("required: at least one Secret of client keys")
    for ref in refs:
        if not ref.fields(SECRET_REF_FIELDS):
            continue
        if ref.get("kind", "Secret") != "Secret" or ref.get("group") not in (None, ""):
            ref.report(f"must name a Secret (core group), got {ref.get('kind')!r}")
            continue
        name = ref["name"].string()
        if name is None:
            continue
        secret = secrets.get(name)
        if secret is None:
            ref["name"].report(f"Secret/{name} does not exist")
            continue
        string_data = Cursor.root(secret, spec.problems)["stringData"]
        for client in secret_keys(secret, spec.problems):
            if client in credentials:
                string_data[client].report(f"client id {client!r} is defined twice")
                continue
            key = secret_value(secret, client, spec.problems)
            if key is not None:
                credentials[client] = ApiKeyCredential(client, key)
        if not secret_keys(secret, Problems()):
            string_data.report("holds no client keys (each key is a client id, its value the API key)")
    headers: list[str] = []
    sources = spec["extractFrom"].items()
    if not sources:
        spec["extractFrom"].report("required: the headers clients send their key in")
    for source in sources:
        if not source.fields(EXTRACT_FROM_FIELDS):
            continue
        source.unsupported({"params": _KEY_SOURCES_WHY, "cookies": _KEY_SOURCES_WHY})
        for item in source["headers"].items():
            header = item.value
            if not isinstance(header, str) or not HEADER_NAME.fullmatch(header):
                item.report(f"must be a header name, got {header!r}")
            elif header.lower() not in headers:
                headers.append(header.lower())
    forward = spec.get("forwardClientIDHeader", DEFAULT_CLIENT_ID_HEADER)
    if not isinstance(forward, str) or not HEADER_NAME.fullmatch(forward):
        spec["forwardClientIDHeader"].report(f"must be a header name, got {forward!r}")
        forward = DEFAULT_CLIENT_ID_HEADER
    elif forward.lower() in headers:
        spec["forwardClientIDHeader"].report(f"{forward!r} is also a header keys are read from")
    if spec.get("sanitize") not in (None, True):
        spec["sanitize"].report(
            "must be true (or absent): tokenvoy always removes the client's key; providers get their own credential"
        )
    if not credentials or not headers:
        return None
    return ApiKeyAuth(tuple(credentials.values()), tuple(headers), forward.lower())
