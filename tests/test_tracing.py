"""Traces (tokenvoy.extproc.tracing): the router and upstream streams driven in-process, spans read from an
in-memory exporter. The OTLP/gRPC path through real Envoy is tests/integration/test_tracing_through_envoy.py."""

from __future__ import annotations

import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tokenvoy.config.defaults import default_config_yaml
from tokenvoy.config.loader import ConfigError, load_text
from tokenvoy.config.model import Backend, Endpoint
from tokenvoy.contract import ENDPOINT_ATTRIBUTE
from tokenvoy.extproc.registry import RequestRegistry
from tokenvoy.extproc.router import RouterStream
from tokenvoy.extproc.runtime import Runtime
from tokenvoy.extproc.server import build_runtime
from tokenvoy.extproc.tracing import Tracing, TracingSettings, tracing_requested
from tokenvoy.extproc.translate.base import ClientAPI, ClientRequest
from tokenvoy.extproc.translate.openai_to_anthropic import OpenAIToAnthropic
from tokenvoy.extproc.upstream import UpstreamStream
from tokenvoy.pb.envoy.config.core.v3 import base_pb2
from tokenvoy.pb.envoy.service.ext_proc.v3 import external_processor_pb2 as ep

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
REQUEST = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Say hello"}]},
    ],
    "temperature": 0.2,
    "max_tokens": 50,
}
ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
    "usage": {
        "prompt_tokens": 12,
        "completion_tokens": 3,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 4},
    },
}


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    return build_runtime(load_text(default_config_yaml({}), "<default>"))


def _tracing(settings: TracingSettings | None = None) -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)  # sampler: parent-based, always on
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider, settings), exporter


def _attributes(message: ep.ProcessingRequest, endpoint: str | None = None) -> ep.ProcessingRequest:
    attributes = message.attributes["envoy.filters.http.ext_proc"]
    attributes.update({"connection.id": 7, "request.time": "2026-11-22T12:00:00.000001+00:00", "request.id": "r-1"})
    if endpoint is not None:
        attributes.update({ENDPOINT_ATTRIBUTE: endpoint})
    return message


def _headers(values: dict[str, str], end_of_stream: bool = False) -> ep.HttpHeaders:
    header_map = base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in values.items()]
    )
    return ep.HttpHeaders(headers=header_map, end_of_stream=end_of_stream)


def _exchange(
    runtime: Runtime,
    tracing: Tracing | None,
    client_headers: dict[str, str],
    request: dict,
    answer_chunks: list[bytes],
    status: int = 200,
    path: str = "/v1/chat/completions",
) -> dict[str, str]:
    """One request through both streams; returns the headers the upstream filter set toward the provider."""
    registry = RequestRegistry()
    router = RouterStream(runtime, registry, None, tracing)
    headers = {":path": path, ":method": "POST", **client_headers}
    router.handle(_attributes(ep.ProcessingRequest(request_headers=_headers(headers))))
    reply = router.handle(
        ep.ProcessingRequest(request_body=ep.HttpBody(body=orjson.dumps(request), end_of_stream=True))
    )
    assert reply.WhichOneof("response") == "request_body", reply
    endpoint = next(iter(runtime.endpoints))
    upstream = UpstreamStream(runtime, registry)
    up = upstream.handle(_attributes(ep.ProcessingRequest(request_headers=_headers(headers)), endpoint))
    upstream.close()
    mutation = up.request_headers.response.header_mutation
    sent = {h.header.key: h.header.raw_value.decode() for h in mutation.set_headers}
    content_type = "text/event-stream" if request.get("stream") else "application/json"
    response_headers = {":status": str(status), "content-type": content_type}
    router.handle(ep.ProcessingRequest(response_headers=_headers(response_headers)))
    for index, chunk in enumerate(answer_chunks):
        last = index == len(answer_chunks) - 1
        router.handle(ep.ProcessingRequest(response_body=ep.HttpBody(body=chunk, end_of_stream=last)))
    router.close()
    return sent


