"""Prove that tokenvoy.pb (our protobuf subset, upb runtime) is wire-compatible with Envoy's API.

``envoy-data-plane`` (betterproto2) is generated from Envoy's real protos, so it stands in for Envoy here.
For every message we define (discovered from our descriptors, so a new message without a case fails):

* structure: each field has Envoy's name, number, wire type, cardinality and oneof; each enum has all of
  Envoy's values with the same numbers;
* ours -> Envoy: a message with every field set to a non-default value is encoded by us, decoded by
  envoy-data-plane and compared field by field;
* Envoy -> ours: the same values are built as envoy-data-plane objects (from Python values, not bytes),
  encoded by it, decoded by us and compared with ``==``.

Finally the gRPC method paths are checked in the generated modules and over a real loopback gRPC call
made with envoy-data-plane's own client stubs against our generated servicers.

envoy-data-plane is imported only by tests: it is ~400x slower than upb on the hot path.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import pkgutil
import warnings
from collections.abc import Callable, Iterator
from concurrent import futures
from types import ModuleType
from typing import Any

import betterproto2
import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2, struct_pb2, timestamp_pb2, unknown_fields, wrappers_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

import tokenvoy.pb
from tokenvoy.pb.envoy.config.core.v3 import base_pb2
from tokenvoy.pb.envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from tokenvoy.pb.envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from tokenvoy.pb.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from tokenvoy.pb.envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc
from tokenvoy.pb.envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from tokenvoy.pb.envoy.type.v3 import http_status_pb2, ratelimit_unit_pb2

# envoy-data-plane's generated classes trip a Pydantic 2.12 deprecation on import; not our concern here.
pytestmark = pytest.mark.filterwarnings("ignore:Using `@model_validator` with mode='after':DeprecationWarning")

EXT_PROC_PATH = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"
RLS_PATH = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"

# Fields of Envoy's messages that we deliberately do not define, as "full.MessageName.field". Empty: the
# subset is by message, and every message we keep carries all of Envoy's fields.
INTENTIONALLY_OMITTED_FIELDS: frozenset[str] = frozenset()


# --------------------------------------------------------------------------------------------------------
# Discovery of our generated types
# --------------------------------------------------------------------------------------------------------


# Field subsets of Envoy's xDS messages (and Envoy Gateway's extension API, which envoy-data-plane does not
# have) for the EG extension server: they declare only some of Envoy's fields on purpose and pass the rest
# through as unknown fields; tests/test_egext_proto.py proves them.
FIELD_SUBSET_PREFIXES = (
    "tokenvoy.pb.envoygateway.",
    "tokenvoy.pb.envoy.config.cluster.",
    "tokenvoy.pb.envoy.config.endpoint.",
    "tokenvoy.pb.envoy.config.listener.",
    "tokenvoy.pb.envoy.config.route.",
    "tokenvoy.pb.envoy.extensions.filters.network.",
    "tokenvoy.pb.envoy.extensions.upstreams.",
    "tokenvoy.pb.envoy.extensions.transport_sockets.",
)


def _pb2_modules() -> list[ModuleType]:
    """Every generated ``*_pb2`` module of Envoy's API under tokenvoy.pb, minus the field subsets.

    ``tokenvoy.pb.ratelimit`` (envoyproxy/ratelimit's xDS config, not in envoy-data-plane) is checked
    against its own schema in tests/test_ratelimit_xds_proto.py.
    """
    modules = []
    for info in pkgutil.walk_packages(tokenvoy.pb.__path__, prefix="tokenvoy.pb."):
        if (
            info.name.endswith("_pb2")
            and info.name.startswith("tokenvoy.pb.envoy.")
            and not info.name.startswith(FIELD_SUBSET_PREFIXES)
        ):
            modules.append(importlib.import_module(info.name))
    return modules


def _walk_messages(desc: Descriptor) -> Iterator[Descriptor]:
    """A message and its nested messages, minus synthetic map-entry types."""
    if desc.GetOptions().map_entry:
        return
    yield desc
    for nested in desc.nested_types:
        yield from _walk_messages(nested)


def _discover() -> tuple[dict[str, Descriptor], dict[str, EnumDescriptor]]:
    """All message and enum descriptors we generate, keyed by full proto name."""
    messages: dict[str, Descriptor] = {}
    enums: dict[str, EnumDescriptor] = {}
    for module in _pb2_modules():
        for top in module.DESCRIPTOR.message_types_by_name.values():
            for desc in _walk_messages(top):
                messages[desc.full_name] = desc
                for enum in desc.enum_types:
                    enums[enum.full_name] = enum
        for enum in module.DESCRIPTOR.enum_types_by_name.values():
            enums[enum.full_name] = enum
    return messages, enums


OUR_MESSAGES, OUR_ENUMS = _discover()


# --------------------------------------------------------------------------------------------------------
# Mapping to envoy-data-plane
# --------------------------------------------------------------------------------------------------------


def _bp_type(full_name: str, package: str) -> Any:
    """envoy-data-plane class for a proto type: nested names are flattened (A.B.C -> ABC)."""
    module = importlib.import_module(f"envoy_data_plane.{package}")
    return getattr(module, full_name[len(package) + 1 :].replace(".", ""))


def _bp_message_cls(desc: Descriptor) -> type[betterproto2.Message]:
    return _bp_type(desc.full_name, desc.file.package)


def _bp_meta(bp_cls: type[betterproto2.Message]) -> dict[str, Any]:
    """betterproto2 per-field metadata (number, proto_type, group, unwrap, ...), keyed by field name."""
    return bp_cls._betterproto.meta_by_field_name


@contextlib.contextmanager
def _quiet_deprecations() -> Iterator[None]:
    """betterproto2 warns when deprecated fields are set; we set them on purpose (wire compat)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".* is deprecated", category=DeprecationWarning)
        yield


