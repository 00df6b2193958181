"""The upstream ext_proc stream: translate and sign the request for the backend this attempt reached.

It runs once per attempt (so a fallback to another provider is translated again), reads which backend
Envoy picked from the endpoint's metadata, and returns the translated body with the request headers
(``CONTINUE_AND_REPLACE``), so Envoy never has to send it the body.
"""

from __future__ import annotations

import logging

from tokenvoy.config.model import ORIGINAL_PATH_HEADER
from tokenvoy.extproc.errors import GatewayError, openai_error_body
from tokenvoy.extproc.pbutil import header_dict, header_mutation, immediate_response
from tokenvoy.extproc.registry import REQUEST_ID_HEADER, Attempt, RequestRegistry
from tokenvoy.extproc.runtime import Runtime
from tokenvoy.pb.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from tokenvoy.render.envoy import ENDPOINT_ATTRIBUTE

log = logging.getLogger(__name__)

EXT_PROC_ATTRIBUTES_KEY = "envoy.filters.http.ext_proc"
_INTERNAL_HEADERS = (REQUEST_ID_HEADER, ORIGINAL_PATH_HEADER)


def picked_endpoint(message: ep.ProcessingRequest) -> str | None:
    """The endpoint id Envoy's load balancer picked for this attempt (see ``render/envoy.py``)."""
    attributes = message.attributes.get(EXT_PROC_ATTRIBUTES_KEY)
    if attributes is None:
        return None
    value = attributes.fields.get(ENDPOINT_ATTRIBUTE)
    return value.string_value if value is not None and value.string_value else None


class UpstreamStream:
    def __init__(self, runtime: Runtime, registry: RequestRegistry) -> None:
        self._runtime = runtime
        self._registry = registry
        self.done = False  # only the request headers are sent to this filter

    def handle(self, message: ep.ProcessingRequest) -> ep.ProcessingResponse:
        self.done = True
        try:
            if message.WhichOneof("request") != "request_headers":
                return ep.ProcessingResponse()
            return self._request_headers(message)
        except GatewayError as error:
            return immediate_response(error.status, openai_error_body(error), details="tokenvoy")
        except Exception:
            log.exception("extproc upstream: unexpected error")
            error = GatewayError(500, "internal error in the tokenvoy gateway; see the extproc log")
            return immediate_response(500, openai_error_body(error), details="tokenvoy_internal_error")

    def close(self) -> None:
        return None

    def _request_headers(self, message: ep.ProcessingRequest) -> ep.ProcessingResponse:
        headers = header_dict(message.request_headers)
        context = self._registry.get(headers.get(REQUEST_ID_HEADER))
        if context is None:
            raise GatewayError(
                500,
                "tokenvoy extproc lost this request's context: the router-level and upstream ext_proc streams "
                "of one request must reach the same extproc process",
            )
        endpoint = picked_endpoint(message)
        picked = self._runtime.endpoints.get(endpoint) if endpoint else None
        if picked is None:
            raise GatewayError(
                500, f"Envoy picked endpoint {endpoint!r}, unknown to extproc: are Envoy and extproc on one config?"
            )
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
        context.attempts.append(Attempt(backend.backend.name, model, ref.model_name_override, translator))
        set_headers = {":path": upstream.path, **backend.auth_headers, **upstream.set_headers}
        common = ep.CommonResponse()
        if upstream.body is not None:
            common.status = ep.CommonResponse.CONTINUE_AND_REPLACE
            common.body_mutation.body = upstream.body
            set_headers["content-length"] = str(len(upstream.body))
        common.header_mutation.CopyFrom(header_mutation(set_headers, (*_INTERNAL_HEADERS, *upstream.remove_headers)))
        return ep.ProcessingResponse(request_headers=ep.HeadersResponse(response=common))