def test_one_llm_span_with_openinference_attributes_parented_on_the_clients_traceparent(runtime: Runtime) -> None:
    tracing, exporter = _tracing()
    client = {"traceparent": TRACEPARENT, "tracestate": "vendor=1", "x-session-id": "s-42", "x-user-id": "alice"}
    sent = _exchange(runtime, tracing, client, REQUEST, [orjson.dumps(ANSWER)])

    (span,) = exporter.get_finished_spans()
    assert span.name == "ChatCompletion"
    assert span.kind is SpanKind.CLIENT
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_ID
    assert span.parent.is_remote
    assert span.status.status_code is StatusCode.UNSET
    assert span.start_time <= span.end_time
    # W3C trace context toward the provider: the same trace, the gateway's span as the parent.
    assert sent["traceparent"] == f"00-{TRACE_ID}-{format(span.context.span_id, '016x')}-01"
    assert sent["tracestate"] == "vendor=1"
    assert dict(span.attributes) == {
        "openinference.span.kind": "LLM",
        "llm.invocation_parameters": '{"model":"gpt-4o-mini","temperature":0.2,"max_tokens":50}',
        "input.value": orjson.dumps(REQUEST).decode(),
        "input.mime_type": "application/json",
        "llm.input_messages.0.message.role": "system",
        "llm.input_messages.0.message.content": "Be brief.",
        "llm.input_messages.1.message.role": "user",
        "llm.input_messages.1.message.contents.0.message_content.type": "text",
        "llm.input_messages.1.message.contents.0.message_content.text": "Say hello",
        "session.id": "s-42",
        "user.id": "alice",
        "llm.model_name": "gpt-4o-mini-2024-07-18",
        "llm.provider": "openai",
        "llm.system": "openai",
        "llm.token_count.prompt": 12,
        "llm.token_count.completion": 3,
        "llm.token_count.total": 15,
        "llm.token_count.prompt_details.cache_read": 4,
        "output.value": "Hello!",
        "output.mime_type": "text/plain",
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": "Hello!",
    }


def test_without_a_traceparent_the_span_is_a_root_and_its_context_still_reaches_the_provider(runtime: Runtime) -> None:
    tracing, exporter = _tracing()
    sent = _exchange(runtime, tracing, {}, REQUEST, [orjson.dumps(ANSWER)])
    (span,) = exporter.get_finished_spans()
    assert span.parent is None
    trace_id, span_id = format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")
    version, sent_trace, sent_span, flags = sent["traceparent"].split("-")
    assert (version, sent_trace, sent_span) == ("00", trace_id, span_id)
    assert int(flags, 16) & 1  # sampled (the SDK also sets W3C level 2's "random" bit on new trace ids)
    assert "tracestate" not in sent
    assert "session.id" not in span.attributes and "user.id" not in span.attributes


def test_a_stream_records_the_streamed_text_and_usage(runtime: Runtime) -> None:
    tracing, exporter = _tracing()
    chunks = [
        {"id": "c", "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"id": "c", "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {"content": "Hel"}}]},
        {"id": "c", "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {"content": "lo"}}]},
        {"id": "c", "model": "gpt-4o-mini", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}},
    ]
    body = b"".join(b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks) + b"data: [DONE]\n\n"
    _exchange(runtime, tracing, {}, {**REQUEST, "stream": True}, [body[:70], body[70:]])
    (span,) = exporter.get_finished_spans()
    attributes = span.attributes
    assert attributes["output.value"] == "Hello"
    assert attributes["llm.output_messages.0.message.content"] == "Hello"
    assert (attributes["llm.token_count.prompt"], attributes["llm.token_count.completion"]) == (5, 2)
    assert attributes["llm.token_count.total"] == 7
    assert orjson.loads(attributes["llm.invocation_parameters"])["stream"] is True


def test_an_error_answer_sets_the_span_status(runtime: Runtime) -> None:
    tracing, exporter = _tracing()
    error = orjson.dumps({"error": {"message": "slow down", "type": "rate_limit_exceeded"}})
    _exchange(runtime, tracing, {}, REQUEST, [error], status=429)
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "429"
    assert "output.value" not in span.attributes and "llm.token_count.prompt" not in span.attributes


