"""Google's Gemini API as a client API: paths, the pass-through to Vertex AI, and the translation to OpenAI chat
(and, through it, to the Claude schemas and Bedrock Converse).

Requests follow the Gemini API reference's REST examples (``contents`` without a role, the snake_case
``system_instruction``/``function_declarations``/``tool_config`` spelling of its function-calling example,
``functionCall``/``functionResponse`` turns); what the gateway sends is checked by the fake providers, which
refuse what the real APIs refuse, and every translated answer is read with the official ``google-genai``
SDK's types.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from google.genai import types
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenvoy.config.model import Backend, Endpoint
from tokenvoy.extproc.errors import GatewayError, UpstreamShapeError
from tokenvoy.extproc.gemini_paths import gemini_call, is_gemini_path
from tokenvoy.extproc.request import read_gemini_body
from tokenvoy.extproc.sse import SSEParser
from tokenvoy.extproc.translate import translator_for
from tokenvoy.extproc.translate.base import ClientAPI, ClientRequest
from tokenvoy.extproc.translate.gemini_to_openai import GeminiToOpenAI, build_request, json_schema
from tokenvoy.extproc.translate.gemini_to_vertex import GeminiToVertex
from tokenvoy.testupstream import anthropic_messages, gemini, openai_chat

OPENAI = Backend(
    name="openai", schema="OpenAI", schema_version=None, path_prefix="/v1", endpoint=Endpoint("api.openai.com", 443)
)
VERTEX = Backend(
    name="vertex",
    schema="GCPVertexAI",
    schema_version=None,
    path_prefix="/v1/projects/my-project/locations/us-central1",
    endpoint=Endpoint("us-central1-aiplatform.googleapis.com", 443, tls=True),
)
ANTHROPIC = Backend(
    name="claude",
    schema="Anthropic",
    schema_version=None,
    path_prefix="/v1",
    endpoint=Endpoint("api.anthropic.com", 443),
)
# The Gemini API reference's first example: one user turn, no role.
EXPLAIN = {"contents": [{"parts": [{"text": "Explain how AI works in a few words"}]}]}
# Its function-calling example, in the snake_case spelling the REST docs use.
LIGHTS = {
    "system_instruction": {"parts": [{"text": "You are a helpful lighting system bot."}]},
    "tools": [
        {
            "function_declarations": [
                {"name": "enable_lights", "description": "Turn on the lighting system."},
                {
                    "name": "set_light_color",
                    "description": "Set the light color. Lights must be enabled for this to work.",
                    "parameters": {
                        "type": "object",
                        "properties": {"rgb_hex": {"type": "string", "description": "The light color as hex."}},
                        "required": ["rgb_hex"],
                    },
                },
            ]
        }
    ],
    "tool_config": {"function_calling_config": {"mode": "auto"}},
    "contents": [{"role": "user", "parts": [{"text": "Turn on the lights please."}]}],
}


def _request(body: dict[str, Any], model: str, stream: bool = False, api=ClientAPI.GEMINI_GENERATE) -> ClientRequest:
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return ClientRequest(
        api=api,
        path=f"/v1beta/models/{model}:{method}",
        raw=orjson.dumps(body),
        body=body,
        model=model,
        stream=stream,
        needs_usage=True,
        headers={"x-goog-api-key": "key"},
    )


def _events(data: bytes) -> list[dict[str, Any]]:
    parser = SSEParser()
    return [orjson.loads(e.data) for e in parser.feed(data) + parser.flush() if e.data]


# ---- paths ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "api", "model", "stream"),
    [
        ("/v1beta/models/gemini-2.5-flash:generateContent", ClientAPI.GEMINI_GENERATE, "gemini-2.5-flash", False),
        (
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            ClientAPI.GEMINI_GENERATE,
            "gemini-2.5-flash",
            True,
        ),
        ("/v1/models/gemini-2.5-pro:countTokens", ClientAPI.GEMINI_COUNT_TOKENS, "gemini-2.5-pro", False),
        (
            "/v1beta/models/amazon.nova-lite-v1:0:generateContent?key=k",
            ClientAPI.GEMINI_GENERATE,
            "amazon.nova-lite-v1:0",
            False,
        ),
        (
            "/v1beta/models/claude-haiku-4-5%4020251001:generateContent",
            ClientAPI.GEMINI_GENERATE,
            "claude-haiku-4-5@20251001",
            False,
        ),
    ],
)
def test_the_model_and_the_method_come_from_the_path(target: str, api: ClientAPI, model: str, stream: bool) -> None:
    call = gemini_call(target)
    assert call is not None and (call.api, call.model, call.stream) == (api, model, stream)
    assert is_gemini_path(target.split("?")[0])


def test_paths_that_are_not_gemini_calls() -> None:
    assert gemini_call("/v1/chat/completions") is None
    assert gemini_call("/v1/models") is None
    assert not is_gemini_path("/v1/models")


@pytest.mark.parametrize(
    ("target", "status", "words"),
    [
        ("/v1beta/models/gemini-2.5-flash:embedContent", 404, "unknown method 'embedContent'"),
        ("/v1beta/models/:generateContent", 404, "no model in the path"),
        ("/v1beta/models/gemini-2.5-flash:streamGenerateContent", 400, "add ?alt=sse"),
    ],
)
def test_gemini_paths_the_gateway_cannot_serve_are_named(target: str, status: int, words: str) -> None:
    with pytest.raises(GatewayError) as raised:
        gemini_call(target)
    assert raised.value.status == status and words in raised.value.message


def test_errors_are_in_googles_shape() -> None:
    error = GatewayError(429, "token budget exceeded")
    assert orjson.loads(ClientAPI.GEMINI_GENERATE.error_body(error)) == {
        "error": {"code": 429, "message": "token budget exceeded", "status": "RESOURCE_EXHAUSTED"}
    }
    assert orjson.loads(ClientAPI.GEMINI_COUNT_TOKENS.error_body(GatewayError(422, "x")))["error"]["status"] == (
        "INVALID_ARGUMENT"
    )


def test_a_body_that_is_not_a_json_object_is_400() -> None:
    for raw in (b"{", b"[]"):
        with pytest.raises(GatewayError) as raised:
            read_gemini_body(raw, "gemini-2.5-flash", False)
        assert raised.value.status == 400 and "Invalid JSON payload" in raised.value.message
    read = read_gemini_body(orjson.dumps(EXPLAIN), "gemini-2.5-flash", True)
    assert (read.model, read.stream, read.body) == ("gemini-2.5-flash", True, EXPLAIN)


# ---- pass-through to Vertex AI ----------------------------------------------------------------------------


def test_registered_pairs() -> None:
    assert translator_for(ClientAPI.GEMINI_GENERATE, "GCPVertexAI") is GeminiToVertex
    assert translator_for(ClientAPI.GEMINI_GENERATE, "OpenAI") is GeminiToOpenAI
    for schema in ("AzureOpenAI", "Anthropic", "AWSAnthropic", "GCPAnthropic", "AWSBedrock"):
        assert translator_for(ClientAPI.GEMINI_GENERATE, schema) is not None, schema
    assert translator_for(ClientAPI.GEMINI_COUNT_TOKENS, "GCPVertexAI") is GeminiToVertex
    assert translator_for(ClientAPI.GEMINI_COUNT_TOKENS, "OpenAI") is None  # OpenAI cannot count: a 422


@pytest.mark.parametrize("stream", [False, True])
def test_vertex_gets_the_body_unchanged_on_its_path_and_the_usage_is_read(stream: bool) -> None:
    translator = GeminiToVertex()
    upstream = translator.translate_request(_request(EXPLAIN, "gemini-2.5-flash", stream), VERTEX, "gemini-2.5-flash")
    suffix = ":streamGenerateContent?alt=sse" if stream else ":generateContent"
    assert upstream.path == f"{VERTEX.path_prefix}/publishers/google/models/gemini-2.5-flash{suffix}"
    assert upstream.body is None  # not parsed, not copied
    reply = gemini.generate_content(orjson.dumps(EXPLAIN), "gemini-2.5-flash", stream=stream, response_id="r1")
    assert reply.status == 200  # the fake Vertex takes the Gemini API's body as it is
    raw = b"".join(map(gemini.sse_frame, reply.chunks)) if stream else orjson.dumps(reply.body)
    assert translator.translate_response_headers({}) is None
    assert translator.translate_response_body(raw, True) is None  # the client gets Vertex's bytes
    final = reply.chunks[-1] if stream else reply.body
    assert translator.usage is not None
    assert translator.usage.total == final["usageMetadata"]["totalTokenCount"]
    assert translator.response_model == "gemini-2.5-flash"


def test_count_tokens_goes_to_vertexs_count_tokens_and_is_charged_nothing() -> None:
    translator = GeminiToVertex()
    wrapped = {"generateContentRequest": {"model": "models/gemini-2.5-flash", **EXPLAIN}}
    request = _request(wrapped, "gemini-2.5-flash", api=ClientAPI.GEMINI_COUNT_TOKENS)
    upstream = translator.translate_request(request, VERTEX, "gemini-2.5-flash")
    assert upstream.path == f"{VERTEX.path_prefix}/publishers/google/models/gemini-2.5-flash:countTokens"
    assert orjson.loads(upstream.body) == EXPLAIN  # the Gemini API's wrapped form, unwrapped for Vertex
    counted = gemini.count_tokens(upstream.body)
    assert counted.status == 200 and counted.body["totalTokens"] == 8
    assert translator.translate_response_body(orjson.dumps(counted.body), True) is None
    assert translator.usage is not None and translator.usage.total == 0
    plain = GeminiToVertex().translate_request(
        _request(EXPLAIN, "gemini-2.5-flash", api=ClientAPI.GEMINI_COUNT_TOKENS), VERTEX, "gemini-2.5-flash"
    )
    assert plain.body is None


# Found by tests/test_translate_fuzz.py: these reached the Gemini client as 200s (junk, an invented answer).
@pytest.mark.parametrize("answer", [b"<html>502 Bad Gateway</html>", b"[]", b'{"modelVersion": "g"}'])
def test_a_vertex_answer_that_is_not_one_is_a_502(answer: bytes) -> None:
    translator = GeminiToVertex()
    translator.translate_request(_request(EXPLAIN, "gemini-2.5-flash"), VERTEX, "gemini-2.5-flash")
    with pytest.raises(UpstreamShapeError) as refused:
        translator.translate_response_body(answer, True)
    assert refused.value.status == 502 and "Vertex AI" in refused.value.message


def test_parts_that_are_no_array_are_read_as_no_text() -> None:
    """Found by tests/test_translate_fuzz.py: ``"parts": 0.5`` was a TypeError (a 500) when tracing kept text."""
    translator = GeminiToVertex()
    request = _request(EXPLAIN, "gemini-2.5-flash")
    request.capture_output = True
    translator.translate_request(request, VERTEX, "gemini-2.5-flash")
    answer = {"candidates": [{"content": {"role": "model", "parts": 0.5}, "finishReason": "STOP"}]}
    assert translator.translate_response_body(orjson.dumps(answer), True) is None
    assert translator.answer.text == ""


def test_a_blocked_prompt_is_an_answer_not_a_502() -> None:
    translator = GeminiToVertex()
    translator.translate_request(_request(EXPLAIN, "gemini-2.5-flash"), VERTEX, "gemini-2.5-flash")
    blocked = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 3}}
    assert translator.translate_response_body(orjson.dumps(blocked), True) is None


@pytest.mark.parametrize("answer", [b'{"totalTokens": "many"}', b"null"])
def test_a_vertex_count_answer_without_a_count_is_a_502(answer: bytes) -> None:
    translator = GeminiToVertex()
    request = _request(EXPLAIN, "gemini-2.5-flash", api=ClientAPI.GEMINI_COUNT_TOKENS)
    translator.translate_request(request, VERTEX, "gemini-2.5-flash")
    with pytest.raises(UpstreamShapeError):
        translator.translate_response_body(answer, True)


def test_a_vertex_stream_cut_before_its_finish_reason_ends_with_an_error() -> None:
    translator = GeminiToVertex()
    translator.translate_request(_request(EXPLAIN, "gemini-2.5-flash", stream=True), VERTEX, "gemini-2.5-flash")
    first = {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]}}]}
    assert translator.translate_response_body(gemini.sse_frame(first), False) is None
    with pytest.raises(UpstreamShapeError) as cut:
        translator.translate_response_body(b"", True)
    assert "finishReason" in cut.value.message
    done = GeminiToVertex()
    done.translate_request(_request(EXPLAIN, "gemini-2.5-flash", stream=True), VERTEX, "gemini-2.5-flash")
    last = {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]}, "finishReason": "STOP"}]}
    assert done.translate_response_body(gemini.sse_frame(first) + gemini.sse_frame(last), True) is None


# ---- to OpenAI chat: requests -----------------------------------------------------------------------------


def _chat(body: dict[str, Any], stream: bool = False) -> dict[str, Any]:
    translator = GeminiToOpenAI()
    upstream = translator.translate_request(_request(body, "gpt-4o-mini", stream), OPENAI, "gpt-4o-mini")
    assert upstream.path == "/v1/chat/completions"
    assert set(upstream.remove_headers) == {"x-goog-api-key", "x-goog-api-client"}
    sent = orjson.loads(upstream.body)
    reply = openai_chat.chat_completion(sent, completion_id="chatcmpl-1", created=1)
    assert reply.status == 200, reply.body  # the fake OpenAI refuses what OpenAI refuses
    return sent


def test_the_reference_example() -> None:
    assert _chat(EXPLAIN) == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Explain how AI works in a few words"}],
    }


def test_the_function_calling_example_in_snake_case() -> None:
    sent = _chat(LIGHTS)
    assert sent["messages"][0] == {"role": "system", "content": "You are a helpful lighting system bot."}
    assert [tool["function"]["name"] for tool in sent["tools"]] == ["enable_lights", "set_light_color"]
    assert sent["tools"][0]["function"]["parameters"] == {"type": "object", "properties": {}}
    assert sent["tools"][1]["function"]["parameters"]["required"] == ["rgb_hex"]
    assert "tool_choice" not in sent  # auto is OpenAI's default


def test_a_function_call_history_keeps_the_call_ids() -> None:
    history = {
        **LIGHTS,
        "contents": [
            *LIGHTS["contents"],
            {"role": "model", "parts": [{"functionCall": {"id": "call_9", "name": "enable_lights", "args": {}}}]},
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"id": "call_9", "name": "enable_lights", "response": {"output": "on"}}}
                ],
            },
        ],
    }
    messages = _chat(history)["messages"]
    assert messages[2] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "enable_lights", "arguments": "{}"}}],
    }
    assert messages[3] == {"role": "tool", "tool_call_id": "call_9", "content": "on"}


def test_calls_without_ids_are_matched_by_name_in_order() -> None:
    """Vertex's calls carry no id: the gateway numbers them by place, the same on every replay."""
    body = {
        "contents": [
            {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}]},
            {
                "role": "model",
                "parts": [
                    {"text": "Checking.", "thought": True},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
                ],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"temp": 18}}},
                    {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
                ],
            },
        ]
    }
    messages = build_request(body, "gpt-4o-mini", False)["messages"]
    assert [call["id"] for call in messages[1]["tool_calls"]] == ["call_1_1", "call_1_2"]
    assert messages[1]["content"] is None  # the thought is not sent
    assert messages[2:] == [
        {"role": "tool", "tool_call_id": "call_1_1", "content": '{"temp":18}'},
        {"role": "tool", "tool_call_id": "call_1_2", "content": '{"temp":21}'},
    ]


