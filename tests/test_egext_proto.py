"""The field subsets of Envoy's xDS messages the EG extension server uses (tokenvoy.pb, see proto/README.md).

Each declares some of Envoy's fields: every one it declares must be Envoy's (name, number, wire type,
cardinality, oneof), checked against envoy-data-plane (generated from Envoy's whole API), and everything it
does not declare must survive a parse and a write (the unknown-field tests in tests/test_egext.py)."""

from __future__ import annotations

import importlib
import pkgutil
import re
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

import tokenvoy.pb
from tests.egext_xds import SHARED
from tests.test_proto_compat import FIELD_SUBSET_PREFIXES, _bp_message_cls, _bp_meta, _is_map
from tokenvoy.pb.envoygateway.extension import context_pb2, service_pb2

pytestmark = pytest.mark.filterwarnings("ignore:Using `@model_validator` with mode='after':DeprecationWarning")

_TYPE_NAMES = {
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_MESSAGE: "message",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_BYTES: "bytes",
}


def _subset_messages() -> dict[str, Descriptor]:
    found: dict[str, Descriptor] = {}
    for info in pkgutil.walk_packages(tokenvoy.pb.__path__, prefix="tokenvoy.pb."):
        if not info.name.endswith("_pb2") or not info.name.startswith(FIELD_SUBSET_PREFIXES):
            continue
        if info.name.startswith("tokenvoy.pb.envoygateway."):
            continue  # EG's own API: not in envoy-data-plane (checked below against EG's proto numbers)
        module = importlib.import_module(info.name)
        for desc in module.DESCRIPTOR.message_types_by_name.values():
            found[desc.full_name] = desc
    return found


SUBSET = _subset_messages()
EG_PROTO = SHARED / "extension-proto"


def test_the_subset_is_what_the_extension_server_needs() -> None:
    assert {
        "envoy.config.cluster.v3.Cluster",
        "envoy.config.endpoint.v3.ClusterLoadAssignment",
        "envoy.config.endpoint.v3.LocalityLbEndpoints",
        "envoy.config.endpoint.v3.LbEndpoint",
        "envoy.config.listener.v3.Listener",
        "envoy.config.route.v3.RouteConfiguration",
        "envoy.config.route.v3.FilterConfig",
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "envoy.extensions.transport_sockets.tls.v3.Secret",
    } <= set(SUBSET)


@pytest.mark.parametrize("full_name", sorted(SUBSET))
def test_every_declared_field_is_envoys(full_name: str) -> None:
    desc = SUBSET[full_name]
    meta: dict[str, Any] = _bp_meta(_bp_message_cls(desc))
    for field in desc.fields:
        where = f"{full_name}.{field.name}"
        assert field.name in meta, f"{where}: Envoy has no such field"
        theirs = meta[field.name]
        assert field.number == theirs.number, where
        if _is_map(field):
            assert theirs.proto_type == "map", where
        else:
            assert _TYPE_NAMES[field.type] == theirs.proto_type, where
        ours_oneof = field.containing_oneof.name if field.containing_oneof else None
        assert ours_oneof == theirs.group, f"{where}: oneof"


def _eg_messages() -> dict[str, dict[str, tuple[str, int]]]:
    """Message -> field -> (type, number), read from EG's own .proto files."""
    out: dict[str, dict[str, tuple[str, int]]] = {}
    for name in ("service.proto", "context.proto"):
        text = re.sub(r"//[^\n]*", "", (EG_PROTO / name).read_text())
        for message, body in re.findall(r"message\s+(\w+)\s*\{([^}]*)\}", text):
            fields = re.findall(r"(?:repeated\s+)?([\w.]+)\s+(\w+)\s*=\s*(\d+)\s*;", body)
            out[message] = {field: (kind.rsplit(".", 1)[-1], int(number)) for kind, field, number in fields}
    return out


def test_eg_extension_api_is_egs() -> None:
    """Every message of EG's extension API with EG's fields, types and numbers; the service's methods."""
    theirs = _eg_messages()
    ours = {
        desc.name: {
            f.name: (f.message_type.name if f.message_type else _TYPE_NAMES[f.type], f.number) for f in desc.fields
        }
        for module in (service_pb2, context_pb2)
        for desc in module.DESCRIPTOR.message_types_by_name.values()
    }
    assert len(theirs) >= 17
    assert ours == theirs
    text = (EG_PROTO / "service.proto").read_text()
    methods = service_pb2.DESCRIPTOR.services_by_name["EnvoyGatewayExtension"].methods_by_name
    assert set(methods) == set(re.findall(r"rpc\s+(\w+)\s*\(", text))
