"""tokenvoy's copy of ``ratelimit.config.ratelimit.v3`` has the schema Envoy Gateway and envoyproxy/ratelimit use.

The reference is ``ratelimit/config/ratelimit/v3/rls_conf.proto`` as published in envoyproxy/go-control-plane
(envoy-data-plane, the reference of tests/test_proto_compat.py, does not carry it). Names and numbers decide
the bytes on the wire and the ``Any`` type URL EG sends.
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor as F

from tokenvoy.pb.ratelimit.config.ratelimit.v3 import rls_conf_pb2

MSG, STR, U32, BOOL, ENUM = F.TYPE_MESSAGE, F.TYPE_STRING, F.TYPE_UINT32, F.TYPE_BOOL, F.TYPE_ENUM

# (name, number, type, repeated, type name for messages and enums)
UPSTREAM = {
    "RateLimitConfig": [
        ("name", 1, STR, False, ""),
        ("domain", 2, STR, False, ""),
        ("descriptors", 3, MSG, True, "ratelimit.config.ratelimit.v3.RateLimitDescriptor"),
    ],
    "RateLimitDescriptor": [
        ("key", 1, STR, False, ""),
        ("value", 2, STR, False, ""),
        ("rate_limit", 3, MSG, False, "ratelimit.config.ratelimit.v3.RateLimitPolicy"),
        ("descriptors", 4, MSG, True, "ratelimit.config.ratelimit.v3.RateLimitDescriptor"),
        ("shadow_mode", 5, BOOL, False, ""),
        ("detailed_metric", 6, BOOL, False, ""),
        ("quota_mode", 7, BOOL, False, ""),
        ("metadata", 8, MSG, False, "google.protobuf.Struct"),
    ],
    "RateLimitPolicy": [
        ("unit", 1, ENUM, False, "ratelimit.config.ratelimit.v3.RateLimitUnit"),
        ("requests_per_unit", 2, U32, False, ""),
        ("unlimited", 3, BOOL, False, ""),
        ("name", 4, STR, False, ""),
        ("replaces", 5, MSG, True, "ratelimit.config.ratelimit.v3.RateLimitReplace"),
    ],
    "RateLimitReplace": [("name", 1, STR, False, "")],
}
UNITS = {"UNKNOWN": 0, "SECOND": 1, "MINUTE": 2, "HOUR": 3, "DAY": 4, "WEEK": 7, "MONTH": 5, "YEAR": 6}


def _fields(message: str) -> list[tuple[str, int, int, bool, str]]:
    desc = rls_conf_pb2.DESCRIPTOR.message_types_by_name[message]
    out = []
    for f in desc.fields:
        type_desc = f.message_type or f.enum_type
        out.append((f.name, f.number, f.type, f.is_repeated, type_desc.full_name if type_desc else ""))
    return out


def test_messages_have_upstreams_fields() -> None:
    assert set(rls_conf_pb2.DESCRIPTOR.message_types_by_name) == set(UPSTREAM)
    for message, fields in UPSTREAM.items():
        assert _fields(message) == fields, message


def test_units_have_upstreams_numbers() -> None:
    assert dict(rls_conf_pb2.RateLimitUnit.items()) == UNITS


def test_type_url_is_the_one_eg_serves() -> None:
    assert rls_conf_pb2.RateLimitConfig.DESCRIPTOR.full_name == "ratelimit.config.ratelimit.v3.RateLimitConfig"


def test_bytes_written_by_upstream_numbering_decode() -> None:
    # RateLimitConfig{domain: "d", descriptors: [{key: "k", rate_limit: {unit: HOUR, requests_per_unit: 300}}]}
    policy = b"\x08\x03\x10\xac\x02"
    descriptor = b"\x0a\x01k" + b"\x1a" + bytes([len(policy)]) + policy
    wire = b"\x12\x01d" + b"\x1a" + bytes([len(descriptor)]) + descriptor
    config = rls_conf_pb2.RateLimitConfig.FromString(wire)
    assert config.domain == "d"
    assert config.descriptors[0].rate_limit.unit == rls_conf_pb2.HOUR
    assert config.descriptors[0].rate_limit.requests_per_unit == 300
