"""The ``jwt`` of a SecurityPolicy: providers, where tokens are read from, claims copied to headers, and
their JWKS (inline, a ConfigMap, or fetched from a URI or a Backend)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from tokenvoy.config.loader.cursor import (
    Problems,
    Resource,
    _check_fields,
    _list,
    _mapping,
    _reference_kind,
    _string,
    _unsupported,
)
from tokenvoy.config.loader.secrets import FILE_REFERENCE
from tokenvoy.config.loader.values import HEADER_NAME, _duration_ms
from tokenvoy.config.model import (
    Endpoint,
    JwtAuth,
    JwtProvider,
)

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


def _jwt_auth(
    resource: Resource,
    value: Any,
    config_maps: dict[str, Resource],
    jwks_backend: Callable[[str], Endpoint | None],
    used_config_maps: set[str],
    problems: Problems,
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
    resource: Resource,
    entry: Any,
    path: str,
    config_maps: dict[str, Resource],
    jwks_backend: Callable[[str], Endpoint | None],
    used_config_maps: set[str],
    problems: Problems,
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
        if header is not None and not HEADER_NAME.match(header):
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
    resource: Resource,
    remote: dict[str, Any],
    path: str,
    jwks_backend: Callable[[str], Endpoint | None],
    problems: Problems,
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
    resource: Resource,
    value: Any,
    path: str,
    config_maps: dict[str, Resource],
    used_config_maps: set[str],
    problems: Problems,
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
    if match := FILE_REFERENCE.match(text):
        return None, match.group(1)
    return (text, None) if _is_jwks(config_map, text, f"data.{key}", problems) else None


def _is_jwks(resource: Resource, text: str, path: str, problems: Problems) -> bool:
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
