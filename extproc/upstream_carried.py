"""The upstream ext_proc stream of an extproc that keeps no request state (``--stateless``).

The same edit as ``upstream.py`` (``attempt_edit``: translate, sign, mutate, undo earlier attempts), made from
what Envoy gives this stream instead of the router stream's memory: the request's ``tokenvoy.request``
metadata, the previous attempt's ``tokenvoy.attempt`` metadata and the client's body, which the filter gets
buffered (``render/bootstrap.py``). The request headers are answered at once; the edit goes with the
body answer, while Envoy still holds the headers.
"""

from __future__ import annotations

import logging

import orjson

from tokenvoy.contract import AI_GATEWAY_METADATA_NAMESPACE, CONTENT_LENGTH_METADATA_KEY
from tokenvoy.extproc.carried import (
    CarriedAttempt,
    CarriedRequest,
    client_headers,
    read_attempt,
    read_request,
    write_attempt,
)
from tokenvoy.extproc.errors import GatewayError
from tokenvoy.extproc.pbutil import header_dict, immediate_response
from tokenvoy.extproc.registry import RequestContext
from tokenvoy.extproc.runtime import Runtime
from tokenvoy.extproc.translate.base import ClientAPI, ClientRequest
from tokenvoy.extproc.upstream import attempt_edit, picked_endpoint
from tokenvoy.pb.envoy.service.ext_proc.v3 import external_processor_pb2 as ep

log = logging.getLogger(__name__)

_CONTINUE_HEADERS = ep.ProcessingResponse(request_headers=ep.HeadersResponse())
_NOT_REACHED = CarriedAttempt("", {})  # this attempt answered itself: no provider's answer to translate


class CarriedUpstreamStream:
    def __init__(self, runtime: Runtime, previous: tuple[Runtime, ...] = ()) -> None:
        self._runtime = runtime
        self._previous = previous  # configs before the last reloads: Envoy may still route by one of them
        self.done = False
        self._api = ClientAPI.OPENAI_CHAT  # the client's API once known: its error shape
        self._request: CarriedRequest | None = None
        self._attempt: CarriedAttempt | None = None  # what the attempts before this one left
        self._headers: dict[str, str] = {}  # as this attempt got them (earlier attempts' edits included)
        self._endpoint: str | None = None

    def handle(self, message: ep.ProcessingRequest) -> ep.ProcessingResponse:
        try:
            kind = message.WhichOneof("request")
            if kind == "request_headers":
                return self._request_headers(message)
            self.done = True
            if kind == "request_body":
                return self._request_body(message.request_body)
            return ep.ProcessingResponse()
        except GatewayError as error:
            return self._refuse(error, "tokenvoy")
        except Exception:
            log.exception("extproc upstream: unexpected error")
            error = GatewayError(500, "internal error in the tokenvoy gateway; see the extproc log")
            return self._refuse(error, "tokenvoy_internal_error")

    def close(self) -> None:
        return None

    def _refuse(self, error: GatewayError, details: str) -> ep.ProcessingResponse:
        self.done = True
        reply = immediate_response(error.status, self._api.error_body(error), details=details)
        # The router stream must not take this reply for the answer of an earlier attempt's provider.
        write_attempt(reply, _NOT_REACHED)
        return reply

    def _request_headers(self, message: ep.ProcessingRequest) -> ep.ProcessingResponse:
        request = read_request(message)
        if request is None:
            raise GatewayError(
                500,
                "Envoy forwarded no tokenvoy.request metadata to the upstream ext_proc filter: an extproc run with "
                "--stateless needs Envoy's config rendered for it (tokenvoy run --extproc-workers)",
            )
        self._request, self._api = request, request.api
        self._attempt = read_attempt(message)
        self._endpoint = picked_endpoint(message)
        self._headers = header_dict(message.request_headers)
        if message.request_headers.end_of_stream:
            raise GatewayError(500, "the upstream ext_proc filter got a request without its body")
        return _CONTINUE_HEADERS

    def _runtime_for(self, endpoint: str | None) -> Runtime:
        """The config that knows the endpoint Envoy picked: the current one, else, around a reload, a previous
        one. An endpoint id names its backend, so whichever config knows it agrees on where the request goes."""
        if endpoint is None or endpoint in self._runtime.endpoints:
            return self._runtime
        for runtime in self._previous:
            if endpoint in runtime.endpoints:
                return runtime
        return self._runtime

    def _request_body(self, body: ep.HttpBody) -> ep.ProcessingResponse:
        carried, endpoint = self._request, self._endpoint
        assert carried is not None  # the headers came first
        runtime = self._runtime_for(endpoint)
        picked = runtime.endpoints.get(endpoint) if endpoint else None
        if picked is None:
            raise GatewayError(
                500, f"Envoy picked endpoint {endpoint!r}, unknown to extproc: are Envoy and extproc on one config?"
            )
        raw = body.body
        try:
            parsed = orjson.loads(raw)  # the router stream checked this very body already
        except orjson.JSONDecodeError as exc:
            raise GatewayError(400, f"the request body is not valid JSON: {exc}") from None
        previous = self._attempt.originals if self._attempt is not None else {}
        original = client_headers(self._headers, previous)
        request = ClientRequest(
            api=carried.api,
            path=carried.path,
            raw=raw,
            body=parsed,
            model=carried.model,
            stream=carried.stream,
            needs_usage=carried.needs_usage,
            headers=original,
        )
        # The context attempt_edit reads: no rule needed (the endpoint names the backendRef).
        context = RequestContext(request, None, original)  # type: ignore[arg-type]
        context.touched_headers.update(previous)
        context.trace_headers = carried.trace_headers
        method = original.get(":method", "POST")
        common, length = attempt_edit(runtime, context, endpoint or "", picked, method)
        common.status = ep.CommonResponse.CONTINUE  # CONTINUE_AND_REPLACE is for a headers response
        response = ep.ProcessingResponse(request_body=ep.BodyResponse(response=common))
        # Envoy drops content-length when it replaces a body: the upstream header_mutation filter restores it.
        namespace = response.dynamic_metadata.fields[AI_GATEWAY_METADATA_NAMESPACE].struct_value
        namespace.fields[CONTENT_LENGTH_METADATA_KEY].string_value = str(length)
        originals = dict(previous)
        for name in context.touched_headers:
            if name not in originals:
                originals[name] = self._headers.get(name)  # untouched until now: still the client's value
        write_attempt(response, CarriedAttempt(endpoint or "", originals))
        return response
