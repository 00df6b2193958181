"""The router-level ext_proc stream: parse the client request once, pick the rule, read the response.

Phases: request headers → request body (buffered) → response headers → response body
(buffered, or streamed by mode override for ``stream: true`` with a 200). The usage metadata is attached
to the last response body message, where the rate-limit filter's stream-done charge reads it. An answer
whose body no handler reads (Envoy's own reply, a provider error that passes through as it is) ends the
stream at its headers: their reply switches the body off (``mode_override``), one message fewer
(docs/architecture.md, "The ext_proc messages of a request"). A compressed
answer (gzip, deflate, br) is decoded here, before any translator reads it (``decoding.py``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING
from urllib.parse import unquote

import orjson

from tokenvoy.apis.client_apis import ENDPOINTS, FAMILIES, Family
from tokenvoy.contract import (
    AI_GATEWAY_METADATA_NAMESPACE,
    BACKEND_NAME_KEY,
    COST_HEADER,
    COST_USD_MICROS_KEY,
    DIRECT_HEADER,
    MODEL_HEADER,
    MODEL_NAME_OVERRIDE_KEY,
    ORIGINAL_PATH_HEADER,
    ORIGINAL_PATH_KEY,
    RESPONSE_MODEL_KEY,
    ROUTE_NAME_KEY,
    TOKEN_LATENCY_ITL_KEY,
    TOKEN_LATENCY_TTFT_KEY,
    endpoint_id,
)
from tokenvoy.extproc.carried import CarriedRequest, read_attempt, write_request
from tokenvoy.extproc.costs import CallContext
from tokenvoy.extproc.decoding import DecodeError, Decoder, UnsupportedEncoding, decoder_for
from tokenvoy.extproc.errors import GatewayError, UpstreamShapeError
from tokenvoy.extproc.estimate import prompt_tokens, reservation_values
from tokenvoy.extproc.gemini_paths import GeminiCall, gemini_call, is_gemini_path
from tokenvoy.extproc.observe import CompletedRequest, NoObserver, RequestObserver
from tokenvoy.extproc.pbutil import header_dict, header_mutation, immediate_response, metadata_struct
from tokenvoy.extproc.pricing import usd_text
from tokenvoy.extproc.registry import Attempt, RequestContext, RequestRegistry, request_key
from tokenvoy.extproc.request import check_identity_headers, read_body, read_gemini_body
from tokenvoy.extproc.runtime import Runtime
from tokenvoy.extproc.streamcharge import StreamMeter, precharged_output, running_charge
from tokenvoy.extproc.translate.base import ClientAPI, ClientRequest, Translator, TranslatorBase
from tokenvoy.extproc.upstream import attempt_edit
from tokenvoy.extproc.usage import TokenUsage
from tokenvoy.pb.envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as pm
from tokenvoy.pb.envoy.service.ext_proc.v3 import external_processor_pb2 as ep

if TYPE_CHECKING:
    from tokenvoy.extproc.tracing import Tracing

log = logging.getLogger(__name__)

# Set by Envoy's rate-limit filter on the 429 it answers itself (a budget refusal).
RATELIMITED_HEADER = "x-envoy-ratelimited"
ANTHROPIC_PREFIXES = FAMILIES[Family.ANTHROPIC].roots  # errors under it, even for unknown paths, in Anthropic's shape
MODELS_PATH = FAMILIES[Family.OPENAI].models_path
ANTHROPIC_MODELS_PATH = FAMILIES[Family.ANTHROPIC].models_path
GEMINI_MODELS_PATH = FAMILIES[Family.GOOGLE].models_path
_STREAMED = pm.ProcessingMode(response_body_mode=pm.ProcessingMode.STREAMED)
# Honoured by Envoy only in the reply to a headers message (measured with Envoy 1.40: a mode_override on the
# request body's reply is ignored), so the answer's body is switched off from its headers' reply.
_NO_BODY = pm.ProcessingMode(response_body_mode=pm.ProcessingMode.NONE)
_CONTINUE_HEADERS = ep.ProcessingResponse(request_headers=ep.HeadersResponse())


class RouterStream:
    def __init__(
        self,
        runtime: Runtime,
        registry: RequestRegistry,
        observer: RequestObserver | None = None,
        tracing: Tracing | None = None,
        translate_in_router: bool = False,
        direct_routes: bool = False,
        stateless: bool = False,
        previous: tuple[Runtime, ...] = (),
    ) -> None:
        self._runtime = runtime
        # Envoy has direct routes (tokenvoy run): a direct rule's request is edited here, once, and skips the
        # upstream filter (tokenvoy/config/direct.py).
        self._direct_routes = direct_routes
        self._previous = previous  # configs before the last reloads: an attempt Envoy routed by one (stateless)
        # The upstream attempts may run in other extproc processes: what they need goes into Envoy's dynamic
        # metadata, and the answering attempt is read back from it (carried.py), not from the registry.
        self._stateless = stateless
        # No upstream ext_proc (Envoy Gateway's EnvoyExtensionPolicy cannot add one): this stream translates
        # and signs the request for the rule's first backend itself, once (docs/envoy-gateway.md).
        self._translate_in_router = translate_in_router
        self._tracing = tracing  # None: tracing off (tokenvoy.extproc.tracing)
        self._registry = registry
        self._observer = observer or NoObserver()
        self._started = time.monotonic()
        self._handler_seconds = 0.0
        self._error_type: str | None = None
        self._headers: dict[str, str] = {}
        self._request_id: str | None = None  # the registry key, from Envoy's request attributes
        self._context: RequestContext | None = None
        self._gemini: GeminiCall | None = None  # a Gemini API call: its model and method are in the path
        self._status = 0
        self._first_chunk_at: float | None = None
        self._last_chunk_at: float | None = None
        self._decoder: Decoder | None = None  # undoes the provider's content-encoding (decoding.py)
        self._undecoded = False  # a content-encoding extproc cannot undo: the answer goes through untouched
        self._corrupt = False  # a streamed answer proved undecodable: the client got an error event, no more
        self._stream_failed = False  # a streamed answer proved malformed: the client got an error event, no more
        self._costed: TokenUsage | None = None  # the usage whose costs (CEL included) are in the metadata
        self._error_headers: dict[str, str] = {}  # a provider error's headers, for translate_error
        self._error_chunks: list[bytes] = []  # a provider error's body so far (translated whole)
        self._prompt_estimate = 0  # a budgeted stream's estimated input tokens (its charge if cut short)
        self._meter: StreamMeter | None = None  # a budgeted 200 stream: what the client got so far
        self._cost_micros: int | None = None  # the request's USD cost (price catalog), once its usage is known
        self.done = False  # True once the last message Envoy will send has been answered
        self.messages: dict[str, int] = {}  # messages Envoy sent on this stream, by phase (the metrics read it)

    def handle(self, message: ep.ProcessingRequest) -> ep.ProcessingResponse:
        entered = time.perf_counter()
        kind = message.WhichOneof("request") or ""
        self.messages[kind] = self.messages.get(kind, 0) + 1
        try:
            response = self._handle(message)
            if message.HasField("request_headers"):
                response = self._record_original_path(response)
            return response
        finally:
            self._handler_seconds += time.perf_counter() - entered

    def _record_original_path(self, response: ep.ProcessingResponse) -> ep.ProcessingResponse:
        """The client's path, for the access log: the upstream filter rewrites ``:path`` in the request's
        one header map, so by the time Envoy logs, ``%REQ(:PATH)%`` is the provider's path."""
        path = self._headers.get(":path")
        if not path:
            return response
        if response is _CONTINUE_HEADERS:  # shared constant: never mutate it
            response = ep.ProcessingResponse(request_headers=ep.HeadersResponse())
        response.dynamic_metadata.CopyFrom(metadata_struct(AI_GATEWAY_METADATA_NAMESPACE, {ORIGINAL_PATH_KEY: path}))
        return response

    def _handle(self, message: ep.ProcessingRequest) -> ep.ProcessingResponse:
        try:
            kind = message.WhichOneof("request")
            if kind == "request_headers":
                return self._request_headers(message)
            if kind == "request_body":
                return self._request_body(message.request_body)
            if kind == "response_headers":
                if self._stateless:
                    self._adopt_attempt(message)
                return self._response_headers(message.response_headers)
            if kind == "response_body":
                return self._response_body(message.response_body)
            return _continue_for(kind)
        except GatewayError as error:
            return self._reject(error, "tokenvoy")
        except Exception:
            log.exception("extproc router: unexpected error (request %s)", self._request_id)
            error = GatewayError(500, "internal error in the tokenvoy gateway; see the extproc log")
            return self._reject(error, "tokenvoy_internal_error")

    def _reject(self, error: GatewayError, details: str) -> ep.ProcessingResponse:
        self.done = True
        self._status = error.status
        self._error_type = error.error_type
        return immediate_response(error.status, self._client_api().error_body(error), details=details)

    def _client_api(self) -> ClientAPI:
        """The API whose error shape the client expects, from the path it called."""
        path = self._headers.get(":path", "").split("?", 1)[0]
        api = ENDPOINTS.get(path)
        if api is not None:
            return api
        if is_gemini_path(path):
            return ClientAPI.GEMINI_GENERATE
        return ClientAPI.ANTHROPIC_MESSAGES if path.startswith(ANTHROPIC_PREFIXES) else ClientAPI.OPENAI_CHAT

    def close(self) -> None:
        self._registry.remove(self._request_id, self._context)
        completed = None
        try:
            completed = self._completed()
            self._observer.request_completed(completed)
        except Exception:  # an observer must never break a request
            log.exception("extproc: request observer failed")
        context = self._context
        if context is not None and context.span is not None and completed is not None:
            self._end_span(context, completed)

    def _end_span(self, context: RequestContext, completed: CompletedRequest) -> None:
        attempt = context.attempt
        model = attempt.model if attempt else None
        output_text = attempt.translator.answer.text if attempt else None
        try:
            self._tracing.end(context.span, completed, model, output_text)  # type: ignore[union-attr]
        except Exception:  # tracing must never break a request
            log.exception("extproc: ending the trace span failed")

    def _completed(self) -> CompletedRequest:
        context = self._context
        attempt = context.attempt if context else None
        translator = attempt.translator if attempt else None
        backend = self._runtime.backends.get(attempt.backend) if attempt else None
        path = self._headers.get(":path", "").split("?", 1)[0]
        status = self._status
        error_type = self._error_type
        if error_type is None and status and not 200 <= status < 300:
            error_type = str(status)
        elif not status:
            error_type = "client_closed"
        return CompletedRequest(
            api=context.request.api if context else ENDPOINTS.get(path),
            route=context.rule.route.name if context else None,
            backend=attempt.backend if attempt else None,
            schema=backend.backend.schema if backend else None,
            original_model=context.request.model if context else None,
            request_model=attempt.model if attempt else (context.request.model if context else None),
            response_model=translator.response_model if translator else None,
            status=status,
            stream=context.request.stream if context else False,
            usage=translator.usage if translator else None,
            started=self._started,
            finished=time.monotonic(),
            first_chunk_at=self._first_chunk_at,
            gateway_seconds=self._handler_seconds,
            error_type=error_type,
            request_headers=self._headers,
            named_models=self._runtime.named_models,
            cost_usd_micros=self._cost_micros,
            messages=self.messages,
        )

    def _request_headers(self, message: ep.ProcessingRequest) -> ep.ProcessingResponse:
        headers = message.request_headers
        self._headers = header_dict(headers)
        self._request_id = request_key(message)
        path = self._headers.get(":path", "").split("?", 1)[0]
        if path in (MODELS_PATH, ANTHROPIC_MODELS_PATH, GEMINI_MODELS_PATH):
            return self._models(path)
        if path.startswith(GEMINI_MODELS_PATH + "/") and ":" not in path:
            return self._gemini_model(path)
        if path not in ENDPOINTS and (call := gemini_call(self._headers.get(":path", ""))) is not None:
            self._gemini = call
        elif path not in ENDPOINTS:
            # OpenAI names an unknown URL an `invalid_request_error`; Anthropic a `not_found_error`.
            kind = None if path.startswith(ANTHROPIC_PREFIXES) else "invalid_request_error"
            raise GatewayError(404, f"unknown path {path!r}: tokenvoy serves POST {', POST '.join(ENDPOINTS)}", kind)
        if self._headers.get(":method") != "POST":
            raise GatewayError(405, f"{path} takes POST, not {self._headers.get(':method')}")
        if headers.end_of_stream:
            raise GatewayError(400, "the request has no body: a JSON body with `model` is required")
        if self._runtime.identity_headers:
            check_identity_headers(headers.headers.headers, self._runtime.identity_headers)
        return _CONTINUE_HEADERS

    def _models(self, path: str) -> ep.ProcessingResponse:
        """``GET /v1/models`` (OpenAI's list), ``GET /anthropic/v1/models`` (Anthropic's) and
        ``GET /v1beta/models`` (Google's): precomputed from the config, answered without reaching a backend."""
        method = self._headers.get(":method")
        if method != "GET":
            raise GatewayError(405, f"{path} takes GET, not {method}")
        self.done = True
        self._status = 200
        if path == GEMINI_MODELS_PATH:
            body = self._runtime.gemini_model_list_for(self._headers)
            return immediate_response(200, body, details="tokenvoy_models")
        openai_body, anthropic_body = self._runtime.model_lists_for(self._headers)
        body = openai_body if path == MODELS_PATH else anthropic_body
        return immediate_response(200, body, details="tokenvoy_models")

    def _gemini_model(self, path: str) -> ep.ProcessingResponse:
        """``GET /v1beta/models/{model}`` (Google's ``models.get``): the entry of the caller's model list."""
        method = self._headers.get(":method")
        if method != "GET":
            raise GatewayError(405, f"{path} takes GET, not {method}")
        name = unquote(path[len(GEMINI_MODELS_PATH) + 1 :])
        entry = self._runtime.gemini_model_for(self._headers, name)
        if entry is None:
            known = self._runtime.gemini_model_list_for(self._headers)
            served = ", ".join(m["baseModelId"] for m in orjson.loads(known)["models"])
            raise GatewayError(404, f"model {name!r} is not served to this client; models served: {served}")
        self.done = True
        self._status = 200
        return immediate_response(200, entry, details="tokenvoy_models")

    def _request_body(self, body: ep.HttpBody) -> ep.ProcessingResponse:
        raw = body.body
        path = self._headers.get(":path", "")
        gemini = self._gemini
        if gemini is not None:
            api = gemini.api
            read = read_gemini_body(raw, gemini.model, gemini.stream)
        else:
            api = ENDPOINTS[path.split("?", 1)[0]]
            read = read_body(raw, api)
        parsed, model = read.body, read.model
        if self._runtime.model_access and (denial := self._runtime.model_access.denial(self._headers, model)):
            raise GatewayError(403, denial)
        match_headers = {**self._headers, MODEL_HEADER: model}
        rule = self._runtime.match(match_headers)
        if rule is None:
            known = self._runtime.models_for(self._headers.get(":authority", ""))[0]
            hint = f"; models served: {', '.join(known)}" if known else ""
            raise GatewayError(404, f"model {model!r} is not served by this gateway{hint}", "model_not_found")
        if rule.usd_budget and not rule.priced(model):
            # A USD budget would count this request as free: refused, with what to do about it.
            message = f"model {model!r} has no price and a USD budget applies: add it to TokenvoyConfig spec.pricing"
            raise GatewayError(400, message, "invalid_request_error")
        request = ClientRequest(
            api=api,
            path=path,
            raw=raw,
            body=parsed,
            model=model,
            stream=read.stream,
            needs_usage=bool(rule.costs),
            headers=self._headers,
        )
        context = RequestContext(request, rule, self._headers)
        if not self._stateless:
            if self._request_id is None:
                raise GatewayError(500, "Envoy sent no request attributes to extproc: is the bootstrap tokenvoy's?")
            if not self._registry.add(self._request_id, context):
                message = "two requests in flight look identical to the gateway; retry"
                raise GatewayError(503, message, "overloaded_error")
        self._context = context
        if request.stream and rule.costs:
            self._prompt_estimate = prompt_tokens(parsed)
        tracing = self._tracing
        if tracing is not None:
            context.span, context.trace_headers = tracing.start(self._headers, request, self._started)
        if self._translate_in_router:
            common = self._translate(context, model)
        elif self._direct_routes and rule.direct_endpoint is not None:
            context.direct = True
            common = self._translate(context, model, rule.direct_endpoint)
        else:
            # a client's own DIRECT_HEADER would take the direct route unedited
            remove = [DIRECT_HEADER] if self._direct_routes else []
            mutation = header_mutation({MODEL_HEADER: model, ORIGINAL_PATH_HEADER: path}, remove)
            common = ep.CommonResponse(header_mutation=mutation, clear_route_cache=True)
        response = ep.ProcessingResponse(request_body=ep.BodyResponse(response=common))
        reservation = self._runtime.reservations.get(rule.route.name)
        if reservation is not None:  # read by the ratelimit filter's request-time call (docs/ratelimit.md)
            call = CallContext(model=model, backend="", route_name=rule.route.name, client_model=model)
            # embeddings and token counts reserve no output
            generates = request.api not in (ClientAPI.OPENAI_EMBEDDINGS, ClientAPI.GEMINI_COUNT_TOKENS)
            values = reservation_values(parsed, reservation, rule.cost_values, call, generates)
            if api is ClientAPI.ANTHROPIC_COUNT_TOKENS:  # a token count reserves nothing: it is charged nothing
                values = dict.fromkeys(values, 0)
            response.dynamic_metadata.CopyFrom(metadata_struct(AI_GATEWAY_METADATA_NAMESPACE, values))
        if self._stateless and not self._translate_in_router and not context.direct:  # an upstream filter will ask
            trace = context.trace_headers
            write_request(response, CarriedRequest(api, path, model, request.stream, request.needs_usage, trace))
        return response

    def _adopt_attempt(self, message: ep.ProcessingRequest) -> None:
        """The attempt that answered, from the metadata its upstream stream wrote (maybe in another process):
        its translator is built here, and given the request once so it knows what it asked for."""
        context = self._context
        carried = read_attempt(message) if context is not None else None
        if context is None or carried is None or not carried.endpoint:
            return  # no attempt reached a provider (Envoy's or the upstream filter's own reply)
        # Around a reload Envoy may route by the config before this stream's: an endpoint id names its backend,
        # so whichever config knows it agrees on the backend.
        picked = next(
            (
                r.endpoints[carried.endpoint]
                for r in (self._runtime, *self._previous)
                if carried.endpoint in r.endpoints
            ),
            None,
        )
        if picked is None:  # no config here knows it: the answer passes untranslated
            log.debug("request %s: endpoint %r unknown to its config", self._request_id, carried.endpoint)
            return
        backend, ref = picked
        translator = backend.translator(context.request.api)
        if translator is None:
            return
        model = ref.model_name_override or context.request.model
        try:
            translator.translate_request(context.request, backend.backend, model)
        except GatewayError:  # the upstream stream refused it the same way: it answered itself
            return
        context.attempts.append(Attempt(backend.backend.name, model, ref.model_name_override, translator))

    def _translate(self, context: RequestContext, model: str, direct_endpoint: str | None = None) -> ep.CommonResponse:
        """The upstream filter's edit, made here with the request body: for the rule's first backendRef of the
        lowest priority (``render --target envoy-gateway`` refuses rules whose backendRefs would need another
        edit); or (``direct_endpoint``) for a direct rule's one backend, without its key. The body is still
        buffered in Envoy, so ``content-length`` can be set with the new body."""
        rule = context.rule.rule
        if direct_endpoint is None:
            index = min(range(len(rule.backend_refs)), key=lambda i: rule.backend_refs[i].priority)
            endpoint = endpoint_id(rule, index)
        else:
            endpoint = direct_endpoint
        picked = self._runtime.endpoints[endpoint]
        method = self._headers.get(":method", "POST")
        common, length = attempt_edit(self._runtime, context, endpoint, picked, method, direct_endpoint is not None)
        common.status = ep.CommonResponse.CONTINUE  # CONTINUE_AND_REPLACE is for a headers response
        mutation = common.header_mutation
        extra = {MODEL_HEADER: model, "content-length": str(length)}
        present = {option.header.key for option in mutation.set_headers}
        mutation.set_headers.extend(header_mutation({k: v for k, v in extra.items() if k not in present}).set_headers)
        common.clear_route_cache = True  # the route is picked again, by the x-ai-eg-model just set
        return common

    def _response_headers(self, headers: ep.HttpHeaders) -> ep.ProcessingResponse:
        values = header_dict(headers)
        try:
            self._status = int(values.get(":status", "0"))
        except ValueError:
            self._status = 0
        response = ep.ProcessingResponse(response_headers=ep.HeadersResponse())
        context = self._context
        if context is not None and context.direct and values.get(RATELIMITED_HEADER) == "true":
            # A direct rule's attempt is chosen here before the rate-limit filter runs: its 429 reached no
            # provider, so the request is Envoy's own reply (metrics say provider unknown, as for other rules).
            context.attempts.clear()
        if context is None or context.attempt is None:
            # Envoy's own reply (budget exceeded, no upstream): nothing to translate, its body is not read.
            self._end_at_headers(response, headers.end_of_stream)
            self._attach_metadata(response)  # zero costs: the budget's charge at stream end reads them
            return response
        if headers.end_of_stream and self._status >= 400:
            # A provider error with no body at all: nothing an SDK can show. Say what happened, same status.
            self.done = True
            error = GatewayError(self._status, f"the LLM provider answered {self._status} with an empty body")
            self._error_type = error.error_type
            reply = immediate_response(self._status, self._client_api().error_body(error), details="tokenvoy")
            self._attach_metadata(reply)
            return reply
        if headers.end_of_stream and 200 <= self._status < 300:
            # A success with no body at all is no answer of any API tokenvoy serves: never a made-up success.
            error = UpstreamShapeError(f"the LLM provider answered {self._status} with an empty body")
            reply = self._reject(error, "tokenvoy_upstream_malformed")
            self._attach_metadata(reply)  # zero costs, as for any failed request
            return reply
        encoding = values.get("content-encoding")
        remove = self._open_decoder(encoding, values) if encoding and not headers.end_of_stream else []
        translator = context.attempt.translator
        changes = None
        if not 200 <= self._status < 300:
            if self._decoder is None and _passes_errors(translator):
                # The provider's error reaches the client as it is: no body to read, its metadata now.
                self._end_at_headers(response, headers.end_of_stream)
                self._attach_metadata(response)
                return response
            self._error_headers = values  # the error is translated whole, with its body (translate_error)
        elif not self._undecoded:
            changes = translator.translate_response_headers(values)
        set_headers = dict(changes.set_headers) if changes else {}
        if changes:
            remove.extend(changes.remove_headers)
        if context.request.stream and self._status == 200:
            response.mode_override.CopyFrom(_STREAMED)
            remove.append("content-length")
            if context.rule.costs and not headers.end_of_stream:
                # From here on the metadata always holds what a cut would cost (streamcharge.py): a client
                # that hangs up before the first byte still pays the prompt.
                self._meter = StreamMeter(context.request.api)
                self._attach_metadata(response, ended=False)
        if set_headers or remove:
            response.response_headers.response.header_mutation.CopyFrom(header_mutation(set_headers, remove))
        if headers.end_of_stream:
            self._attach_metadata(response)
            self.done = True
        return response

    def _end_at_headers(self, response: ep.ProcessingResponse, end_of_stream: bool) -> None:
        """The last message of this stream: Envoy is told not to send the answer's body (trailers are skipped)."""
        if not end_of_stream:
            response.mode_override.CopyFrom(_NO_BODY)
        self.done = True

    def _response_body(self, body: ep.HttpBody) -> ep.ProcessingResponse:
        response = ep.ProcessingResponse(response_body=ep.BodyResponse())
        context = self._context
        attempt = context.attempt if context else None
        if attempt is None:
            self.done = body.end_of_stream
            return response
        if self._stream_failed:  # the client already has the error event: nothing more reaches it
            response.response_body.response.body_mutation.body = b""
            if body.end_of_stream:
                self._attach_metadata(response)  # the usage seen before the failure, as for any stream
                self.done = True
            return response
        chunk: bytes | None = body.body
        if self._decoder is not None:
            chunk = self._decode(body.body, body.end_of_stream, response)
        if chunk:
            now = time.monotonic()
            if self._first_chunk_at is None:
                self._first_chunk_at = now
            self._last_chunk_at = now
        if chunk is not None and not self._undecoded:
            try:
                if 200 <= self._status < 300:
                    replaced = attempt.translator.translate_response_body(chunk, body.end_of_stream)
                else:
                    replaced = self._translate_error(attempt.translator, chunk, body.end_of_stream, response)
            except UpstreamShapeError as error:
                if self._buffered():  # nothing reached the client yet: a 502 in its API's error shape
                    reply = self._reject(error, "tokenvoy_upstream_malformed")
                    self._attach_metadata(reply)  # zero costs, as for any failed request
                    return reply
                # The status line is out: the events translated so far, then one error event, then nothing.
                log.debug("request %s: malformed streamed answer: %s", self._request_id, error.message)
                self._stream_failed = True
                self._error_type = error.error_type
                replaced = error.emitted + self._client_api().stream_error_event(error)
            if replaced is None and self._decoder is not None:
                replaced = chunk  # the client gets the decoded bytes too
            if self._meter is not None:
                self._meter.feed(chunk if replaced is None else replaced, body.end_of_stream)
            if replaced is not None:
                response.response_body.response.body_mutation.body = replaced
                if self._decoder is not None and body.end_of_stream and self._buffered():
                    length = header_mutation({"content-length": str(len(replaced))}).set_headers
                    response.response_body.response.header_mutation.set_headers.extend(length)
        new_usage = attempt.translator.take_usage() is not None
        if body.end_of_stream:
            self._attach_metadata(response)
            self.done = True
        elif self._meter is not None:
            if self._charged_usage(attempt.translator, False) != self._costed:
                self._attach_metadata(response, ended=False)  # the running charge grew: what a hang-up costs
        elif new_usage and not self._buffered():
            # A stream's end (the provider's last empty chunk, a compressor's trailer) can come after its last
            # event, and a client that hangs up on that event (the openai SDK does, on [DONE]) makes Envoy drop
            # the end-of-stream message: the usage is attached as soon as it is known, so the budget charge
            # and the access log still get it. Envoy merges the end-of-stream metadata over this.
            self._attach_metadata(response, ended=False)
        return response

    def _translate_error(
        self, translator: Translator, chunk: bytes, end_of_stream: bool, response: ep.ProcessingResponse
    ) -> bytes | None:
        """A provider error's body for the client: collected whole (Envoy buffers it, so it is one chunk but
        for a decoder's), then rewritten into the client API's error shape by the translator, if it must."""
        self._error_chunks.append(chunk)
        if not end_of_stream:
            return b""
        pieces = len(self._error_chunks)
        raw = b"".join(self._error_chunks)
        self._error_chunks.clear()
        rewritten = translator.translate_error(self._status, self._error_headers, raw)
        if rewritten is None:  # already in the client's shape: the provider's bytes, whole
            return raw if pieces > 1 or self._decoder is not None else None
        edits = header_mutation({"content-type": "application/json"}, [] if self._decoder else ["content-length"])
        response.response_body.response.header_mutation.CopyFrom(edits)
        return rewritten

    def _buffered(self) -> bool:
        """Whether the answer's body is buffered (headers still held by Envoy) rather than streamed."""
        context = self._context
        return context is None or not (context.request.stream and self._status == 200)

    def _open_decoder(self, encoding: str, values: dict[str, str]) -> list[str]:
        """Prepare to undo the provider's content-encoding; returns the response headers that no longer hold.

        The translator then sees the headers and bytes of a plain answer, and so does the client. A coding
        extproc cannot undo leaves the whole answer untouched (no translation, no usage; logged once)."""
        try:
            decoder = decoder_for(encoding)
        except UnsupportedEncoding as exc:
            self._undecoded = True
            if exc.coding not in _UNSUPPORTED_SEEN and len(_UNSUPPORTED_SEEN) < 64:
                _UNSUPPORTED_SEEN.add(exc.coding)
                log.debug("content-encoding %r cannot be decoded: answers pass untranslated, without usage", encoding)
            return []
        if decoder is None:
            return []  # identity
        self._decoder = decoder
        del values["content-encoding"]
        return ["content-encoding", "content-length"]  # Envoy frames the decoded body itself

    def _decode(self, chunk: bytes, end_of_stream: bool, response: ep.ProcessingResponse) -> bytes | None:
        """The plain bytes of a compressed answer's chunk, or None once a streamed answer proved corrupt.

        A buffered answer has not reached the client yet: a corrupt one is answered with an error in the
        client's API shape (502; the provider's status if it was an error already). A streamed answer's
        status line is out: the client gets one error event in its API's stream shape, then nothing."""
        mutation = response.response_body.response.body_mutation
        if self._corrupt:
            mutation.body = b""
            return None
        decoder = self._decoder
        assert decoder is not None
        try:
            plain = decoder.feed(chunk)
            return plain + decoder.finish() if end_of_stream else plain
        except DecodeError as exc:
            status = self._status
            if status >= 400:
                message = f"the provider answered {status} with a body that cannot be decoded"
            else:
                message, status = "the provider's answer cannot be decoded", 502
            error = GatewayError(status, f"{message} (content-encoding: {decoder.coding}): {exc}")
            if self._buffered():
                raise error from None
            self._corrupt = True
            self._error_type = error.error_type
            mutation.body = self._client_api().stream_error_event(error)
            return None

    def _charged_usage(self, translator: Translator, ended: bool) -> TokenUsage | None:
        """The usage to charge now: the provider's, unless this is a budgeted stream whose client-facing end
        (with the usage) has not come yet; then the running charge (streamcharge.py), pre-charged ahead of the
        stream while it lasts, exact for what streamed once it ended without usage."""
        usage = translator.usage
        meter = self._meter
        if meter is None or (meter.complete and usage is not None):
            return usage
        output = meter.output_tokens if ended else precharged_output(meter.output_tokens)
        return running_charge(usage, self._prompt_estimate, output)

    def _attach_metadata(self, response: ep.ProcessingResponse, ended: bool = True) -> None:
        """``ended``: the last message of the answer (else a stream's running charge, rewritten as it grows)."""
        context = self._context
        attempt = context.attempt if context else None
        if context is None:
            return
        counting = context.request.api is ClientAPI.ANTHROPIC_COUNT_TOKENS
        if attempt is None or not 200 <= self._status < 300 or counting:
            # No usage, so every cost is 0: written, because a budget's charge reads its key at stream end
            # and Envoy warns about (and skips) a missing one. A provider's refusal still names its backend.
            # A token count generates nothing and is not charged either.
            zeros: dict[str, object] = dict.fromkeys(context.rule.cost_keys, 0)
            if attempt is not None:
                zeros.update(self._attempt_names(attempt, context))
            if zeros:
                response.dynamic_metadata.CopyFrom(metadata_struct(AI_GATEWAY_METADATA_NAMESPACE, zeros))
            return
        values = self._attempt_names(attempt, context)
        translator = attempt.translator
        if translator.response_model:
            values[RESPONSE_MODEL_KEY] = translator.response_model
        usage = translator.usage
        charged = self._charged_usage(translator, ended)
        if charged is not None and charged != self._costed:
            # costs already written stay (Envoy merges keys): a stream's usage is costed once per change
            self._costed = charged
            call = CallContext(
                model=attempt.model,
                backend=attempt.backend,
                route_name=context.rule.route.name,
                response_model=translator.response_model or "",
                client_model=context.request.model,
            )
            costs = context.rule.cost_values(charged, call)
            values.update(costs)
            self._cost_micros = costs.get(COST_USD_MICROS_KEY)  # type: ignore[assignment]
            # only a buffered answer: a stream's headers are gone before its usage is known
            body_end = response.HasField("response_body") and self._buffered()
            if self._runtime.cost_header and self._cost_micros is not None and body_end:
                header = header_mutation({COST_HEADER: usd_text(self._cost_micros)}).set_headers
                response.response_body.response.header_mutation.set_headers.extend(header)
        if usage is not None:
            if context.request.stream and self._first_chunk_at is not None:
                values[TOKEN_LATENCY_TTFT_KEY] = round((self._first_chunk_at - context.started) * 1000, 3)
                if usage.output > 1 and self._last_chunk_at is not None:
                    itl = (self._last_chunk_at - self._first_chunk_at) * 1000 / (usage.output - 1)
                    values[TOKEN_LATENCY_ITL_KEY] = round(itl, 3)
        else:
            log.debug("no usage in the response of request %s", self._request_id)
        response.dynamic_metadata.CopyFrom(metadata_struct(AI_GATEWAY_METADATA_NAMESPACE, values))

    @staticmethod
    def _attempt_names(attempt: Attempt, context: RequestContext) -> dict[str, object]:
        """The access log's backend, route and override names for the attempt that answered."""
        values: dict[str, object] = {BACKEND_NAME_KEY: attempt.backend, ROUTE_NAME_KEY: context.rule.route.name}
        if attempt.model_override:
            values[MODEL_NAME_OVERRIDE_KEY] = attempt.model_override
        return values


_UNSUPPORTED_SEEN: set[str] = set()  # content-encodings already logged (bounded)


def _passes_errors(translator: Translator) -> bool:
    """Whether the translator hands every provider error on as it is (the base's ``translate_error``, which
    returns None whatever the body): then the router need not read an error's body at all."""
    return type(translator).translate_error is TranslatorBase.translate_error


def _continue_for(kind: str | None) -> ep.ProcessingResponse:
    if kind == "request_trailers":
        return ep.ProcessingResponse(request_trailers=ep.TrailersResponse())
    if kind == "response_trailers":
        return ep.ProcessingResponse(response_trailers=ep.TrailersResponse())
    return ep.ProcessingResponse()
