"""Envoy Gateway ``Backend``: the one endpoint a provider is called at, and the fields tokenvoy cannot honour."""

from __future__ import annotations

from tokenvoy.config.loader.cursor import _check_fields, _integer, _list, _Problems, _Resource, _string, _unsupported
from tokenvoy.config.model import (
    Endpoint,
    TLSValidation,
)

FAKE_PROVIDER_ANNOTATION = "tokenvoy.io/fake-provider"
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


def _endpoint_host(resource: _Resource) -> str | None:
    endpoints = resource.spec.get("endpoints")
    first = endpoints[0] if isinstance(endpoints, list) and endpoints else None
    address = first.get("fqdn") or first.get("ip") if isinstance(first, dict) else None
    host = (address.get("hostname") or address.get("address")) if isinstance(address, dict) else None
    return host if isinstance(host, str) and host else None