def test_a_function_response_without_its_call_is_400() -> None:
    body = {"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "x", "response": {}}}]}]}
    with pytest.raises(GatewayError) as raised:
        build_request(body, "gpt-4o-mini", False)
    assert raised.value.status == 400 and "contents[0].parts[0].functionResponse" in raised.value.message


def test_generation_config_tool_config_and_thinking() -> None:
    body = {
        **LIGHTS,
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["set_light_color"]}},
        "generationConfig": {
            "maxOutputTokens": 256,
            "temperature": 0.3,
            "topP": 0.9,
            "topK": 40,
            "stopSequences": ["END"],
            "seed": 7,
            "responseMimeType": "application/json",
            "responseSchema": {"type": "OBJECT", "properties": {"ok": {"type": "BOOLEAN", "nullable": True}}},
            "thinkingConfig": {"thinkingBudget": 4096, "includeThoughts": True},
        },
    }
    del body["tool_config"]
    sent = build_request(body, "o4-mini", True)
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "set_light_color"}}
    assert (sent["max_completion_tokens"], sent["temperature"], sent["top_p"], sent["stop"], sent["seed"]) == (
        256,
        0.3,
        0.9,
        ["END"],
        7,
    )
    assert "top_k" not in sent and "topK" not in sent
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "response",
            "schema": {"type": "object", "properties": {"ok": {"type": ["boolean", "null"]}}},
        },
    }
    assert sent["reasoning_effort"] == "medium"
    assert sent["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("thinking", "effort"),
    [
        ({"thinkingBudget": 512}, "low"),
        ({"thinkingBudget": 24576}, "high"),
        ({"thinkingLevel": "HIGH"}, "high"),
        ({"thinkingBudget": 0}, None),
        ({"thinkingBudget": -1}, None),
    ],
)
def test_thinking_budgets_as_reasoning_effort(thinking: dict[str, Any], effort: str | None) -> None:
    sent = build_request({**EXPLAIN, "generationConfig": {"thinkingConfig": thinking}}, "o4-mini", False)
    assert sent.get("reasoning_effort") == effort


