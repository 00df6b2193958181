"""The upstream ext_proc stream of an extproc that keeps no request state (``--stateless``).

The same edit as ``upstream.py`` (``attempt_edit``: translate, sign, mutate, undo earlier attempts), made from
what Envoy forwards to this stream instead of the router stream's memory: the request's ``tokenvoy.request``
metadata (the client's body included) and the previous attempt's ``tokenvoy.attempt`` metadata. Like the
in-process stream it gets the request headers only and answers with the translated body.
"""

from __future__ import annotations

import logging

import orjson

from tokenvoy.contract import AI_GATEWAY_METADATA_NAMESPACE, CONTENT_LENGTH_METADATA_KEY
from tokenvoy.extproc.carried import (
    CarriedAttempt,
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

_NOT_REACHED = CarriedAttempt("", {})  # this attempt answered itself: no provider's answer to translate


class CarriedUpstreamStream:
    def __init__(self, runtime: Runtime, previous: tuple[Runtime, ...] = ()) -> None:
        self._runtime = runtime
        self._previous = previous  # configs before the last reloads: Envoy may still route by one of them
        self.done = False  # only the request headers are sent to this filter
        self._api = ClientAPI.OPENAI_CHAT  # the client's API once known: its error shape

    def handle(self, message: ep.ProcessingRequest) -> ep.ProcessingResponse:
        self.done = True
        try:
            if message.WhichOneof("request") != "request_headers":
                return ep.ProcessingResponse()
            return self._request_headers(message)
        except GatewayError as error:
            return self._refuse(error, "tokenvoy")
        except Exception:
            log.exception("extproc upstream: unexpected error")
            error = GatewayError(500, "internal error in the tokenvoy gateway; see the extproc log")
            return self._refuse(error, "tokenvoy_internal_error")

    def close(self) -> None:
        return None

    def _refuse(self, error: GatewayError, details: str) -> ep.ProcessingResponse:
        reply = immediate_response(error.status, self._api.error_body(error), details=details)
        # The router stream must not take this reply for the answer of an earlier attempt's provider.
        write_attempt(reply, _NOT_REACHED)
        return reply

    def _runtime_for(self, endpoint: str | None) -> Runtime:
        """The config that knows the endpoint Envoy picked: the current one, else, around a reload, a previous
        one. An endpoint id names its backend, so whichever config knows it agrees on where the request goes."""
        if endpoint is None or endpoint in self._runtime.endpoints:
            return self._runtime
        for runtime in self._previous:
            if endpoint in runtime.endpoints:
                return runtime
        return self._runtime

    def _request_headers(self, message: ep.ProcessingRequest) -> ep.ProcessingResponse:
        carried = read_request(message)
        if carried is None:
            raise GatewayError(
                500,
                "Envoy forwarded no tokenvoy.request metadata to the upstream ext_proc filter: an extproc run with "
                "--stateless needs Envoy's config rendered for it (tokenvoy run --extproc-workers)",
            )
        self._api = carried.api
        endpoint = picked_endpoint(message)
        runtime = self._runtime_for(endpoint)
        picked = runtime.endpoints.get(endpoint) if endpoint else None
        if picked is None:
            raise GatewayError(
                500, f"Envoy picked endpoint {endpoint!r}, unknown to extproc: are Envoy and extproc on one config?"
            )
        seen = header_dict(message.request_headers)  # earlier attempts' edits included
        attempt = read_attempt(message)
        previous = attempt.originals if attempt is not None else {}
        original = client_headers(seen, previous)
        raw = carried.body
        try:
            parsed = orjson.loads(raw)  # the router stream checked this very body already
        except orjson.JSONDecodeError as exc:
            raise GatewayError(400, f"the request body is not valid JSON: {exc}") from None
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
        common, length = attempt_edit(runtime, context, endpoint or "", picked, original.get(":method", "POST"))
        response = ep.ProcessingResponse(request_headers=ep.HeadersResponse(response=common))
        # Envoy drops content-length when it replaces a body: the upstream header_mutation filter restores it.
        namespace = response.dynamic_metadata.fields[AI_GATEWAY_METADATA_NAMESPACE].struct_value
        namespace.fields[CONTENT_LENGTH_METADATA_KEY].string_value = str(length)
        originals = dict(previous)
        for name in context.touched_headers:
            if name not in originals:
                originals[name] = seen.get(name)  # untouched until now: still the client's value
        write_attempt(response, CarriedAttempt(endpoint or "", originals))
        return response
