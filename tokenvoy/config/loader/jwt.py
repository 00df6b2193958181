"""The ``jwt`` of a SecurityPolicy: providers, where tokens are read from, claims copied to headers, and
their JWKS (inline, a ConfigMap, or fetched from a URI or a Backend)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import replace

from tokenvoy.config.loader.cursor import Cursor, Resource
from tokenvoy.config.loader.secrets import FILE_REFERENCE
from tokenvoy.config.loader.values import HEADER_NAME, duration_ms
from tokenvoy.config.model import (
    Endpoint,
    JwtAuth,
    JwtProvider,
)

EXTRACT_FROM_FIELDS = {"headers", "params", "cookies"}
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


def jwt_auth(
    spec: Cursor,
    config_maps: dict[str, Resource],
    jwks_backend: Callable[[str], Endpoint | None],
    used_config_maps: set[str],
) -> JwtAuth | None:
    if not spec.fields(_JWT_FIELDS):
        return None
    why = "a missing or invalid JWT is always refused (use optional: true to let requests without one pass)"
    spec.unsupported({"failOpen": why})
    optional = spec["optional"].boolean()
    providers: list[JwtProvider] = []
    entries = spec["providers"].items()
    if not entries:
        spec["providers"].report("required: at least one provider")
    for entry in entries:
        provider = _jwt_provider(entry, config_maps, jwks_backend, used_config_maps)
        if provider is None:
            continue
        if any(other.name == provider.name for other in providers):
            entry["name"].report(f"{provider.name!r} is defined twice")
            continue
        providers.append(provider)
    return JwtAuth(tuple(providers), optional) if providers and len(providers) == len(entries) else None


def _jwt_provider(
    entry: Cursor,
    config_maps: dict[str, Resource],
    jwks_backend: Callable[[str], Endpoint | None],
    used_config_maps: set[str],
) -> JwtProvider | None:
    if not entry.fields(_JWT_PROVIDER_FIELDS):
        return None
    name = entry["name"].string()
    issuer = entry["issuer"].string(required=False)
    audiences = []
    for item in entry["audiences"].items():
        if not isinstance(item.value, str) or not item.value:
            item.report(f"must be a non-empty string, got {item.value!r}")
        else:
            audiences.append(item.value)
    claims: list[tuple[str, str]] = []
    for item in entry["claimToHeaders"].items():
        if not item.fields({"claim", "header"}):
            continue
        claim = item["claim"].string()
        header = item["header"].string()
        if header is not None and not HEADER_NAME.fullmatch(header):
            item["header"].report(f"must be a header name, got {header!r}")
        elif claim and header:
            claims.append((claim, header.lower()))
    headers: list[tuple[str, str]] = []
    extract = entry["extractFrom"]
    if extract.present and extract.fields(EXTRACT_FROM_FIELDS):
        why = "JWTs are read from headers"
        extract.unsupported({"params": why, "cookies": why})
        for item in extract["headers"].items():
            if not item.fields({"name", "valuePrefix"}):
                continue
            header = item["name"].string()
            prefix = item.get("valuePrefix", "")
            if not isinstance(prefix, str):
                item["valuePrefix"].report(f"must be a string, got {prefix!r}")
            elif header is not None:
                headers.append((header.lower(), prefix))
    local, remote = entry["localJWKS"], entry["remoteJWKS"]
    if local.present == remote.present:
        entry.report("set exactly one of localJWKS and remoteJWKS")
        return None
    provider = JwtProvider(name or "", issuer, tuple(audiences), headers=tuple(headers), claim_to_headers=tuple(claims))
    if local.present:
        jwks = _local_jwks(local, config_maps, used_config_maps)
        if jwks is None:
            return None
        inline, filename = jwks
        provider = replace(provider, local_jwks=inline, local_jwks_file=filename)
    else:
        if not remote.fields(_REMOTE_JWKS_FIELDS):
            return None
        remote.unsupported(_REMOTE_JWKS_UNSUPPORTED)
        uri = remote["uri"].string()
        if uri is not None and not re.match(r"^https://[^/\s:]+(:[0-9]{1,5})?(/\S*)?$", uri):
            remote["uri"].report(f"must be an https:// URI, got {uri!r}")
            uri = None
        cache_ms = duration_ms(remote["cacheDuration"])
        refetch_ms = duration_ms(remote["failedRefetchDuration"])
        endpoint = _jwks_endpoint(remote, jwks_backend)
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


def _jwks_endpoint(remote: Cursor, jwks_backend: Callable[[str], Endpoint | None]) -> Endpoint | bool | None:
    """``backendRef``/``backendRefs``: the Envoy Gateway ``Backend`` the JWKS is fetched from (its TLS from a
    BackendTLSPolicy or its own ``tls``); None: the URI's host over HTTPS; False: a problem was reported."""
    refs = [remote["backendRef"]] if remote["backendRef"].present else []
    refs += remote["backendRefs"].items()
    if not refs:
        return None
    if len(refs) > 1:
        remote.report(f"tokenvoy fetches a JWKS from one Backend, got {len(refs)} backend refs")
        return False
    ref = refs[0]
    if not ref.fields(_JWKS_BACKEND_REF_FIELDS):
        return False
    ref.unsupported({"port": "the port is the Backend's endpoint's", "fallback": "a JWKS is fetched from one Backend"})
    ref.reference_kind("Backend", "gateway.envoyproxy.io")
    name = ref["name"].string()
    if name is None:
        return False
    endpoint = jwks_backend(name)
    if endpoint is None:
        ref["name"].report(f"Backend/{name} does not exist")
        return False
    if not endpoint.tls:
        ref["name"].report(f"Backend/{name} must be reached over TLS (port 443, tls, a BackendTLSPolicy)")
        return False
    return endpoint