def test_media_parts() -> None:
    body = {
        "contents": [
            {
                "parts": [
                    {"text": "What is in these?"},
                    {"inline_data": {"mime_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
                    {"inlineData": {"mimeType": "text/plain", "data": "aGVsbG8="}},
                    {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.jpg"}},
                ]
            }
        ]
    }
    (message,) = build_request(body, "gpt-4o", False)["messages"]
    assert message["content"] == [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "file", "file": {"filename": "document.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
        {"type": "text", "text": "hello"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"tools": [{"googleSearch": {}}]}, "tools[0].googleSearch"),
        ({"tools": [{"code_execution": {}}]}, "tools[0].codeExecution"),
        ({"cachedContent": "cachedContents/abc"}, "cachedContent"),
        ({"generationConfig": {"responseLogprobs": True}}, "generationConfig.responseLogprobs"),
        ({"generationConfig": {"responseModalities": ["AUDIO"]}}, "generationConfig.responseModalities"),
        (
            {"contents": [{"parts": [{"fileData": {"mimeType": "video/mp4", "fileUri": "gs://b/v.mp4"}}]}]},
            "contents[0].parts[0].fileData",
        ),
        ({"contents": [{"parts": [{"executableCode": {"code": "1"}}]}]}, "contents[0].parts[0]"),
    ],
)
def test_what_an_openai_backend_cannot_take_is_422_naming_the_field(extra: dict[str, Any], field: str) -> None:
    with pytest.raises(GatewayError) as raised:
        build_request({**EXPLAIN, **extra}, "gpt-4o-mini", False)
    assert raised.value.status == 422 and f"`{field}`" in raised.value.message


def test_gemini_schemas_become_json_schemas() -> None:
    schema = {
        "type": "OBJECT",
        "property_ordering": ["size", "tags"],
        "properties": {
            "size": {"type": "INTEGER", "format": "enum", "enum": ["1", "2"]},
            "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "min_items": 1},
            "any_of": {"anyOf": [{"type": "STRING"}, {"type": "NUMBER"}], "nullable": True},
        },
        "required": ["size"],
    }
    assert json_schema(schema) == {
        "type": "object",
        "properties": {
            "size": {"type": "integer", "enum": [1, 2]},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "any_of": {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "null"}]},
        },
        "required": ["size"],
    }