def test_a_not_sampled_traceparent_records_nothing_but_is_propagated(runtime: Runtime) -> None:
    tracing, exporter = _tracing()
    sent = _exchange(
        runtime, tracing, {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-00"}, REQUEST, [orjson.dumps(ANSWER)]
    )
    assert exporter.get_finished_spans() == ()
    assert sent["traceparent"].startswith(f"00-{TRACE_ID}-") and sent["traceparent"].endswith("-00")


@pytest.mark.parametrize(
    ("switches", "hidden", "redacted"),
    [
        (
            {"hide_inputs": True},
            {"input.mime_type", "llm.input_messages.0.message.content", "llm.input_messages.0.message.role"},
            {"input.value"},
        ),
        ({"hide_input_messages": True}, {"llm.input_messages.0.message.content"}, set()),
        (
            {"hide_outputs": True},
            {"output.mime_type", "llm.output_messages.0.message.content", "llm.output_messages.0.message.role"},
            {"output.value"},
        ),
        ({"hide_output_messages": True}, {"llm.output_messages.0.message.content"}, set()),
    ],
)
def test_the_openinference_hide_switches(runtime: Runtime, switches: dict, hidden: set, redacted: set) -> None:
    tracing, exporter = _tracing(TracingSettings(**switches))
    _exchange(runtime, tracing, {}, REQUEST, [orjson.dumps(ANSWER)])
    (span,) = exporter.get_finished_spans()
    attributes = span.attributes
    assert not hidden & set(attributes), hidden & set(attributes)
    assert all(attributes[name] == "__REDACTED__" for name in redacted)
    assert attributes["llm.token_count.total"] == 15  # never hidden
    if "hide_input_messages" in switches:
        assert attributes["input.value"] == orjson.dumps(REQUEST).decode()
    if "hide_output_messages" in switches:
        assert attributes["output.value"] == "Hello!"
    if "hide_outputs" in switches:
        assert "llm.output_messages.0.message.role" not in attributes


def test_a_gemini_api_prompt_is_no_invocation_parameter_so_hidden_inputs_stay_hidden() -> None:
    tracing, _ = _tracing(TracingSettings(hide_inputs=True))
    body = {
        "contents": [{"role": "user", "parts": [{"text": "secret"}]}],
        "system_instruction": {"parts": [{"text": "secret too"}]},
        "generationConfig": {"temperature": 0.2},
    }
    request = ClientRequest(
        api=ClientAPI.GEMINI_GENERATE,
        path="/v1beta/models/gemini-2.5-flash:generateContent",
        raw=orjson.dumps(body),
        body=body,
        model="gemini-2.5-flash",
        stream=False,
        needs_usage=True,
    )
    attributes = tracing.request_attributes({}, request)
    assert orjson.loads(attributes["llm.invocation_parameters"]) == {"generationConfig": {"temperature": 0.2}}
    assert "secret" not in orjson.dumps(attributes).decode()


def test_the_hide_switches_and_session_header_from_the_environment() -> None:
    environ = {
        "OPENINFERENCE_HIDE_INPUTS": "true",
        "OPENINFERENCE_HIDE_OUTPUTS": "TRUE",
        "OPENINFERENCE_HIDE_INPUT_MESSAGES": "false",
    }
    settings = TracingSettings.from_env(environ, session_id_header="x-conversation")
    assert settings == TracingSettings("x-conversation", True, True, False, False)
    overridden = TracingSettings.from_env({"TOKENVOY_TRACING_SESSION_ID_HEADER": "X-Thread"}, "x-conversation")
    assert overridden.session_id_header == "x-thread"
    assert TracingSettings.from_env({}).session_id_header == "x-session-id"


def test_a_configured_session_header_names_the_session(runtime: Runtime) -> None:
    tracing, exporter = _tracing(TracingSettings(session_id_header="x-conversation"))
    _exchange(runtime, tracing, {"x-conversation": "c-7", "x-session-id": "ignored"}, REQUEST, [orjson.dumps(ANSWER)])
    (span,) = exporter.get_finished_spans()
    assert span.attributes["session.id"] == "c-7"


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4317"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, False),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}, True),
    ],
)
def test_tracing_is_on_only_when_the_otel_variables_ask_for_it(environ: dict[str, str], on: bool) -> None:
    assert tracing_requested(environ) is on
    tracing = Tracing.from_env(environ)
    assert (tracing is not None) is on
    if tracing is not None:
        tracing.shutdown()