_PROTO_TYPE_NAMES = {
    FieldDescriptor.TYPE_DOUBLE: "double",
    FieldDescriptor.TYPE_FLOAT: "float",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_FIXED64: "fixed64",
    FieldDescriptor.TYPE_FIXED32: "fixed32",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_MESSAGE: "message",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_UINT32: "uint32",
    FieldDescriptor.TYPE_ENUM: "enum",
    FieldDescriptor.TYPE_SFIXED32: "sfixed32",
    FieldDescriptor.TYPE_SFIXED64: "sfixed64",
    FieldDescriptor.TYPE_SINT32: "sint32",
    FieldDescriptor.TYPE_SINT64: "sint64",
}


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def _is_repeated(field: FieldDescriptor) -> bool:
    # FieldDescriptor.is_repeated is new; `label` is deprecated in recent protobuf releases.
    repeated = getattr(field, "is_repeated", None)
    return bool(repeated) if repeated is not None else field.label == FieldDescriptor.LABEL_REPEATED


def _to_python(msg: Message) -> Any:
    """What betterproto2 "unwraps" a well-known-type field to."""
    if isinstance(msg, duration_pb2.Duration):
        return msg.ToTimedelta()
    if isinstance(msg, timestamp_pb2.Timestamp):
        return msg.ToDatetime(tzinfo=datetime.UTC)
    if msg.DESCRIPTOR.file.name == "google/protobuf/wrappers.proto":
        return msg.value  # type: ignore[attr-defined]
    raise AssertionError(f"no unwrapped form known for {msg.DESCRIPTOR.full_name}")


def _to_bp_value(field: FieldDescriptor, value: Any, unwrap: bool) -> Any:
    """Convert one singular value of ours to envoy-data-plane's Python representation."""
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return _to_python(value) if unwrap else to_betterproto(value)
    if field.type == FieldDescriptor.TYPE_ENUM:
        return _bp_type(field.enum_type.full_name, field.enum_type.file.package)(value)
    return value


def to_betterproto(msg: Message) -> betterproto2.Message:
    """Build the equivalent envoy-data-plane object from Python values (never via bytes)."""
    bp_cls = _bp_message_cls(msg.DESCRIPTOR)
    meta = _bp_meta(bp_cls)
    kwargs: dict[str, Any] = {}
    for field, value in msg.ListFields():
        unwrap = meta[field.name].unwrap is not None
        if _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            kwargs[field.name] = {k: _to_bp_value(value_field, v, unwrap=False) for k, v in value.items()}
        elif _is_repeated(field):
            kwargs[field.name] = [_to_bp_value(field, v, unwrap) for v in value]
        else:
            kwargs[field.name] = _to_bp_value(field, value, unwrap)
    with _quiet_deprecations():
        return bp_cls(**kwargs)


def _assert_value(field: FieldDescriptor, ours: Any, theirs: Any, unwrap: bool, path: str) -> None:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if unwrap:
            assert _to_python(ours) == theirs, path
        else:
            assert_equivalent(ours, theirs, path)
    else:
        assert ours == theirs, f"{path}: ours={ours!r} envoy={theirs!r}"


