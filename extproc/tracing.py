"""OpenTelemetry traces: one OpenInference ``LLM`` span per request extproc routes.

Life of a span (all on the event loop, no I/O; the ``BatchSpanProcessor`` exports from its own thread):

1. ``RouterStream`` has routed the request (end of the request body phase): ``Tracing.start`` opens the span,
   parented on the client's W3C ``traceparent``/``tracestate`` when it sent one, backdated to the request
   headers, with the request-side attributes. The span's own context is rendered once into the
   ``traceparent``/``tracestate`` headers kept in ``RequestContext.trace_headers``.
2. Every upstream attempt (``UpstreamStream``) sets those headers on the request to the provider, so a
   provider's spans become children of the gateway's span. Retries reuse the one span.
3. ``RouterStream.close`` ends it with the usage, model, status and answer text (``Tracing.end``).

Tracing is off unless the standard OpenTelemetry variables ask for it (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_TRACES_EXPORTER``; ``OTEL_SDK_DISABLED=true`` wins). Off,
``Tracing.from_env`` returns None and the hot path pays one ``is not None`` per request. The exporter
(OTLP/gRPC; ``OTEL_TRACES_EXPORTER=console`` for stdout), sampler, batch processor, resource and limits
all read their usual ``OTEL_*`` variables through the SDK.

The span is named ``ChatCompletion`` (what OpenInference's OpenAI instrumentation and Envoy AI Gateway
use; ``Messages`` for the Anthropic Messages API, ``Completion`` for legacy completions,
``CreateEmbeddings`` with OpenInference span kind ``EMBEDDING`` and ``embedding.model_name`` for
embeddings), kind ``CLIENT`` (it is the span whose context is sent to the provider). Attributes follow
the OpenInference semantic conventions; the
``OPENINFERENCE_HIDE_INPUTS|OUTPUTS|INPUT_MESSAGES|OUTPUT_MESSAGES`` switches work as in the OpenInference
SDKs: hidden ``input.value``/``output.value`` read ``__REDACTED__``, hidden messages are left out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tokenvoy.apis.backend_schemas import BACKEND_SCHEMAS
from tokenvoy.apis.client_apis import CLIENT_APIS
from tokenvoy.contract import USER_ID_HEADER
from tokenvoy.extproc.errors import GatewayError
from tokenvoy.extproc.observe import CompletedRequest
from tokenvoy.extproc.translate.base import ClientAPI, ClientRequest
from tokenvoy.extproc.translate.responses_to_chat import chat_messages

log = logging.getLogger(__name__)

DEFAULT_SESSION_ID_HEADER = "x-session-id"
SESSION_ID_HEADER_ENV = "TOKENVOY_TRACING_SESSION_ID_HEADER"
REDACTED_VALUE = "__REDACTED__"
INSTRUMENTATION_SCOPE = "tokenvoy.extproc"
SPAN_NAMES: Mapping[str, str] = {api: spec.span_name for api, spec in CLIENT_APIS.items()}
# Request body fields that are not invocation parameters (the prompt, and tools: OpenInference's llm.tools).
_NOT_PARAMETERS = frozenset(
    {"messages", "system", "tools", "functions", "contents", "systemInstruction", "system_instruction"}
)  # the Gemini API's prompt is `contents` and `systemInstruction` (either spelling)
_NOT_RESPONSES_PARAMETERS = frozenset({"input", "instructions", "tools"})  # the Responses API's prompt and tools

# OpenInference `llm.provider` (who hosts the model) and `llm.system` (the model family/API) per
# AIServiceBackend schema; values from OpenInference's LLMProvider / LLMSystem enumerations (the catalog's rows).
PROVIDERS: Mapping[str, str] = {name: schema.openinference_provider for name, schema in BACKEND_SCHEMAS.items()}
SYSTEMS: Mapping[str, str] = {name: schema.openinference_system for name, schema in BACKEND_SCHEMAS.items()}

_PROPAGATOR = TraceContextTextMapPropagator()


def _env_true(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() == "true"


def tracing_requested(environ: Mapping[str, str]) -> bool:
    """Whether the ``OTEL_*`` variables ask for traces (see the module docstring)."""
    if _env_true(environ, "OTEL_SDK_DISABLED"):
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


@dataclass(frozen=True, slots=True)
class TracingSettings:
    session_id_header: str = DEFAULT_SESSION_ID_HEADER
    hide_inputs: bool = False
    hide_outputs: bool = False
    hide_input_messages: bool = False
    hide_output_messages: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str], session_id_header: str | None = None) -> TracingSettings:
        """``session_id_header`` comes from the config (``TokenvoyConfig`` ``spec.tracing``); the
        ``TOKENVOY_TRACING_SESSION_ID_HEADER`` variable overrides it."""
        header = environ.get(SESSION_ID_HEADER_ENV) or session_id_header or DEFAULT_SESSION_ID_HEADER
        return cls(
            session_id_header=header.strip().lower(),
            hide_inputs=_env_true(environ, "OPENINFERENCE_HIDE_INPUTS"),
            hide_outputs=_env_true(environ, "OPENINFERENCE_HIDE_OUTPUTS"),
            hide_input_messages=_env_true(environ, "OPENINFERENCE_HIDE_INPUT_MESSAGES"),
            hide_output_messages=_env_true(environ, "OPENINFERENCE_HIDE_OUTPUT_MESSAGES"),
        )


def _exporter(environ: Mapping[str, str]) -> Any:
    kind = environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if kind != "otlp":
        log.warning("OTEL_TRACES_EXPORTER=%s is not supported by tokenvoy; using otlp", kind)
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    if protocol.strip().lower() != "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HTTPExporter
        except ImportError:
            log.warning("OTLP protocol %s needs opentelemetry-exporter-otlp-proto-http; using grpc", protocol)
        else:
            return HTTPExporter()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # endpoint, headers, timeout, compression, TLS: from OTEL_EXPORTER_OTLP_*


def _resource() -> Any:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "tokenvoy"}))
    return resource


class Tracing:
    """The tracer and the settings; one per extproc process. Build it with ``from_env`` (None = off) or,
    in tests, directly on a ``TracerProvider`` with an in-memory exporter."""

    def __init__(self, provider: Any, settings: TracingSettings | None = None) -> None:
        self.provider = provider
        self.settings = settings or TracingSettings()
        self.tracer = provider.get_tracer(INSTRUMENTATION_SCOPE)
        # The translators keep the answer text only when it will be recorded.
        self.capture_output = not self.settings.hide_outputs

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, session_id_header: str | None = None) -> Tracing | None:
        environ = os.environ if environ is None else environ
        if not tracing_requested(environ):
            return None
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=_resource())  # sampler: OTEL_TRACES_SAMPLER, parent-based by default
        provider.add_span_processor(BatchSpanProcessor(_exporter(environ)))  # OTEL_BSP_*
        return cls(provider, TracingSettings.from_env(environ, session_id_header))

    def shutdown(self) -> None:
        """Flush what the batch processor holds (bounded by the exporter's timeout)."""
        self.provider.shutdown()

    # -- per request --

    def start(self, headers: Mapping[str, str], request: ClientRequest, started: float) -> tuple[Span, dict[str, str]]:
        """Open the span of one request; returns it and the headers that carry its context to the provider.
        Sets ``request.capture_output`` when the translators must keep the answer text for the span.

        ``started`` is the ``time.monotonic()`` of the request headers: the span starts there.
        """
        parent = _PROPAGATOR.extract(headers) if "traceparent" in headers else None
        start_ns = time.time_ns() - int((time.monotonic() - started) * 1e9)
        span = self.tracer.start_span(
            SPAN_NAMES.get(request.api, "ChatCompletion"), context=parent, kind=SpanKind.CLIENT, start_time=start_ns
        )
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        if span.is_recording():  # not when sampled out (e.g. the client's traceparent says not sampled)
            span.set_attributes(self.request_attributes(headers, request))
            request.capture_output = self.capture_output
        return span, carrier

    def end(self, span: Span, completed: CompletedRequest, model: str | None, output_text: str | None) -> None:
        """Close the span with what the answer said. ``model`` is the model the last attempt asked for."""
        if span.is_recording():
            span.set_attributes(self.response_attributes(completed, model, output_text))
            status = completed.status
            if not 200 <= status < 300:
                span.set_status(Status(StatusCode.ERROR, completed.error_type or str(status)))
        span.end()

    # -- OpenInference attribute mapping --

    def request_attributes(self, headers: Mapping[str, str], request: ClientRequest) -> dict[str, Any]:
        settings = self.settings
        body = request.body
        attributes: dict[str, Any] = {"openinference.span.kind": request.api.spec.span_kind}
        responses = request.api is ClientAPI.OPENAI_RESPONSES
        excluded = _NOT_RESPONSES_PARAMETERS if responses else _NOT_PARAMETERS
        parameters = {key: value for key, value in body.items() if key not in excluded}
        attributes["llm.invocation_parameters"] = orjson.dumps(parameters).decode()
        if settings.hide_inputs:
            attributes["input.value"] = REDACTED_VALUE
        else:
            attributes["input.value"] = request.raw.decode("utf-8", "replace")
            attributes["input.mime_type"] = "application/json"
        if not (settings.hide_inputs or settings.hide_input_messages):
            _input_messages(_responses_messages(body) if responses else body, attributes)
        session = headers.get(settings.session_id_header)
        if session:
            attributes["session.id"] = session
        user = headers.get(USER_ID_HEADER)
        if user:
            attributes["user.id"] = user
        return attributes

    def response_attributes(
        self, completed: CompletedRequest, model: str | None, output_text: str | None
    ) -> dict[str, Any]:
        settings = self.settings
        attributes: dict[str, Any] = {}
        model_name = completed.response_model or model or completed.request_model
        if model_name:
            attributes["embedding.model_name" if completed.api is ClientAPI.OPENAI_EMBEDDINGS else "llm.model_name"] = (
                model_name
            )
        schema = completed.schema
        if schema:
            attributes["llm.provider"] = PROVIDERS.get(schema, schema.lower())
            attributes["llm.system"] = SYSTEMS.get(schema, schema.lower())
        usage = completed.usage
        if usage is not None:
            attributes["llm.token_count.prompt"] = usage.input
            attributes["llm.token_count.completion"] = usage.output
            attributes["llm.token_count.total"] = usage.total
            if usage.cached_input:
                attributes["llm.token_count.prompt_details.cache_read"] = usage.cached_input
            if usage.cache_creation_input:
                attributes["llm.token_count.prompt_details.cache_write"] = usage.cache_creation_input
            if usage.reasoning:
                attributes["llm.token_count.completion_details.reasoning"] = usage.reasoning
        if 200 <= completed.status < 300 and (output_text is not None or settings.hide_outputs):
            if settings.hide_outputs:
                attributes["output.value"] = REDACTED_VALUE
            else:
                attributes["output.value"] = output_text
                attributes["output.mime_type"] = "text/plain"
                if not settings.hide_output_messages:
                    attributes["llm.output_messages.0.message.role"] = "assistant"
                    attributes["llm.output_messages.0.message.content"] = output_text
        return attributes


def _responses_messages(body: Mapping[str, Any]) -> dict[str, Any]:
    """A Responses body's ``instructions`` and ``input`` as chat messages (the mapping the translation to Chat
    Completions uses); input items it cannot map leave the messages out rather than fail the request."""
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    with contextlib.suppress(GatewayError):  # e.g. a built-in tool's item: the translation refuses it later
        messages.extend(chat_messages(body.get("input"), "the trace"))
    return {"messages": messages}


def _input_messages(body: Mapping[str, Any], attributes: dict[str, Any]) -> None:
    """``llm.input_messages.{i}.message.*``; Anthropic's top-level ``system`` is message 0."""
    index = 0
    system = body.get("system")
    if system is not None:
        _message(f"llm.input_messages.{index}.message.", "system", system, attributes)
        index += 1
    messages = body.get("messages")
    if not isinstance(messages, list):
        return
    for message in messages:
        if not isinstance(message, dict):
            continue
        prefix = f"llm.input_messages.{index}.message."
        role = message.get("role")
        _message(prefix, role if isinstance(role, str) else "", message.get("content"), attributes)
        for key in ("name", "tool_call_id"):
            value = message.get(key)
            if isinstance(value, str):
                attributes[prefix + key] = value
        tool_calls = message.get("tool_calls")
        if isinstance(tool_calls, list):
            for position, call in enumerate(tool_calls):
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict):
                    continue
                call_prefix = f"{prefix}tool_calls.{position}.tool_call."
                if isinstance(call.get("id"), str):
                    attributes[call_prefix + "id"] = call["id"]
                for key in ("name", "arguments"):
                    if isinstance(function.get(key), str):
                        attributes[f"{call_prefix}function.{key}"] = function[key]
        index += 1


def _message(prefix: str, role: str, content: object, attributes: dict[str, Any]) -> None:
    attributes[prefix + "role"] = role
    if isinstance(content, str):
        attributes[prefix + "content"] = content
    elif isinstance(content, list):
        for position, part in enumerate(content):
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            part_prefix = f"{prefix}contents.{position}.message_content."
            if kind == "text" and isinstance(part.get("text"), str):
                attributes[part_prefix + "type"] = "text"
                attributes[part_prefix + "text"] = part["text"]
            elif kind == "image_url":
                image = part.get("image_url")
                url = image.get("url") if isinstance(image, dict) else None
                attributes[part_prefix + "type"] = "image"
                if isinstance(url, str) and not url.startswith("data:"):
                    attributes[part_prefix + "image.image.url"] = url
            elif isinstance(kind, str):
                attributes[part_prefix + "type"] = kind