def _local_jwks(
    value: Cursor, config_maps: dict[str, Resource], used_config_maps: set[str]
) -> tuple[str | None, str | None] | None:
    """(inline JWKS, JWKS file): ``inline``, or a ConfigMap's ``jwks`` value (``${file:/path}``: that file)."""
    if not value.fields({"type", "inline", "valueRef"}):
        return None
    kind = value.get("type", "Inline")
    if kind == "Inline":
        text = value["inline"].string()
        if text is None or value["valueRef"].present:
            if value["valueRef"].present:
                value["valueRef"].report("must not be set when type is Inline")
            return None
        return (text, None) if _is_jwks(value["inline"], text) else None
    if kind != "ValueRef":
        value["type"].report(f"must be Inline or ValueRef, got {kind!r}")
        return None
    ref = value["valueRef"]
    ref.mapping()
    ref.reference_kind("ConfigMap", "")
    name = ref["name"].string()
    config_map = config_maps.get(name or "")
    if name is None:
        return None
    if config_map is None:
        ref["name"].report(f"ConfigMap/{name} does not exist")
        return None
    used_config_maps.add(name)
    data_field = Cursor.root(config_map, value.problems)["data"]
    data = data_field.mapping()
    key = "jwks" if "jwks" in data else next(iter(data), None)  # as Envoy Gateway: `jwks`, else the first value
    text = data.get(key) if key is not None else None
    if not isinstance(text, str) or not text:
        data_field["jwks"].report("must hold a JWKS (JSON), or ${file:/path} of one")
        return None
    if match := FILE_REFERENCE.match(text):
        return None, match.group(1)
    return (text, None) if _is_jwks(data_field[key], text) else None


def _is_jwks(cursor: Cursor, text: str) -> bool:
    """True when ``text`` looks like a JWKS: Envoy would refuse the whole listener otherwise."""
    try:
        parsed = json.loads(text)
    except ValueError:
        cursor.report('is not valid JSON (a JWKS: {"keys": [...]})')
        return False
    if not isinstance(parsed, dict) or not isinstance(parsed.get("keys"), list) or not parsed["keys"]:
        cursor.report("must be a JWKS: a JSON object with a non-empty `keys` list")
        return False
    return True