def assert_equivalent(ours: Message, theirs: betterproto2.Message, path: str = "") -> None:
    """Field-by-field comparison of one of our messages with an envoy-data-plane message."""
    desc = ours.DESCRIPTOR
    path = path or desc.full_name
    assert type(theirs) is _bp_message_cls(desc), path
    meta = _bp_meta(type(theirs))
    for oneof in desc.oneofs:
        bp_choice = betterproto2.which_one_of(theirs, oneof.name)[0] or None
        assert ours.WhichOneof(oneof.name) == bp_choice, f"{path}.{oneof.name}"
    for field in desc.fields:
        here = f"{path}.{field.name}"
        unwrap = meta[field.name].unwrap is not None
        value = getattr(ours, field.name)
        bp_value = getattr(theirs, field.name)
        if _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            assert set(value) == set(bp_value), here
            for key in value:
                _assert_value(value_field, value[key], bp_value[key], False, f"{here}[{key!r}]")
        elif _is_repeated(field):
            assert len(value) == len(bp_value), here
            for i, (a, b) in enumerate(zip(value, bp_value, strict=True)):
                _assert_value(field, a, b, unwrap, f"{here}[{i}]")
        elif field.has_presence:
            assert ours.HasField(field.name) == (bp_value is not None), f"{here}: presence differs"
            if bp_value is not None:
                _assert_value(field, value, bp_value, unwrap, here)
        else:
            _assert_value(field, value, bp_value, unwrap, here)


def _assert_no_unknown_fields(msg: Message, path: str = "") -> None:
    """Envoy's encoding put nothing on the wire that our schema does not know (at any depth)."""
    path = path or msg.DESCRIPTOR.full_name
    assert len(unknown_fields.UnknownFieldSet(msg)) == 0, f"{path}: unknown fields on the wire"
    for field, value in msg.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        if _is_map(field):
            value_field = field.message_type.fields_by_name["value"]
            if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                for key, item in value.items():
                    _assert_no_unknown_fields(item, f"{path}.{field.name}[{key!r}]")
        elif _is_repeated(field):
            for i, item in enumerate(value):
                _assert_no_unknown_fields(item, f"{path}.{field.name}[{i}]")
        else:
            _assert_no_unknown_fields(value, f"{path}.{field.name}")


def _field_is_set(msg: Message, field: FieldDescriptor) -> bool:
    """True when ``field`` carries a non-default value, i.e. it will actually be on the wire."""
    if _is_repeated(field):
        return len(getattr(msg, field.name)) > 0
    if field.has_presence:
        return msg.HasField(field.name)
    return getattr(msg, field.name) != field.default_value


# --------------------------------------------------------------------------------------------------------
# Compat cases: one builder per message, returning variants that together set every field
# (one variant per oneof member). Children reuse the fully populated builders of their types.
# --------------------------------------------------------------------------------------------------------

CASES: dict[str, Callable[[], list[Message]]] = {}


def case(full_name: str) -> Callable[[Callable[[], list[Message]]], Callable[[], list[Message]]]:
    """Register the compat case for the message ``full_name``."""

    def register(builder: Callable[[], list[Message]]) -> Callable[[], list[Message]]:
        assert full_name not in CASES, full_name
        CASES[full_name] = builder
        return builder

    return register


def _struct() -> struct_pb2.Struct:
    """Every Value kind, nested, with non-ASCII text."""
    s = struct_pb2.Struct()
    s.update(
        {
            "llm_input_token": 1234.0,
            "llm_total_token": 1.5e15,
            "model_name_override": "gpt-4o-mini — ünïcode ✓",
            "streamed": True,
            "nothing": None,
            "nested": {
                "backend_name": "openai",
                "ttft_ms": 12.25,
                "tags": ["a", 2.0, False, None, {"k": "v"}],
            },
        }
    )
    return s


def _duration() -> duration_pb2.Duration:
    # Microsecond granularity: betterproto2 unwraps Duration to datetime.timedelta.
    return duration_pb2.Duration(seconds=3723, nanos=456_789_000)


@case("envoy.config.core.v3.HeaderValue")
def _header_value() -> list[Message]:
    return [base_pb2.HeaderValue(key="x-ai-eg-model", value="claude-sonnet ✓", raw_value=b"\x00\xffraw")]


@case("envoy.config.core.v3.HeaderValueOption")
def _header_value_option() -> list[Message]:
    return [
        base_pb2.HeaderValueOption(
            header=_header_value()[0],
            append=wrappers_pb2.BoolValue(value=True),
            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS,
            keep_empty_value=True,
        ),
        # A present-but-false wrapper must survive: presence is the whole point of BoolValue.
        base_pb2.HeaderValueOption(
            append=wrappers_pb2.BoolValue(value=False),
            append_action=base_pb2.HeaderValueOption.ADD_IF_ABSENT,
        ),
    ]


@case("envoy.config.core.v3.HeaderMap")
def _header_map() -> list[Message]:
    return [
        base_pb2.HeaderMap(
            headers=[
                base_pb2.HeaderValue(key=":path", raw_value=b"/v1/chat/completions"),
                base_pb2.HeaderValue(key="content-type", raw_value=b"application/json"),
                _header_value()[0],
            ]
        )
    ]