# ---- to OpenAI chat: answers ------------------------------------------------------------------------------

COMPLETION = {
    "id": "chatcmpl-123",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Turning them on.",
                "tool_calls": [
                    {"id": "call_abc", "type": "function", "function": {"name": "enable_lights", "arguments": "{}"}}
                ],
            },
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 20,
        "completion_tokens": 12,
        "total_tokens": 32,
        "prompt_tokens_details": {"cached_tokens": 8},
        "completion_tokens_details": {"reasoning_tokens": 4},
    },
}


def test_an_answer_becomes_a_generate_content_response() -> None:
    translator = GeminiToOpenAI()
    translator.translate_request(_request(LIGHTS, "gpt-4o-mini"), OPENAI, "gpt-4o-mini")
    changes = translator.translate_response_headers({"content-length": "99"})
    assert changes is not None and "content-length" in changes.remove_headers
    out = orjson.loads(translator.translate_response_body(orjson.dumps(COMPLETION), True))
    response = types.GenerateContentResponse.model_validate(out)
    assert response.text == "Turning them on."
    assert response.function_calls[0].id == "call_abc" and response.function_calls[0].name == "enable_lights"
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    assert out["usageMetadata"] == {
        "promptTokenCount": 20,
        "candidatesTokenCount": 8,
        "thoughtsTokenCount": 4,
        "cachedContentTokenCount": 8,
        "totalTokenCount": 32,
    }
    assert (out["modelVersion"], out["responseId"]) == ("gpt-4o-mini-2024-07-18", "chatcmpl-123")
    assert translator.usage is not None and (translator.usage.input, translator.usage.output) == (20, 12)


