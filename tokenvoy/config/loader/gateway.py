"""Gateway API ``Gateway``: the one plain-HTTP listener tokenvoy serves, and the fields it cannot honour."""

from __future__ import annotations

from tokenvoy.config.loader.cursor import Problems, Resource, _check_fields, _integer, _list, _mapping, _unsupported
from tokenvoy.config.model import (
    Listener,
)

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


def _listener(items: dict[str, Resource], problems: Problems) -> Listener:
    for resource in items.values():
        if not _check_fields(resource, resource.spec, "spec", _GATEWAY_FIELDS, problems):
            continue
        _unsupported(resource, resource.spec, "spec", _GATEWAY_UNSUPPORTED, problems)
        listeners = _list(resource, resource.spec.get("listeners"), "spec.listeners", problems)
        if len(listeners) > 1:
            problems.add(resource, "spec.listeners", f"tokenvoy serves one listener, got {len(listeners)}")
        for index, entry in enumerate(listeners):
            path = f"spec.listeners[{index}]"
            if isinstance(entry, dict) and _check_fields(resource, entry, path, _LISTENER_FIELDS, problems):
                _unsupported(resource, entry, path, _LISTENER_UNSUPPORTED, problems)
                if entry.get("protocol") not in (None, "HTTP"):
                    problems.add(
                        resource, f"{path}.protocol", f"not supported by tokenvoy: only HTTP, got {entry['protocol']!r}"
                    )
        if listeners:
            first = _mapping(resource, listeners[0], "spec.listeners[0]", problems)
            port = _integer(resource, first.get("port"), "spec.listeners[0].port", problems, 1975, 1)
            return Listener(port=port)
    return Listener()
