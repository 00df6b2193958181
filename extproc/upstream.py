"""The upstream ext_proc stream: translate and sign the request for the backend this attempt reached.

It runs once per attempt (so a fallback to another provider is translated again), reads which backend
Envoy picked from the endpoint's metadata, and returns the translated body with the request headers
(``CONTINUE_AND_REPLACE``), so Envoy never has to send it the body.
"""

from __future__ import annotations

import logging

from tokenvoy.config.direct import CLIENT_CREDENTIAL_HEADERS
from tokenvoy.config.model import BackendRef
from tokenvoy.contract import (
    AI_GATEWAY_METADATA_NAMESPACE,
    CONTENT_LENGTH_METADATA_KEY,
    DIRECT_HEADER,
    ENDPOINT_ATTRIBUTE,
    EXT_PROC_FILTER,
    ORIGINAL_PATH_HEADER,
)
from tokenvoy.extproc.credentials import CredentialUnavailable
from tokenvoy.extproc.errors import GatewayError
from tokenvoy.extproc.pbutil import header_mutation, immediate_response
from tokenvoy.extproc.registry import Attempt, RequestContext, RequestRegistry, request_key
from tokenvoy.extproc.runtime import BackendRuntime, Runtime
from tokenvoy.extproc.translate.base import ClientAPI
from tokenvoy.pb.envoy.service.ext_proc.v3 import external_processor_pb2 as ep

log = logging.getLogger(__name__)

_INTERNAL_HEADERS = (ORIGINAL_PATH_HEADER,)
# What every provider is asked for: an uncompressed answer, explicitly (no accept-encoding at all would mean
# "any coding" per RFC 9110). extproc decodes gzip/deflate/br anyway (decoding.py), but compressed token
# streams can sit in a compressor's buffer, and decoding costs the hot path; LLM answers are small. A
# backend's headerMutation may still ask for compression (applied last).
_ACCEPT_ENCODING = {"accept-encoding": "identity"}
# Headers that carry a provider credential. When the gateway holds a backend's key, none of the
# client's go out with it; and no attempt's key may reach the backend of a later attempt (config/direct.py).
CREDENTIAL_HEADERS = CLIENT_CREDENTIAL_HEADERS


def picked_endpoint(message: ep.ProcessingRequest) -> str | None:
    """The endpoint id Envoy's load balancer picked for this attempt (see ``render/envoy.py``)."""
    attributes = message.attributes.get(EXT_PROC_FILTER)
    if attributes is None:
        return None
    value = attributes.fields.get(ENDPOINT_ATTRIBUTE)
    return value.string_value if value is not None and value.string_value else None


class UpstreamStream:
    def __init__(self, runtime: Runtime, registry: RequestRegistry, previous: tuple[Runtime, ...] = ()) -> None:
        self._runtime = runtime
        self._registry = registry
        self._previous = previous  # configs before the last reloads: Envoy may still route by one of them
        self.done = False  # only the request headers are sent to this filter
        self._api = ClientAPI.OPENAI_CHAT  # the client's API once the request is found: its error shape

    def handle(self, message: ep.ProcessingRequest) -> ep.ProcessingResponse:
        self.done = True
        try:
            if message.WhichOneof("request") != "request_headers":
                return ep.ProcessingResponse()
            return self._request_headers(message)
        except GatewayError as error:
            return immediate_response(error.status, self._api.error_body(error), details="tokenvoy")
        except Exception:
            log.exception("extproc upstream: unexpected error")
            error = GatewayError(500, "internal error in the tokenvoy gateway; see the extproc log")
            return immediate_response(500, self._api.error_body(error), details="tokenvoy_internal_error")

    def close(self) -> None:
        return None

    def _config_of(self, context: RequestContext, endpoint: str | None) -> Runtime:
        """The config that knows the endpoint Envoy picked: the request's own (the one its router stream
        started with), else, around a reload, the current or a previous one. An endpoint id names its
        backend, so whichever config knows it agrees on where the request goes."""
        own = context.runtime or self._runtime
        if endpoint is None or endpoint in own.endpoints:
            return own
        for runtime in (self._runtime, *self._previous):
            if endpoint in runtime.endpoints:
                return runtime
        return own

    def _request_headers(self, message: ep.ProcessingRequest) -> ep.ProcessingResponse:
        context = self._registry.get(request_key(message))
        if context is None:
            raise GatewayError(
                500,
                "tokenvoy extproc lost this request's context: the router-level and upstream ext_proc streams "
                "of one request must reach the same extproc process",
            )
        self._api = context.request.api
        endpoint = picked_endpoint(message)
        runtime = self._config_of(context, endpoint)
        picked = runtime.endpoints.get(endpoint) if endpoint else None
        if picked is None:
            raise GatewayError(
                500, f"Envoy picked endpoint {endpoint!r}, unknown to extproc: are Envoy and extproc on one config?"
            )
        if context.direct:
            # The router already edited the request for a direct rule, but Envoy sent it through the cluster with
            # this filter (its routes changed meanwhile): only the key is missing, and the client's are still there.
            auth = picked[0].auth_headers
            stale = [name for name in CREDENTIAL_HEADERS if name not in auth] if auth else []
            common = ep.CommonResponse(header_mutation=header_mutation(auth, stale))
            return ep.ProcessingResponse(request_headers=ep.HeadersResponse(response=common))
        common, length = attempt_edit(runtime, context, endpoint or "", picked, _method(message, picked[0]))
        response = ep.ProcessingResponse(request_headers=ep.HeadersResponse(response=common))
        # Envoy drops content-length when it replaces a body (and a chunked client request never had one):
        # the upstream header_mutation filter restores it from this (render/bootstrap.py).
        namespace = response.dynamic_metadata.fields[AI_GATEWAY_METADATA_NAMESPACE].struct_value
        namespace.fields[CONTENT_LENGTH_METADATA_KEY].string_value = str(length)
        return response


