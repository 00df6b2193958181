"""Envoy Gateway ``Backend``: the one endpoint a provider is called at, and the fields tokenvoy cannot honour."""

from __future__ import annotations

from tokenvoy.config.loader.cursor import Cursor, Problems, Resource
from tokenvoy.config.loader.inert import SYSTEM_CAS
from tokenvoy.config.model import (
    Endpoint,
    TLSValidation,
)

# Fields accepted without an effect on a standalone gateway, and why (INERT_FIELDS in __init__).
INERT = {
    "spec.endpoints[].zone": "zone-aware routing chooses among endpoints; a Backend has one",
    "spec.tls.autoSNIFromEndpointHostname": "tokenvoy sends the endpoint's hostname as SNI already (or tls.sni)",
    "spec.tls.wellKnownCACertificates": SYSTEM_CAS,
}

FAKE_PROVIDER_ANNOTATION = "tokenvoy.io/fake-provider"
_ENVOY_BACKEND_FIELDS = {"endpoints", "tls", "type", "appProtocols", "fallback"}
_ENDPOINT_FIELDS = {"fqdn", "ip", "hostname", "unix", "zone"}
_ENDPOINT_UNSUPPORTED = {
    "hostname": "give the host name as fqdn.hostname",
    "unix": "Unix-socket endpoints are not supported",
}


def check_envoy_backends(items: dict[str, Resource], problems: Problems) -> None:
    """The Envoy Gateway ``Backend`` fields tokenvoy cannot honour, once per Backend."""
    for resource in items.values():
        spec = Cursor.spec(resource, problems)
        if not spec.fields(_ENVOY_BACKEND_FIELDS):
            continue
        spec.unsupported(
            {
                "appProtocols": "tokenvoy speaks HTTP/1.1 to providers (over TLS on port 443 or with tls)",
                "fallback": "fallback Backends; give the AIGatewayRoute backendRefs priorities instead",
            }
        )
        if spec.get("type") not in (None, "Endpoints"):
            spec["type"].report(f"not supported by tokenvoy: only Endpoints, got {spec.get('type')!r}")
        if not isinstance(spec.get("endpoints"), list):
            continue  # reported by envoy_endpoint, when a backend uses it
        endpoints = spec["endpoints"].items()
        if len(endpoints) > 1:
            spec["endpoints"].report(f"tokenvoy calls one endpoint per Backend, got {len(endpoints)}")
        for endpoint in endpoints:
            if isinstance(endpoint.value, dict) and endpoint.fields(_ENDPOINT_FIELDS):
                endpoint.unsupported(
                    {
                        "hostname": "give the host name as fqdn.hostname",
                        "unix": "Unix-socket endpoints are not supported",
                    }
                )


def envoy_endpoint(resource: Resource, tls: TLSValidation | None, problems: Problems) -> Endpoint | None:
    """Where the Backend is called: its first endpoint (``fqdn`` or ``ip``), over TLS on 443 or when verified."""
    spec = Cursor.spec(resource, problems)
    endpoints = spec["endpoints"].items()
    if not endpoints:
        spec["endpoints"].report("required: at least one endpoint")
        return None
    first = endpoints[0]
    family = "fqdn" if first.get("fqdn") else "ip"
    address = first[family]
    if not isinstance(address.value, dict):
        first.report("needs `fqdn` {hostname, port} or `ip` {address, port}")
        return None
    host_field = address["hostname" if family == "fqdn" else "address"]
    host = Cursor(resource, address.get("hostname") or address.get("address"), host_field.path, problems).string()
    port = address["port"].integer(default=443, minimum=1)
    if host is None:
        return None
    on = tls is not None or "tls" in resource.spec or port == 443
    return Endpoint(host=host, port=port, tls=on, tls_validation=tls)


def endpoint_host(resource: Resource) -> str | None:
    endpoints = resource.spec.get("endpoints")
    first = endpoints[0] if isinstance(endpoints, list) and endpoints else None
    address = first.get("fqdn") or first.get("ip") if isinstance(first, dict) else None
    host = (address.get("hostname") or address.get("address")) if isinstance(address, dict) else None
    return host if isinstance(host, str) and host else None