@pytest.mark.parametrize(("finish", "gemini_finish"), [("length", "MAX_TOKENS"), ("content_filter", "SAFETY")])
def test_finish_reasons(finish: str, gemini_finish: str) -> None:
    translator = GeminiToOpenAI()
    translator.translate_request(_request(EXPLAIN, "gpt-4o-mini"), OPENAI, "gpt-4o-mini")
    completion = {**COMPLETION, "choices": [{**COMPLETION["choices"][0], "finish_reason": finish}]}
    out = orjson.loads(translator.translate_response_body(orjson.dumps(completion), True))
    assert out["candidates"][0]["finishReason"] == gemini_finish


@pytest.mark.parametrize("answer", [b'"STOP"', b"\xe8\x1e\xe4y", b'{"id": "chatcmpl-1"}'])
def test_a_chat_answer_that_is_not_one_is_a_502_not_passed_on(answer: bytes) -> None:
    """Found by tests/test_translate_fuzz.py: a 2xx that was no chat completion went to the client as is."""
    translator = GeminiToOpenAI()
    translator.translate_request(_request(EXPLAIN, "gpt-4o-mini"), OPENAI, "gpt-4o-mini")
    with pytest.raises(UpstreamShapeError) as refused:
        translator.translate_response_body(answer, True)
    assert refused.value.status == 502