def test_no_span_and_no_trace_headers_when_tracing_is_off(runtime: Runtime) -> None:
    sent = _exchange(runtime, None, {"traceparent": TRACEPARENT}, REQUEST, [orjson.dumps(ANSWER)])
    assert "traceparent" not in sent  # the client's own header goes through untouched
    translator_capture = ClientRequest(ClientAPI.OPENAI_CHAT, "/v1/chat/completions", b"{}", {}, "m", False, False)
    assert translator_capture.capture_output is False


def test_the_anthropic_translator_keeps_the_answer_text_only_when_asked() -> None:
    backend = Backend("claude", "Anthropic", None, "/v1", Endpoint("api.anthropic.com", 443, tls=True))
    answer = orjson.dumps(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4",
            "content": [{"type": "text", "text": "Hi there"}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 3, "output_tokens": 2},
        }
    )
    for capture, expected in ((True, "Hi there"), (False, None)):
        request = ClientRequest(
            ClientAPI.OPENAI_CHAT, "/v1/chat/completions", orjson.dumps(REQUEST), dict(REQUEST), "claude", False, False
        )
        request.capture_output = capture
        translator = OpenAIToAnthropic()
        translator.translate_request(request, backend, "claude-sonnet-4")
        translator.translate_response_body(answer, True)
        assert translator.answer.text == expected


def test_tokenvoy_config_tracing_session_header() -> None:
    resource = """
---
apiVersion: tokenvoy.io/v1alpha1
kind: TokenvoyConfig
metadata:
  name: tokenvoy
spec:
  tracing:
    sessionIdHeader: X-Conversation-Id
"""
    config = load_text(default_config_yaml({}) + resource)
    assert config.tracing.session_id_header == "x-conversation-id"
    assert load_text(default_config_yaml({})).tracing.session_id_header is None
    with pytest.raises(ConfigError, match=r"spec.tracing.sessionIdHeader"):
        load_text(default_config_yaml({}) + resource.replace("X-Conversation-Id", "'not a header'"))
    with pytest.raises(ConfigError, match=r"spec.tracing.sampling"):
        load_text(default_config_yaml({}) + resource + "    sampling: 1\n")


def test_a_responses_api_request_is_a_responses_span_with_its_input_as_messages(runtime: Runtime) -> None:
    tracing, exporter = _tracing()
    request = {
        "model": "gpt-4o-mini",
        "instructions": "Be brief.",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "Say hello"}]}],
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        "max_output_tokens": 50,
    }
    answer = {
        "id": "resp_1",
        "object": "response",
        "model": "gpt-4o-mini-2024-07-18",
        "status": "completed",
        "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello!"}]}],
        "usage": {"input_tokens": 12, "output_tokens": 3, "total_tokens": 15},
    }
    _exchange(runtime, tracing, {}, request, [orjson.dumps(answer)], path="/v1/responses")
    (span,) = exporter.get_finished_spans()
    attributes = dict(span.attributes)
    assert span.name == "Responses"
    assert orjson.loads(attributes["llm.invocation_parameters"]) == {"model": "gpt-4o-mini", "max_output_tokens": 50}
    assert attributes["llm.input_messages.0.message.role"] == "system"
    assert attributes["llm.input_messages.0.message.content"] == "Be brief."
    assert attributes["llm.input_messages.1.message.role"] == "user"
    assert attributes["llm.input_messages.1.message.content"] == "Say hello"
    assert attributes["output.value"] == "Hello!"
    assert (attributes["llm.token_count.prompt"], attributes["llm.token_count.completion"]) == (12, 3)
    assert attributes["llm.model_name"] == "gpt-4o-mini-2024-07-18"