@case("envoy.config.core.v3.Metadata")
def _metadata() -> list[Message]:
    typed = any_pb2.Any()
    typed.Pack(_header_value()[0])
    return [
        base_pb2.Metadata(
            filter_metadata={"io.envoy.ai_gateway": _struct(), "envoy.lb": struct_pb2.Struct()},
            typed_filter_metadata={"io.envoy.ai_gateway": typed},
        )
    ]


@case("envoy.config.core.v3.Locality")
def _locality() -> list[Message]:
    return [base_pb2.Locality(region="httproute/default/r/rule/0/backend/1", zone="z ✓", sub_zone="s")]


@case("envoy.type.v3.HttpStatus")
def _http_status() -> list[Message]:
    return [http_status_pb2.HttpStatus(code=http_status_pb2.TooManyRequests)]


@case("envoy.extensions.filters.http.ext_proc.v3.ProcessingMode")
def _processing_mode() -> list[Message]:
    pm = processing_mode_pb2.ProcessingMode
    return [
        pm(
            request_header_mode=pm.SEND,
            response_header_mode=pm.SKIP,
            request_body_mode=pm.BUFFERED,
            response_body_mode=pm.FULL_DUPLEX_STREAMED,
            request_trailer_mode=pm.SKIP,
            response_trailer_mode=pm.SEND,
        ),
        pm(request_body_mode=pm.GRPC, response_body_mode=pm.STREAMED),
    ]


@case("envoy.extensions.common.ratelimit.v3.RateLimitDescriptor.Entry")
def _descriptor_entry() -> list[Message]:
    return [ratelimit_pb2.RateLimitDescriptor.Entry(key="model_name_override", value="gpt-4o ✓")]


@case("envoy.extensions.common.ratelimit.v3.RateLimitDescriptor.RateLimitOverride")
def _descriptor_override() -> list[Message]:
    return [
        ratelimit_pb2.RateLimitDescriptor.RateLimitOverride(
            requests_per_unit=4_000_000_000, unit=ratelimit_unit_pb2.YEAR
        )
    ]


@case("envoy.extensions.common.ratelimit.v3.RateLimitDescriptor")
def _descriptor() -> list[Message]:
    rd = ratelimit_pb2.RateLimitDescriptor
    return [
        rd(
            entries=[rd.Entry(key="generic_key", value="tokens"), _descriptor_entry()[0]],
            limit=_descriptor_override()[0],
            hits_addend=wrappers_pb2.UInt64Value(value=2**40 + 7),
            is_negative_hits=True,
        ),
        # hits_addend {value: 0} is a pure check; presence must survive the trip.
        rd(entries=[rd.Entry(key="k")], hits_addend=wrappers_pb2.UInt64Value(value=0)),
    ]


@case("envoy.service.ext_proc.v3.ProtocolConfiguration")
def _protocol_config() -> list[Message]:
    pm = processing_mode_pb2.ProcessingMode
    return [
        ep.ProtocolConfiguration(
            request_body_mode=pm.BUFFERED_PARTIAL,
            response_body_mode=pm.STREAMED,
            send_body_without_waiting_for_header_response=True,
        )
    ]


@case("envoy.service.ext_proc.v3.HttpHeaders")
def _http_headers() -> list[Message]:
    return [ep.HttpHeaders(headers=_header_map()[0], attributes={"legacy": _struct()}, end_of_stream=True)]


@case("envoy.service.ext_proc.v3.HttpBody")
def _http_body() -> list[Message]:
    return [
        ep.HttpBody(
            body=b'{"model":"gpt-4o","stream":true}\x00\xff',
            end_of_stream=True,
            end_of_stream_without_message=True,
            grpc_message_compressed=True,
        )
    ]


@case("envoy.service.ext_proc.v3.HttpTrailers")
def _http_trailers() -> list[Message]:
    return [ep.HttpTrailers(trailers=_header_map()[0])]


@case("envoy.service.ext_proc.v3.ProcessingRequest")
def _processing_request() -> list[Message]:
    common: dict[str, Any] = {
        "metadata_context": _metadata()[0],
        "attributes": {"envoy.filters.http.ext_proc": _struct()},
        "observability_mode": True,
        "protocol_config": _protocol_config()[0],
    }
    return [
        ep.ProcessingRequest(request_headers=_http_headers()[0], **common),
        ep.ProcessingRequest(response_headers=_http_headers()[0]),
        ep.ProcessingRequest(request_body=_http_body()[0]),
        ep.ProcessingRequest(response_body=_http_body()[0]),
        ep.ProcessingRequest(request_trailers=_http_trailers()[0]),
        ep.ProcessingRequest(response_trailers=_http_trailers()[0]),
        # An empty member is still a choice: Envoy sends empty bodies this way.
        ep.ProcessingRequest(request_body=ep.HttpBody()),
    ]


@case("envoy.service.ext_proc.v3.HeaderMutation")
def _header_mutation() -> list[Message]:
    return [
        ep.HeaderMutation(
            set_headers=_header_value_option(),
            remove_headers=["x-ai-eg-original-path", "authorization"],
        )
    ]