def test_tool_calls_that_are_no_array_are_no_function_calls() -> None:
    """Found by tests/test_translate_fuzz.py: ``"tool_calls": true`` was a TypeError (a 500)."""
    translator = GeminiToOpenAI()
    translator.translate_request(_request(EXPLAIN, "gpt-4o-mini"), OPENAI, "gpt-4o-mini")
    choice = {**COMPLETION["choices"][0], "message": {"role": "assistant", "content": "Hi", "tool_calls": True}}
    out = orjson.loads(translator.translate_response_body(orjson.dumps({**COMPLETION, "choices": [choice]}), True))
    assert out["candidates"][0]["content"]["parts"] == [{"text": "Hi"}]


def test_a_provider_error_is_in_googles_shape_with_its_status() -> None:
    translator = GeminiToOpenAI()
    translator.translate_request(_request(EXPLAIN, "gpt-4o-mini"), OPENAI, "gpt-4o-mini")
    openai_error = openai_chat.error_body("Rate limit reached for gpt-4o-mini", "requests", None, "rate_limit_exceeded")
    headers = {"content-type": "application/json"}
    out = orjson.loads(translator.translate_error(429, headers, orjson.dumps(openai_error)))
    assert out == {
        "error": {"code": 429, "message": "Rate limit reached for gpt-4o-mini", "status": "RESOURCE_EXHAUSTED"}
    }
    other = GeminiToOpenAI()
    other.translate_request(_request(EXPLAIN, "gpt-4o-mini"), OPENAI, "gpt-4o-mini")
    assert orjson.loads(other.translate_error(502, {}, b"<html>bad gateway</html>"))["error"]["message"] == (
        "<html>bad gateway</html>"
    )


