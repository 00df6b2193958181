"""Small builders for ext_proc protobuf messages (upb), shared by both filter roles."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from google.protobuf import struct_pb2

from tokenvoy.pb.envoy.config.core.v3 import base_pb2
from tokenvoy.pb.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from tokenvoy.pb.envoy.type.v3 import http_status_pb2


def header_dict(headers: ep.HttpHeaders) -> dict[str, str]:
    """Envoy sends values in ``raw_value``; older builds in ``value``."""
    return {
        h.key: (h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value) for h in headers.headers.headers
    }


def header_mutation(set_headers: Mapping[str, str] | None = None, remove: Iterable[str] = ()) -> ep.HeaderMutation:
    mutation = ep.HeaderMutation(remove_headers=list(remove))
    for key, value in (set_headers or {}).items():
        mutation.set_headers.append(
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=key, raw_value=value.encode()),
                append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
            )
        )
    return mutation


def immediate_response(
    status: int, body: bytes, content_type: str = "application/json", details: str = ""
) -> ep.ProcessingResponse:
    return ep.ProcessingResponse(
        immediate_response=ep.ImmediateResponse(
            status=http_status_pb2.HttpStatus(code=status),
            headers=header_mutation({"content-type": content_type}),
            body=body,
            details=details,
        )
    )


def metadata_struct(namespace: str, values: Mapping[str, object]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update({namespace: dict(values)})
    return struct