@case("envoy.service.ext_proc.v3.StreamedBodyResponse")
def _streamed_body() -> list[Message]:
    return [
        ep.StreamedBodyResponse(
            body=b"data: {}\n\n",
            end_of_stream=True,
            end_of_stream_without_message=True,
            grpc_message_compressed=True,
        )
    ]


@case("envoy.service.ext_proc.v3.BodyMutation")
def _body_mutation() -> list[Message]:
    return [
        ep.BodyMutation(body=b'{"translated":true}'),
        ep.BodyMutation(clear_body=True),
        ep.BodyMutation(streamed_response=_streamed_body()[0]),
        # Oneof members with default values are still set (and on the wire).
        ep.BodyMutation(body=b""),
        ep.BodyMutation(clear_body=False),
    ]


@case("envoy.service.ext_proc.v3.CommonResponse")
def _common_response() -> list[Message]:
    return [
        ep.CommonResponse(
            status=ep.CommonResponse.CONTINUE_AND_REPLACE,
            header_mutation=_header_mutation()[0],
            body_mutation=_body_mutation()[0],
            trailers=_header_map()[0],
            clear_route_cache=True,
        )
    ]


@case("envoy.service.ext_proc.v3.HeadersResponse")
def _headers_response() -> list[Message]:
    return [ep.HeadersResponse(response=_common_response()[0])]


@case("envoy.service.ext_proc.v3.BodyResponse")
def _body_response() -> list[Message]:
    return [ep.BodyResponse(response=_common_response()[0])]


@case("envoy.service.ext_proc.v3.TrailersResponse")
def _trailers_response() -> list[Message]:
    return [ep.TrailersResponse(header_mutation=_header_mutation()[0])]


@case("envoy.service.ext_proc.v3.GrpcStatus")
def _grpc_status() -> list[Message]:
    return [ep.GrpcStatus(status=14)]


@case("envoy.service.ext_proc.v3.ImmediateResponse")
def _immediate_response() -> list[Message]:
    return [
        ep.ImmediateResponse(
            status=_http_status()[0],
            headers=_header_mutation()[0],
            body=b'{"type":"error","error":{"type":"rate_limit","code":"429","message":"slow down"}}',
            grpc_status=_grpc_status()[0],
            details="ai_gateway_rate_limited",
        )
    ]


@case("envoy.service.ext_proc.v3.StreamedImmediateResponse")
def _streamed_immediate_response() -> list[Message]:
    return [
        ep.StreamedImmediateResponse(headers_response=_http_headers()[0]),
        ep.StreamedImmediateResponse(body_response=_streamed_body()[0]),
        ep.StreamedImmediateResponse(trailers_response=_header_map()[0]),
    ]


@case("envoy.service.ext_proc.v3.ProcessingResponse")
def _processing_response() -> list[Message]:
    common: dict[str, Any] = {
        "dynamic_metadata": _struct(),
        "mode_override": _processing_mode()[0],
        "request_drain": True,
        "override_message_timeout": _duration(),
    }
    return [
        ep.ProcessingResponse(request_headers=_headers_response()[0], **common),
        ep.ProcessingResponse(response_headers=_headers_response()[0]),
        ep.ProcessingResponse(request_body=_body_response()[0]),
        ep.ProcessingResponse(response_body=_body_response()[0]),
        ep.ProcessingResponse(request_trailers=_trailers_response()[0]),
        ep.ProcessingResponse(response_trailers=_trailers_response()[0]),
        ep.ProcessingResponse(immediate_response=_immediate_response()[0]),
        ep.ProcessingResponse(streamed_immediate_response=_streamed_immediate_response()[0]),
        # The common "continue" reply: an empty HeadersResponse member.
        ep.ProcessingResponse(request_headers=ep.HeadersResponse()),
    ]


@case("envoy.service.ratelimit.v3.RateLimitRequest")
def _rls_request() -> list[Message]:
    return [rls_pb2.RateLimitRequest(domain="ai-gateway ✓", descriptors=_descriptor(), hits_addend=4_000_000_000)]


@case("envoy.service.ratelimit.v3.RateLimitResponse.RateLimit")
def _rls_rate_limit() -> list[Message]:
    rl = rls_pb2.RateLimitResponse.RateLimit
    return [
        rl(name="per-user-daily", requests_per_unit=4_000_000_000, unit=rl.WEEK),
        rl(requests_per_unit=1, unit=rl.MONTH),
    ]


@case("envoy.service.ratelimit.v3.RateLimitResponse.Quota")
def _rls_quota() -> list[Message]:
    valid_until = timestamp_pb2.Timestamp(seconds=1_900_000_000, nanos=123_456_000)
    return [rls_pb2.RateLimitResponse.Quota(requests=4_000_000_000, valid_until=valid_until, id="quota-1")]