def _openai_stream(chunks: list[dict[str, Any]], done: bool = True) -> bytes:
    return b"".join(openai_chat.sse_frame(chunk) for chunk in chunks) + (b"data: [DONE]\n\n" if done else b"")


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-s",
        "object": "chat.completion.chunk",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


TOOL_STREAM = [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"content": "Turning"}),
    _chunk({"content": " on."}),
    _chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "set_light_color", "arguments": ""},
                }
            ]
        }
    ),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"rgb_'}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'hex": "ff0000"}'}}]}),
    _chunk({}, "tool_calls"),
    {
        "id": "chatcmpl-s",
        "object": "chat.completion.chunk",
        "model": "gpt-4o-mini",
        "choices": [],
        "usage": {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39},
    },
]


def _streaming() -> GeminiToOpenAI:
    translator = GeminiToOpenAI()
    upstream = translator.translate_request(_request(LIGHTS, "gpt-4o-mini", True), OPENAI, "gpt-4o-mini")
    assert orjson.loads(upstream.body)["stream_options"] == {"include_usage": True}
    return translator


def test_a_stream_becomes_gemini_events_with_whole_function_calls_and_the_usage_last() -> None:
    translator = _streaming()
    assert translator.translate_response_headers({"content-type": "text/event-stream"}) is None
    events = _events(translator.translate_response_body(_openai_stream(TOOL_STREAM), True))
    responses = [types.GenerateContentResponse.model_validate(event) for event in events]
    assert "".join(r.text or "" for r in responses[:-1]) == "Turning on."
    final = responses[-1]
    assert final.function_calls[0].name == "set_light_color" and final.function_calls[0].args == {"rgb_hex": "ff0000"}
    assert final.function_calls[0].id == "call_1"
    assert final.candidates[0].finish_reason == types.FinishReason.STOP
    assert final.usage_metadata.prompt_token_count == 30 and final.usage_metadata.total_token_count == 39
    assert all("usageMetadata" not in event for event in events[:-1])
    assert translator.usage is not None and translator.usage.total == 39


def test_a_stream_is_translated_as_it_comes() -> None:
    translator = _streaming()
    first = translator.translate_response_body(openai_chat.sse_frame(TOOL_STREAM[1]), False)
    assert _events(first)[0]["candidates"][0]["content"]["parts"] == [{"text": "Turning"}]


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=10))
def test_stream_translation_is_the_same_for_any_split(cuts: list[int]) -> None:
    raw = _openai_stream(TOOL_STREAM)
    whole = _events(_streaming().translate_response_body(raw, True))
    translator = _streaming()
    points = sorted({min(cut, len(raw)) for cut in cuts})
    pieces = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    out = b"".join(
        translator.translate_response_body(piece, index == len(pieces) - 1) or b"" for index, piece in enumerate(pieces)
    )
    assert _events(out) == whole


def test_an_error_mid_stream_and_a_cut_stream_end_with_a_google_error_event() -> None:
    translator = _streaming()
    failure = openai_chat.sse_frame(
        {"error": {"message": "The server had an error", "type": "server_error", "code": None}}
    )
    events = _events(translator.translate_response_body(_openai_stream(TOOL_STREAM[:2], done=False) + failure, True))
    assert events[-1] == {"error": {"code": 500, "message": "The server had an error", "status": "INTERNAL"}}

    cut = _streaming()
    events = _events(cut.translate_response_body(_openai_stream(TOOL_STREAM[:3], done=False), True))
    assert events[-1]["error"]["code"] == 502 and "ended before" in events[-1]["error"]["message"]


