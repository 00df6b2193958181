"""A request's state carried in Envoy's dynamic metadata, for extproc processes that share no memory.

With several extproc processes behind one Envoy (``tokenvoy run --extproc-workers N``), the router stream of
a request and each of its upstream attempts may reach different processes. So nothing one stream learnt
is kept in process memory for another: the router stream writes what an attempt needs into the
``tokenvoy.request`` namespace with its request body answer, and each attempt's upstream stream writes into
``tokenvoy.attempt`` which endpoint it translated for and the client's values of every header the attempts
changed (Envoy's upstream filters edit the request's one header map, so a retry starts from the previous
attempt's headers). Envoy forwards both namespaces to the filters that read them (``metadata_options``,
``render/bootstrap.py``): the next attempt puts the client's headers back, and the router stream, when the
answer comes, builds the translator of the endpoint that answered. The body is not carried: the upstream
filter gets it from Envoy (buffered), as the client sent it, on every attempt.

Pure protobuf in and out; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import struct_pb2

from tokenvoy.apis.client_apis import ClientAPI
from tokenvoy.contract import ATTEMPT_METADATA_NAMESPACE, REQUEST_METADATA_NAMESPACE
from tokenvoy.pb.envoy.service.ext_proc.v3 import external_processor_pb2 as ep

_API, _PATH, _MODEL, _STREAM, _USAGE, _TRACE = "api", "path", "model", "stream", "needs_usage", "trace"
_ENDPOINT, _ORIGINALS = "endpoint", "originals"
_APIS = {api.value: api for api in ClientAPI}


@dataclass(slots=True, frozen=True)
class CarriedRequest:
    """What the router stream knew that an upstream attempt needs (the body aside)."""

    api: ClientAPI
    path: str  # the client's ``:path``, query included (an attempt rewrites the header)
    model: str  # the client's model (from the body, or from the path for the Gemini API)
    stream: bool
    needs_usage: bool
    trace_headers: dict[str, str] | None = None  # traceparent/tracestate for the provider when tracing is on


@dataclass(slots=True, frozen=True)
class CarriedAttempt:
    """What the last attempt's upstream stream left: its endpoint ("" when it answered itself, e.g. an error)
    and the client's value of each header an attempt changed (None: the client did not send it)."""

    endpoint: str
    originals: dict[str, str | None]


def write_request(response: ep.ProcessingResponse, carried: CarriedRequest) -> None:
    """Add the request's namespace to ``response``'s dynamic metadata (other namespaces kept)."""
    fields = response.dynamic_metadata.fields[REQUEST_METADATA_NAMESPACE].struct_value.fields
    fields[_API].string_value = carried.api.value
    fields[_PATH].string_value = carried.path
    fields[_MODEL].string_value = carried.model
    fields[_STREAM].bool_value = carried.stream
    fields[_USAGE].bool_value = carried.needs_usage
    if carried.trace_headers:
        trace = fields[_TRACE].struct_value.fields
        for name, value in carried.trace_headers.items():
            trace[name].string_value = value


def _namespace(message: ep.ProcessingRequest, namespace: str) -> struct_pb2.Struct | None:
    return message.metadata_context.filter_metadata.get(namespace)


def read_request(message: ep.ProcessingRequest) -> CarriedRequest | None:
    """The request's namespace as Envoy forwarded it, or None (absent, or not written by tokenvoy)."""
    struct = _namespace(message, REQUEST_METADATA_NAMESPACE)
    if struct is None:
        return None
    fields = struct.fields
    api = _APIS.get(fields[_API].string_value) if _API in fields else None
    if api is None or _PATH not in fields or _MODEL not in fields:
        return None
    trace = None
    if _TRACE in fields:
        trace = {name: value.string_value for name, value in fields[_TRACE].struct_value.fields.items()}
    return CarriedRequest(
        api=api,
        path=fields[_PATH].string_value,
        model=fields[_MODEL].string_value,
        stream=fields[_STREAM].bool_value if _STREAM in fields else False,
        needs_usage=fields[_USAGE].bool_value if _USAGE in fields else False,
        trace_headers=trace,
    )


def write_attempt(response: ep.ProcessingResponse, attempt: CarriedAttempt) -> None:
    """Add the attempt's namespace to ``response``'s dynamic metadata (other namespaces kept). Envoy merges a
    namespace key by key, so both keys are always written whole."""
    fields = response.dynamic_metadata.fields[ATTEMPT_METADATA_NAMESPACE].struct_value.fields
    fields[_ENDPOINT].string_value = attempt.endpoint
    originals = fields[_ORIGINALS].struct_value
    originals.SetInParent()  # an empty struct still replaces the previous attempt's
    for name, value in attempt.originals.items():
        if value is None:
            originals.fields[name].null_value = struct_pb2.NULL_VALUE
        else:
            originals.fields[name].string_value = value


def read_attempt(message: ep.ProcessingRequest) -> CarriedAttempt | None:
    """The last attempt's namespace as Envoy forwarded it, or None (no attempt wrote it yet)."""
    struct = _namespace(message, ATTEMPT_METADATA_NAMESPACE)
    if struct is None or _ENDPOINT not in struct.fields:
        return None
    originals: dict[str, str | None] = {}
    if _ORIGINALS in struct.fields:
        for name, value in struct.fields[_ORIGINALS].struct_value.fields.items():
            originals[name] = value.string_value if value.WhichOneof("kind") == "string_value" else None
    return CarriedAttempt(struct.fields[_ENDPOINT].string_value, originals)


def client_headers(headers: dict[str, str], originals: dict[str, str | None]) -> dict[str, str]:
    """The client's request headers, from the ones an attempt sees and what earlier attempts changed."""
    if not originals:
        return headers
    restored = dict(headers)
    for name, value in originals.items():
        if value is None:
            restored.pop(name, None)
        else:
            restored[name] = value
    return restored