@case("envoy.service.ratelimit.v3.RateLimitResponse.DescriptorStatus")
def _rls_descriptor_status() -> list[Message]:
    rr = rls_pb2.RateLimitResponse
    return [
        rr.DescriptorStatus(
            code=rr.OVER_LIMIT,
            current_limit=_rls_rate_limit()[0],
            limit_remaining=4_000_000_000,
            duration_until_reset=_duration(),
            quota=_rls_quota()[0],
        ),
        rr.DescriptorStatus(code=rr.OK, duration_until_reset=duration_pb2.Duration()),
    ]


@case("envoy.service.ratelimit.v3.RateLimitResponse")
def _rls_response() -> list[Message]:
    rr = rls_pb2.RateLimitResponse
    return [
        rr(
            overall_code=rr.OVER_LIMIT,
            statuses=_rls_descriptor_status(),
            response_headers_to_add=[base_pb2.HeaderValue(key="x-ratelimit-limit", value="100, 100;w=60")],
            request_headers_to_add=_header_map()[0].headers,
            raw_body=b"over budget\x00",
            dynamic_metadata=_struct(),
            quota=_rls_quota()[0],
        )
    ]


# --------------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------------


def test_cases_match_generated_messages() -> None:
    """A compat case exists for every generated message and for nothing else."""
    assert sorted(OUR_MESSAGES) == sorted(CASES)


def test_discovery_sees_the_services_messages() -> None:
    """Guard the discovery itself: if it found nothing, every parametrized test would silently vanish."""
    assert {
        "envoy.service.ext_proc.v3.ProcessingRequest",
        "envoy.service.ratelimit.v3.RateLimitResponse",
    } <= set(OUR_MESSAGES)
    assert "envoy.type.v3.StatusCode" in OUR_ENUMS
    assert len(OUR_MESSAGES) >= 30


@pytest.mark.parametrize("full_name", sorted(OUR_MESSAGES))
def test_message_structure_matches_envoy(full_name: str) -> None:
    """Same field names, numbers, wire types, cardinality and oneofs as Envoy's message."""
    desc = OUR_MESSAGES[full_name]
    meta = _bp_meta(_bp_message_cls(desc))
    ours = {f.name for f in desc.fields}
    missing = {name for name in meta if name not in ours and f"{full_name}.{name}" not in INTENTIONALLY_OMITTED_FIELDS}
    assert not missing, f"{full_name}: Envoy has fields we do not define: {sorted(missing)}"
    for field in desc.fields:
        assert field.name in meta, f"{full_name}.{field.name} does not exist in Envoy's API"
        bp = meta[field.name]
        where = f"{full_name}.{field.name}"
        assert field.number == bp.number, where
        if _is_map(field):
            assert bp.proto_type == "map", where
            key, value = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
            assert (_PROTO_TYPE_NAMES[key.type], _PROTO_TYPE_NAMES[value.type]) == (
                bp.map_meta[0].proto_type,
                bp.map_meta[1].proto_type,
            ), where
            continue
        assert _PROTO_TYPE_NAMES[field.type] == bp.proto_type, where
        assert _is_repeated(field) == bp.repeated, where
        oneof = field.containing_oneof.name if field.containing_oneof else None
        assert oneof == bp.group, where


@pytest.mark.parametrize("full_name", sorted(OUR_ENUMS))
def test_enum_values_match_envoy(full_name: str) -> None:
    """Every enum carries all of Envoy's values, with the same names and numbers, and nothing more."""
    desc = OUR_ENUMS[full_name]
    bp_enum = _bp_type(full_name, desc.file.package)
    assert {v.name: v.number for v in desc.values} == {m.name: m.value for m in bp_enum}


@pytest.mark.parametrize("full_name", sorted(OUR_MESSAGES))
def test_case_sets_every_field(full_name: str) -> None:
    """The case's variants put every field (and every oneof member) on the wire at least once."""
    if full_name not in CASES:
        pytest.fail(f"no compat case for {full_name}: add one with @case({full_name!r})")
    desc = OUR_MESSAGES[full_name]
    variants = CASES[full_name]()
    assert variants and all(v.DESCRIPTOR is desc for v in variants)
    unset = [f.name for f in desc.fields if not any(_field_is_set(v, f) for v in variants)]
    assert not unset, f"{full_name}: no variant sets {unset}"


@pytest.mark.parametrize("full_name", sorted(OUR_MESSAGES))
def test_ours_to_envoy(full_name: str) -> None:
    """Encode with tokenvoy.pb, decode with envoy-data-plane, compare every field."""
    if full_name not in CASES:
        pytest.fail(f"no compat case for {full_name}")
    bp_cls = _bp_message_cls(OUR_MESSAGES[full_name])
    for variant in CASES[full_name]():
        with _quiet_deprecations():
            decoded = bp_cls.parse(variant.SerializeToString())
        assert_equivalent(variant, decoded)


