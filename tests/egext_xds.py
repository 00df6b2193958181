"""EG's xDS fixtures as the protobuf bytes EG's extension manager sends (for the extension server's tests).

EG's goldens (``egctl translate`` and per-feature xDS outputs) are proto3 JSON as YAML; envoy-data-plane,
generated from Envoy's whole API, turns them into Envoy's own encoding, with every field our subset does
not declare. Shared with the end-to-end EG test.
"""

from __future__ import annotations

import copy
import importlib
import warnings
from pathlib import Path
from typing import Any

import yaml

SHARED = Path(__file__).resolve().parents[2] / "shared" / "envoy-gateway"
XDS_IR = SHARED / "xds-ir" / "out"
EGCTL = SHARED / "egctl-translate" / "out"


def _type_urls(value: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(value, dict):
        if isinstance(value.get("@type"), str):
            found.add(value["@type"])
        for item in value.values():
            found |= _type_urls(item)
    elif isinstance(value, list):
        for item in value:
            found |= _type_urls(item)
    return found


def register_types(value: Any) -> None:
    """Import the envoy-data-plane module of every ``@type`` in ``value`` (betterproto unpacks only those)."""
    for url in _type_urls(value):
        package = url.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            importlib.import_module(f"envoy_data_plane.{package}")


def _envoy(kind: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if kind == "cluster":
            from envoy_data_plane.envoy.config.cluster.v3 import Cluster

            return Cluster
        if kind == "listener":
            from envoy_data_plane.envoy.config.listener.v3 import Listener

            return Listener
        if kind == "route":
            from envoy_data_plane.envoy.config.route.v3 import RouteConfiguration

            return RouteConfiguration
        if kind == "secret":
            from envoy_data_plane.envoy.extensions.transport_sockets.tls.v3 import Secret

            return Secret
    raise ValueError(kind)


FILTER_CONFIG = "type.googleapis.com/envoy.config.route.v3.FilterConfig"


def _without_5xx_fields(value: Any) -> Any:
    """envoy-data-plane cannot read Envoy's ``consecutive5xx`` / ``enforcingConsecutive5xx`` (outlier detection:
    its JSON names do not round-trip), so resources are encoded without them."""
    if isinstance(value, dict):
        return {k: _without_5xx_fields(v) for k, v in value.items() if not k.lower().endswith("5xx")}
    if isinstance(value, list):
        return [_without_5xx_fields(v) for v in value]
    return value


def encode(kind: str, resource: dict[str, Any]) -> bytes:
    """One resource (proto3 JSON) in Envoy's binary encoding (minus the two fields ``_without_5xx_fields`` names)."""
    resource = _without_5xx_fields(resource)
    if kind == "route":
        return _encode_route_configuration(resource)
    register_types(resource)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return bytes(_envoy(kind).from_dict(resource))


def _encode_route_configuration(resource: dict[str, Any]) -> bytes:
    """envoy-data-plane cannot read an ``Any`` without a type, which EG writes to enable a disabled filter on
    a route (``FilterConfig`` with ``config: {}``): those entries are set on the encoded bytes instead."""
    from google.protobuf import any_pb2

    from tokenvoy.pb.envoy.config.route.v3 import route_components_pb2, route_pb2

    resource = copy.deepcopy(resource)
    enabled: list[tuple[int, int, str, dict[str, Any]]] = []
    for vh_index, virtual_host in enumerate(resource.get("virtualHosts", [])):
        for route_index, route in enumerate(virtual_host.get("routes", [])):
            per_filter = route.get("typedPerFilterConfig", {})
            for name, value in list(per_filter.items()):
                if value.get("@type") == FILTER_CONFIG and value.get("config") == {}:
                    enabled.append((vh_index, route_index, name, per_filter.pop(name)))
    register_types(resource)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        raw = bytes(_envoy("route").from_dict(resource))
    if not enabled:
        return raw
    ours = route_pb2.RouteConfiguration.FromString(raw)  # our field subset: everything else passes through
    for vh_index, route_index, name, value in enabled:
        config = route_components_pb2.FilterConfig(
            config=any_pb2.Any(), is_optional=bool(value.get("isOptional")), disabled=bool(value.get("disabled"))
        )
        packed = any_pb2.Any(type_url=FILTER_CONFIG, value=config.SerializeToString())
        ours.virtual_hosts[vh_index].routes[route_index].typed_per_filter_config[name].CopyFrom(packed)
    return ours.SerializeToString()


def decode(kind: str, raw: bytes) -> dict[str, Any]:
    """Envoy's binary encoding back to proto3 JSON (camelCase), to read what the hook produced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return _envoy(kind).parse(raw).to_dict()


def xds_ir_case(case: str) -> dict[str, list[dict[str, Any]]]:
    """``listeners``, ``routes``, ``clusters``, ``secrets`` of one per-feature golden (absent files: empty)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for kind in ("listeners", "routes", "clusters", "secrets"):
        path = XDS_IR / f"{case}.{kind}.yaml"
        out[kind] = (yaml.safe_load(path.read_text()) or []) if path.exists() else []
    return out


def egctl_case(name: str) -> dict[str, list[dict[str, Any]]]:
    """The dynamic listeners, routes, clusters, secrets and (EDS) endpoints of an ``egctl translate`` config dump."""
    doc = yaml.safe_load((EGCTL / f"{name}.all.yaml").read_text())
    out: dict[str, list[dict[str, Any]]] = {
        "listeners": [],
        "routes": [],
        "clusters": [],
        "secrets": [],
        "endpoints": [],
    }
    for config in doc.get("xds", {}).values() if isinstance(doc.get("xds"), dict) else []:
        for dump in config.get("configs", []):
            _collect(dump, out)
    for dump in doc.get("configs", []):
        _collect(dump, out)
    return out


def _resource(packed: dict[str, Any]) -> dict[str, Any]:
    """A config dump holds each resource as an ``Any``: the message without its ``@type``."""
    return {key: value for key, value in packed.items() if key != "@type"}


def _collect(dump: dict[str, Any], out: dict[str, list[dict[str, Any]]]) -> None:
    for item in dump.get("dynamicListeners", []):
        out["listeners"].append(_resource(item["activeState"]["listener"]))
    for item in dump.get("dynamicRouteConfigs", []):
        out["routes"].append(_resource(item["routeConfig"]))
    for item in dump.get("dynamicActiveClusters", []):
        out["clusters"].append(_resource(item["cluster"]))
    for item in dump.get("dynamicActiveSecrets", []):
        out["secrets"].append(_resource(item["secret"]))
    for item in dump.get("dynamicEndpointConfigs", []):
        out.setdefault("endpoints", []).append(_resource(item["endpointConfig"]))