def _method(message: ep.ProcessingRequest, backend: BackendRuntime) -> str:
    """The request's method, read only for a signer that covers it (SigV4)."""
    if backend.signer is None or not backend.signer.needs_request:
        return "POST"
    for header in message.request_headers.headers.headers:
        if header.key == ":method":
            return header.raw_value.decode() if header.raw_value else header.value
    return "POST"


def attempt_edit(
    runtime: Runtime,
    context: RequestContext,
    endpoint: str,
    picked: tuple[BackendRuntime, BackendRef],
    method: str,
    direct: bool = False,
) -> tuple[ep.CommonResponse, int]:
    """The request edit of one attempt to one backend: path, translated body, credentials, mutations; and the
    length of the body sent. The upstream filter sends it per attempt; with ``--translate-in-router`` (Envoy
    Gateway's router-level ext_proc) or for a direct rule the router stream sends it once, with the request body;
    ``direct``: without the API key, which Envoy's credential_injector adds (tokenvoy/config/direct.py)."""
    backend, ref = picked
    request = context.request
    translator = backend.translator(request.api)
    if translator is None:
        raise GatewayError(
            422,
            f"{request.path} requests cannot be sent to backend {backend.backend.name!r} "
            f"(schema {backend.backend.schema})",
        )
    model = ref.model_name_override or request.model
    upstream = translator.translate_request(request, backend.backend, model)
    mutations = runtime.mutations.get(endpoint or "")
    if mutations is not None and mutations.edits_body:
        upstream.body = mutations.apply_body(request.raw if upstream.body is None else upstream.body)
    elif upstream.body is None and "content-length" in context.touched_headers:
        upstream.body = request.raw  # an earlier attempt replaced the body: send the client's again
    context.attempts.append(Attempt(backend.backend.name, model, ref.model_name_override, translator))
    auth = {DIRECT_HEADER: "1"} if direct else backend.auth_headers
    set_headers = {":path": upstream.path, **_ACCEPT_ENCODING, **auth, **upstream.set_headers}
    common = ep.CommonResponse()
    if upstream.body is not None:
        common.status = ep.CommonResponse.CONTINUE_AND_REPLACE
        common.body_mutation.body = upstream.body
        set_headers["content-length"] = str(len(upstream.body))
    remove = {*_INTERNAL_HEADERS, *upstream.remove_headers} - set_headers.keys()
    if (backend.auth_headers or backend.signer is not None) and not direct:
        # (direct: the route removes them, after the rate-limit filter, whose budgets may key on one)
        remove.update(name for name in CREDENTIAL_HEADERS if name not in set_headers)
    if context.trace_headers is not None:  # tracing on: the provider's spans join the gateway's trace
        set_headers.update(context.trace_headers)
    if mutations is not None:  # headerMutation: applied last
        mutations.apply_headers(set_headers, remove)
    if backend.signer is not None:  # after every edit: SigV4 covers the final path and body
        body = upstream.body if upstream.body is not None else request.raw
        _sign(backend, method, set_headers, remove, body)
    _undo_earlier_attempts(context, set_headers, remove)
    common.header_mutation.CopyFrom(header_mutation(set_headers, sorted(remove)))
    return common, len(upstream.body if upstream.body is not None else request.raw)


def _sign(backend: BackendRuntime, method: str, set_headers: dict[str, str], remove: set[str], body: bytes) -> None:
    """Add the policy's credential headers (they win over any mutation) and drop the client's."""
    signer = backend.signer
    assert signer is not None
    # The host the provider receives is the Backend's hostname: the route's auto_host_rewrite sets it when
    # Envoy picks the endpoint, *after* this filter ran (measured with Envoy 1.40: the :authority this stream
    # sees is still the client's, e.g. 127.0.0.1:1975, while the provider gets Host: the endpoint's name).
    authority = backend.backend.endpoint.host
    try:
        signed = signer.sign(method, authority, set_headers[":path"], body)
    except CredentialUnavailable as exc:
        raise GatewayError(503, str(exc)) from None
    set_headers.update(signed)
    remove.difference_update(signed)
    remove.update(name for name in signer.removes if name not in signed)


def _undo_earlier_attempts(context: RequestContext, set_headers: dict[str, str], remove: set[str]) -> None:
    """Envoy's upstream filters edit the request's one header map, so a retry starts from the headers the
    previous attempt sent: put back what the client sent for every header an attempt changed."""
    original = context.client_headers
    for name in context.touched_headers:
        if name in set_headers or name in remove:
            continue
        if name in original:
            set_headers[name] = original[name]
        else:
            remove.add(name)
    context.touched_headers.update(set_headers, remove)