@pytest.mark.parametrize("full_name", sorted(OUR_MESSAGES))
def test_envoy_to_ours(full_name: str) -> None:
    """Encode with envoy-data-plane, decode with tokenvoy.pb, compare with the original."""
    if full_name not in CASES:
        pytest.fail(f"no compat case for {full_name}")
    our_cls = GetMessageClass(OUR_MESSAGES[full_name])
    for variant in CASES[full_name]():
        theirs = to_betterproto(variant)
        assert_equivalent(variant, theirs)  # the builder itself lost nothing
        with _quiet_deprecations():
            wire = bytes(theirs)
        decoded = our_cls.FromString(wire)
        assert decoded == variant
        _assert_no_unknown_fields(decoded)


def test_is_negative_hits_is_field_4() -> None:
    """The wire number Envoy 1.40 uses for is_negative_hits, pinned."""
    desc = ratelimit_pb2.RateLimitDescriptor.DESCRIPTOR
    assert desc.fields_by_name["is_negative_hits"].number == 4
    assert ratelimit_pb2.RateLimitDescriptor(is_negative_hits=True).SerializeToString() == b"\x20\x01"


# --------------------------------------------------------------------------------------------------------
# gRPC method paths
# --------------------------------------------------------------------------------------------------------


class _RecordingChannel:
    """Stands in for grpc.Channel and records the multicallables a generated stub asks for."""

    def __init__(self) -> None:
        self.calls: dict[str, tuple[str, Any, Any]] = {}

    def _record(self, kind: str) -> Callable[..., object]:
        def factory(path: str, request_serializer: Any = None, response_deserializer: Any = None, **_: Any) -> object:
            self.calls[path] = (kind, request_serializer, response_deserializer)
            return object()

        return factory

    def __getattr__(self, kind: str) -> Callable[..., object]:
        if kind in {"unary_unary", "unary_stream", "stream_unary", "stream_stream"}:
            return self._record(kind)
        raise AttributeError(kind)


class _RecordingServer:
    """Stands in for grpc.Server and records the handlers a generated add_*_to_server registers."""

    def __init__(self) -> None:
        self.paths: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        for method, handler in handlers.items():
            self.paths[f"/{service}/{method}"] = handler


def test_ext_proc_method_path() -> None:
    channel = _RecordingChannel()
    ep_grpc.ExternalProcessorStub(channel)
    assert channel.calls == {
        EXT_PROC_PATH: (
            "stream_stream",
            ep.ProcessingRequest.SerializeToString,
            ep.ProcessingResponse.FromString,
        )
    }

    server = _RecordingServer()
    ep_grpc.add_ExternalProcessorServicer_to_server(ep_grpc.ExternalProcessorServicer(), server)
    assert list(server.paths) == [EXT_PROC_PATH]
    handler = server.paths[EXT_PROC_PATH]
    assert handler.request_streaming and handler.response_streaming

    method = ep.DESCRIPTOR.services_by_name["ExternalProcessor"].methods_by_name["Process"]
    assert f"/{method.containing_service.full_name}/{method.name}" == EXT_PROC_PATH
    assert method.input_type is ep.ProcessingRequest.DESCRIPTOR
    assert method.output_type is ep.ProcessingResponse.DESCRIPTOR
    assert method.client_streaming and method.server_streaming


def test_rls_method_path() -> None:
    channel = _RecordingChannel()
    rls_pb2_grpc.RateLimitServiceStub(channel)
    assert channel.calls == {
        RLS_PATH: (
            "unary_unary",
            rls_pb2.RateLimitRequest.SerializeToString,
            rls_pb2.RateLimitResponse.FromString,
        )
    }

    server = _RecordingServer()
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(rls_pb2_grpc.RateLimitServiceServicer(), server)
    assert list(server.paths) == [RLS_PATH]
    handler = server.paths[RLS_PATH]
    assert not handler.request_streaming and not handler.response_streaming

    method = rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"].methods_by_name["ShouldRateLimit"]
    assert f"/{method.containing_service.full_name}/{method.name}" == RLS_PATH
    assert method.input_type is rls_pb2.RateLimitRequest.DESCRIPTOR
    assert method.output_type is rls_pb2.RateLimitResponse.DESCRIPTOR
    assert not method.client_streaming and not method.server_streaming