# ---- through OpenAI chat to Claude --------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_to_anthropic_the_fake_accepts_it_and_the_answer_is_geminis(stream: bool) -> None:
    factory = translator_for(ClientAPI.GEMINI_GENERATE, "Anthropic")
    assert factory is not None
    translator = factory()
    upstream = translator.translate_request(
        _request(LIGHTS, "claude-sonnet-4-6", stream), ANTHROPIC, "claude-sonnet-4-6"
    )
    assert upstream.path == "/v1/messages"
    assert {"x-goog-api-key", "x-goog-api-client"} <= set(upstream.remove_headers)
    sent = orjson.loads(upstream.body)
    assert sent["system"] == [{"type": "text", "text": "You are a helpful lighting system bot."}]
    assert sent["max_tokens"] == 4096  # Anthropic needs one; Gemini clients often set none
    reply = anthropic_messages.create_message(
        upstream.body, {"x-api-key": "k", **upstream.set_headers}, message_id="msg_1"
    )
    assert reply.status == 200, reply.body
    if stream:
        raw = b"".join(anthropic_messages.sse_frame(event) for event in reply.events)
        events = _events(translator.translate_response_body(raw, True))
        final = types.GenerateContentResponse.model_validate(events[-1])
    else:
        final = types.GenerateContentResponse.model_validate(
            orjson.loads(translator.translate_response_body(orjson.dumps(reply.body), True))
        )
    (call,) = final.function_calls  # the fake calls the first tool
    assert call.name == "enable_lights" and call.id.startswith("toolu_")
    assert final.usage_metadata.total_token_count == translator.usage.total > 0


def test_keepalives_never_reach_a_gemini_client_whose_sdk_would_read_them_as_json() -> None:
    """google-genai parses every non-`data:` line as JSON, so the `: ping` OpenAI clients get is kept from it."""
    import httpx
    from google.genai import _api_client

    translator = translator_for(ClientAPI.GEMINI_GENERATE, "Anthropic")()
    upstream = translator.translate_request(
        _request(EXPLAIN, "claude-sonnet-4-6", True), ANTHROPIC, "claude-sonnet-4-6"
    )
    reply = anthropic_messages.create_message(
        upstream.body, {"x-api-key": "k", **upstream.set_headers}, message_id="msg_1"
    )
    events = [reply.events[0], {"type": "ping"}, {"type": "ping"}, *reply.events[1:]]
    raw = b"".join(anthropic_messages.sse_frame(event) for event in events)
    out = translator.translate_response_body(raw, True)
    assert b"ping" not in out
    segments = list(_api_client.HttpResponse({}, httpx.Response(200, content=out)).segments())
    assert segments and all("candidates" in segment or "usageMetadata" in segment for segment in segments)


# ---- found by tests/test_translate_fuzz.py ----------------------------------------------------------------


def test_a_stream_done_without_any_choice_still_ends_with_a_finish_reason() -> None:
    """The google-genai SDK knows an answer ended by its finishReason: ``[DONE]`` after no choice at all
    (an empty answer) once ended with ``"candidates": []``, which no Gemini client reads as an end."""
    usage_only = {**TOOL_STREAM[-1]}
    out = _events(_streaming().translate_response_body(_openai_stream([usage_only]), True))
    assert out[-1]["candidates"] == [{"content": {"role": "model", "parts": []}, "index": 0, "finishReason": "STOP"}]
    assert out[-1]["usageMetadata"]["totalTokenCount"] == 39


@pytest.mark.parametrize(
    "bad", [{"choices": 5}, {"choices": [{"index": 0, "delta": {"content": "Hi", "tool_calls": True}}]}]
)
def test_stream_chunks_with_non_array_choices_or_tool_calls_are_read_as_none(bad: dict[str, Any]) -> None:
    """They were TypeErrors (a 500 cutting the stream with no error event)."""
    chunks = [{**_chunk({}), **bad}, _chunk({}, "stop")]
    out = _events(_streaming().translate_response_body(_openai_stream(chunks), True))
    assert out[-1]["candidates"][0]["finishReason"] == "STOP"
    assert all("functionCall" not in part for event in out for part in event["candidates"][0]["content"]["parts"])


def test_no_reasoning_effort_for_gpt_4o_which_refuses_it() -> None:
    sent = build_request({**EXPLAIN, "generationConfig": {"thinkingConfig": {"thinkingBudget": 4096}}}, "gpt-4o", False)
    assert "reasoning_effort" not in sent
