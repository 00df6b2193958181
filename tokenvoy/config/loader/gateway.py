"""Gateway API ``Gateway``: the one plain-HTTP listener tokenvoy serves, and the fields it cannot honour."""

from __future__ import annotations

from tokenvoy.config.loader.cursor import Cursor, Problems, Resource
from tokenvoy.config.model import (
    Listener,
)

# Fields accepted without an effect on a standalone gateway, and why (INERT_FIELDS in __init__).
INERT = {
    "spec.gatewayClassName": "a standalone gateway has no controller to select",
    "spec.infrastructure": "labels, annotations and parameters of the Kubernetes Deployment running Envoy",
    "spec.listeners[].name": "names the listener routes attach to; there is one",
}

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


def read_listener(items: dict[str, Resource], problems: Problems) -> Listener:
    for resource in items.values():
        spec = Cursor.spec(resource, problems)
        if not spec.fields(_GATEWAY_FIELDS):
            continue
        spec.unsupported(_GATEWAY_UNSUPPORTED)
        listeners = spec["listeners"].items()
        if len(listeners) > 1:
            spec["listeners"].report(f"tokenvoy serves one listener, got {len(listeners)}")
        for entry in listeners:
            if isinstance(entry.value, dict) and entry.fields(_LISTENER_FIELDS):
                entry.unsupported(_LISTENER_UNSUPPORTED)
                if entry.get("protocol") not in (None, "HTTP"):
                    entry["protocol"].report(f"not supported by tokenvoy: only HTTP, got {entry.get('protocol')!r}")
        if listeners:
            first = listeners[0]
            first.mapping()
            return Listener(port=first["port"].integer(1975, 1))
    return Listener()