class _EchoExtProc(ep_grpc.ExternalProcessorServicer):
    """Answers each phase with a CONTINUE for that phase, echoing the body into dynamic metadata."""

    def Process(
        self, request_iterator: Iterator[ep.ProcessingRequest], context: grpc.ServicerContext
    ) -> Iterator[ep.ProcessingResponse]:
        for request in request_iterator:
            response = ep.ProcessingResponse()
            if request.WhichOneof("request") == "request_body":
                response.request_body.response.status = ep.CommonResponse.CONTINUE_AND_REPLACE
                response.request_body.response.body_mutation.body = request.request_body.body.upper()
            else:
                response.request_headers.response.clear_route_cache = True
            response.dynamic_metadata.update({"seen": request.WhichOneof("request")})
            yield response


class _RateLimiter(rls_pb2_grpc.RateLimitServiceServicer):
    """Over limit iff any descriptor asks for more than 10 hits; echoes is_negative_hits in metadata."""

    def ShouldRateLimit(
        self, request: rls_pb2.RateLimitRequest, context: grpc.ServicerContext
    ) -> rls_pb2.RateLimitResponse:
        response = rls_pb2.RateLimitResponse(overall_code=rls_pb2.RateLimitResponse.OK)
        for descriptor in request.descriptors:
            hits = descriptor.hits_addend.value if descriptor.HasField("hits_addend") else max(1, request.hits_addend)
            code = rls_pb2.RateLimitResponse.OVER_LIMIT if hits > 10 else rls_pb2.RateLimitResponse.OK
            response.statuses.add(code=code, limit_remaining=10 - min(hits, 10))
            if code == rls_pb2.RateLimitResponse.OVER_LIMIT:
                response.overall_code = code
        response.dynamic_metadata.update({"negative": [d.is_negative_hits for d in request.descriptors]})
        return response


@pytest.fixture
def loopback_channel() -> Iterator[grpc.Channel]:
    """Our generated servicers on a real gRPC server, reachable on 127.0.0.1."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    ep_grpc.add_ExternalProcessorServicer_to_server(_EchoExtProc(), server)
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(_RateLimiter(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel
    finally:
        channel.close()
        server.stop(grace=None)


def test_envoy_client_reaches_our_ext_proc_server(loopback_channel: grpc.Channel) -> None:
    """envoy-data-plane's own stub (Envoy's method path and encoding) talks to our generated servicer."""
    from envoy_data_plane.envoy.config.core.v3 import HeaderMap, HeaderValue
    from envoy_data_plane.envoy.service.ext_proc.v3 import (
        CommonResponseResponseStatus,
        ExternalProcessorSyncStub,
        HttpBody,
        HttpHeaders,
        ProcessingRequest,
    )

    requests = [
        ProcessingRequest(
            request_headers=HttpHeaders(headers=HeaderMap(headers=[HeaderValue(key=":path", raw_value=b"/v1")]))
        ),
        ProcessingRequest(request_body=HttpBody(body=b"hello", end_of_stream=True)),
    ]
    responses = list(ExternalProcessorSyncStub(loopback_channel).process(requests))
    assert [betterproto2.which_one_of(r, "response")[0] for r in responses] == [
        "request_headers",
        "request_body",
    ]
    assert responses[0].request_headers.response.clear_route_cache is True
    body = responses[1].request_body.response
    assert body.status == CommonResponseResponseStatus.CONTINUE_AND_REPLACE
    assert body.body_mutation.body == b"HELLO"
    assert responses[1].dynamic_metadata.fields["seen"].string_value == "request_body"


def test_envoy_client_reaches_our_rls_server(loopback_channel: grpc.Channel) -> None:
    """envoy-data-plane's RLS stub reaches our servicer; hits_addend presence and field 4 survive."""
    from envoy_data_plane.envoy.extensions.common.ratelimit.v3 import (
        RateLimitDescriptor,
        RateLimitDescriptorEntry,
    )
    from envoy_data_plane.envoy.service.ratelimit.v3 import (
        RateLimitRequest,
        RateLimitResponseCode,
        RateLimitServiceSyncStub,
    )

    entry = [RateLimitDescriptorEntry(key="model", value="gpt-4o")]
    request = RateLimitRequest(
        domain="ai-gateway",
        hits_addend=50,
        descriptors=[
            RateLimitDescriptor(entries=entry, hits_addend=0),  # explicit 0: a pure check, not 50
            RateLimitDescriptor(entries=entry, hits_addend=11, is_negative_hits=True),
            RateLimitDescriptor(entries=entry),  # falls back to the request's 50
        ],
    )
    response = RateLimitServiceSyncStub(loopback_channel).should_rate_limit(request)
    assert response.overall_code == RateLimitResponseCode.OVER_LIMIT
    assert [s.code for s in response.statuses] == [
        RateLimitResponseCode.OK,
        RateLimitResponseCode.OVER_LIMIT,
        RateLimitResponseCode.OVER_LIMIT,
    ]
    assert [s.limit_remaining for s in response.statuses] == [10, 0, 0]
    negative = [v.bool_value for v in response.dynamic_metadata.fields["negative"].list_value.values]
    assert negative == [False, True, False]
