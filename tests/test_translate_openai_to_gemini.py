"""OpenAI client → Gemini on Vertex AI: requests rebuilt for generateContent, answers and streams translated back.

Gemini-side examples follow the documented shapes of Vertex AI's GenerateContentRequest/Response and its
``alt=sse`` stream; translated requests are checked against the official ``google-genai`` SDK's types and
the fake Vertex provider's validation, translated answers against the official ``openai`` SDK's types.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from google.genai import types as genai_types
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tokenvoy.config.model import Backend, Endpoint
from tokenvoy.extproc.errors import GatewayError, UpstreamShapeError
from tokenvoy.extproc.translate import translator_for
from tokenvoy.extproc.translate.base import ClientAPI, ClientRequest
from tokenvoy.extproc.translate.gemini_common import gemini_schema, usage_from_gemini
from tokenvoy.extproc.translate.openai_to_gemini import SIGNATURE_SEPARATOR, OpenAIToGemini
from tokenvoy.extproc.usage import TokenUsage
from tokenvoy.testupstream import gemini

BACKEND = Backend(
    name="vertex",
    schema="GCPVertexAI",
    schema_version=None,
    path_prefix="/v1/projects/my-project/locations/us-central1",
    endpoint=Endpoint("us-central1-aiplatform.googleapis.com", 443, tls=True),
)
MODEL = "gemini-2.5-flash"
NOW = 1_700_000_000
USER = {"role": "user", "content": "Hello, Gemini"}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string", "description": "The city and state"}},
            "required": ["location"],
            "additionalProperties": False,
        },
    },
}
GEMINI_WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "parameters": {
        "type": "OBJECT",
        "properties": {"location": {"type": "STRING", "description": "The city and state"}},
        "required": ["location"],
    },
}


def _ids() -> Iterator[str]:
    return (f"id{n}" for n in itertools.count(1))


def _request(body: dict[str, Any]) -> ClientRequest:
    body = {"model": MODEL, **body}
    return ClientRequest(
        api=ClientAPI.OPENAI_CHAT,
        path="/v1/chat/completions",
        raw=orjson.dumps(body),
        body=body,
        model=body["model"],
        stream=body.get("stream") is True,
        needs_usage=True,
    )


def _translator(body: dict[str, Any], model: str = MODEL, backend: Backend = BACKEND):
    ids = _ids()
    translator = OpenAIToGemini(clock=lambda: NOW, new_id=lambda: next(ids))
    upstream = translator.translate_request(_request(body), backend, model)
    return translator, upstream


def _sent(body: dict[str, Any]) -> dict[str, Any]:
    _, upstream = _translator(body)
    assert upstream.body is not None
    return orjson.loads(upstream.body)


def _rejected(body: dict[str, Any]) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        _translator(body)
    return caught.value


def _official(sent: dict[str, Any]) -> None:
    """The body's pieces validate as the official google-genai SDK's types (which forbid unknown fields)."""
    for content in sent["contents"]:
        genai_types.Content.model_validate(content)
    if "systemInstruction" in sent:
        genai_types.Content.model_validate(sent["systemInstruction"])
    for tool in sent.get("tools", ()):
        genai_types.Tool.model_validate(tool)
    if "toolConfig" in sent:
        genai_types.ToolConfig.model_validate(sent["toolConfig"])
    if "generationConfig" in sent:
        genai_types.GenerationConfig.model_validate(sent["generationConfig"])


def _accepted_by_fake(sent: dict[str, Any]) -> gemini.GeminiReply:
    reply = gemini.generate_content(orjson.dumps(sent), MODEL, stream=False, response_id="r")
    assert reply.status == 200, reply.body
    return reply


# ---- requests ----------------------------------------------------------------------------------------


def test_registered_for_the_vertex_schema():
    factory = translator_for(ClientAPI.OPENAI_CHAT, "GCPVertexAI")
    assert factory is not None
    assert isinstance(factory(), OpenAIToGemini)


@pytest.mark.parametrize(("stream", "suffix"), [(False, ":generateContent"), (True, ":streamGenerateContent?alt=sse")])
def test_path_headers_and_model_in_the_path(stream, suffix):
    _, upstream = _translator({"messages": [USER], "stream": stream}, model="gemini-2.5-pro")
    assert (
        upstream.path
        == f"/v1/projects/my-project/locations/us-central1/publishers/google/models/gemini-2.5-pro{suffix}"
    )
    assert upstream.set_headers == {"content-type": "application/json"}
    assert orjson.loads(upstream.body) == {"contents": [{"role": "user", "parts": [{"text": "Hello, Gemini"}]}]}


def test_without_credentials_the_prefix_is_empty():
    backend = Backend("g", "GCPVertexAI", None, "", Endpoint("proxy", 8080))
    _, upstream = _translator({"messages": [USER]}, backend=backend)
    assert upstream.path == f"/publishers/google/models/{MODEL}:generateContent"


def test_system_developer_and_roles():
    sent = _sent(
        {
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
                USER,
                {"role": "assistant", "content": "Bonjour !"},
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "How are you?"},
                {"role": "user", "content": [{"type": "text", "text": "And the weather?"}]},
                {"role": "assistant", "content": ""},
            ]
        }
    )
    assert sent["systemInstruction"] == {
        "parts": [{"text": "You are a helpful assistant."}, {"text": "Answer in French."}, {"text": "Be brief."}]
    }
    assert sent["contents"] == [
        {"role": "user", "parts": [{"text": "Hello, Gemini"}]},
        {"role": "model", "parts": [{"text": "Bonjour !"}]},
        {"role": "user", "parts": [{"text": "How are you?"}, {"text": "And the weather?"}]},
    ]
    _official(sent)
    _accepted_by_fake(sent)


def test_generation_config():
    sent = _sent(
        {
            "messages": [USER],
            "max_tokens": 100,
            "max_completion_tokens": 50,  # the newer name wins
            "temperature": 0.2,
            "top_p": 0.9,
            "top_k": 40,
            "n": 2,
            "seed": 7,
            "presence_penalty": 0.5,
            "frequency_penalty": -0.5,
            "stop": "END",
            "user": "alice",  # no Gemini equivalent: dropped
            "parallel_tool_calls": False,
        }
    )
    assert sent["generationConfig"] == {
        "maxOutputTokens": 50,
        "temperature": 0.2,
        "topP": 0.9,
        "topK": 40,
        "presencePenalty": 0.5,
        "frequencyPenalty": -0.5,
        "candidateCount": 2,
        "seed": 7,
        "stopSequences": ["END"],
    }
    assert set(sent) == {"contents", "generationConfig"}
    _official(sent)
    _accepted_by_fake(sent)


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        ({"type": "text"}, {}),
        ({"type": "json_object"}, {"responseMimeType": "application/json"}),
        (
            {
                "type": "json_schema",
                "json_schema": {
                    "name": "answer",
                    "strict": True,
                    "schema": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}, "temp": {"type": ["number", "null"]}},
                        "required": ["city", "temp"],
                        "additionalProperties": False,
                    },
                },
            },
            {
                "responseMimeType": "application/json",
                "responseSchema": {
                    "type": "OBJECT",
                    "properties": {"city": {"type": "STRING"}, "temp": {"type": "NUMBER", "nullable": True}},
                    "required": ["city", "temp"],
                },
            },
        ),
    ],
)
def test_response_format(response_format, expected):
    sent = _sent({"messages": [USER], "response_format": response_format})
    assert sent.get("generationConfig", {}) == expected
    _official(sent)
    _accepted_by_fake(sent)


@pytest.mark.parametrize(
    ("effort", "budget"),
    [("none", 0), ("minimal", 512), ("low", 1024), ("medium", 8192), ("high", 24576), ("xhigh", 32768)],
)
def test_reasoning_effort_becomes_a_thinking_budget_with_thoughts_shown(effort, budget):
    sent = _sent({"messages": [USER], "reasoning_effort": effort, "max_completion_tokens": 40000})
    assert sent["generationConfig"] == {
        "maxOutputTokens": 40000,  # Gemini counts thoughts inside it, as OpenAI does: unchanged
        "thinkingConfig": {"thinkingBudget": budget, "includeThoughts": budget > 0},
    }


def test_unknown_reasoning_effort_is_400():
    error = _rejected({"messages": [USER], "reasoning_effort": "extreme"})
    assert error.status == 400 and "reasoning_effort" in error.message


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, None),
        ("auto", None),
        ("required", {"mode": "ANY"}),
        ("none", {"mode": "NONE"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ],
)
def test_tools_and_tool_choice(choice, expected):
    body: dict[str, Any] = {"messages": [USER], "tools": [WEATHER_TOOL]}
    if choice is not None:
        body["tool_choice"] = choice
    sent = _sent(body)
    # additionalProperties, which Gemini refuses, is gone
    assert sent["tools"] == [{"functionDeclarations": [GEMINI_WEATHER]}]
    assert sent.get("toolConfig") == (None if expected is None else {"functionCallingConfig": expected})
    _official(sent)
    _accepted_by_fake(sent)


def test_a_named_tool_choice_must_be_offered():
    error = _rejected(
        {"messages": [USER], "tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}}
    )
    assert error.status == 400 and "tool_choice.function.name" in error.message


def test_tool_without_parameters_gets_no_parameters():
    no_params = {"type": "function", "function": {"name": "now"}}
    empty = {"type": "function", "function": {"name": "today", "parameters": {"type": "object", "properties": {}}}}
    sent = _sent({"messages": [USER], "tools": [no_params, empty]})
    assert sent["tools"] == [{"functionDeclarations": [{"name": "now"}, {"name": "today"}]}]
    _accepted_by_fake(sent)


# A pydantic-style schema with every JSON Schema construct Gemini's subset lacks.
PYDANTIC_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$defs": {
        "Unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "title": "Unit"},
        "Place": {
            "type": "object",
            "properties": {"city": {"type": "string", "minLength": 1}, "country": {"type": "string", "format": "iso"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
    "type": "object",
    "title": "Query",
    "properties": {
        "place": {"$ref": "#/$defs/Place", "description": "Where"},
        "unit": {"anyOf": [{"$ref": "#/$defs/Unit"}, {"type": "null"}], "default": None},
        "days": {"type": "integer", "exclusiveMinimum": 0, "maximum": 14, "multipleOf": 1},
        "level": {"enum": [1, 2, 3]},
        "mode": {"const": "fast"},
        "when": {"type": "string", "format": "date-time"},
        "link": {"type": "string", "format": "uri"},
        "id": {"type": ["string", "integer"]},
        "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True, "minItems": 1},
        "either": {"oneOf": [{"type": "string"}, {"type": "number"}]},
        "wrapped": {"allOf": [{"$ref": "#/$defs/Unit"}], "description": "A unit"},
    },
    "required": ["place", "days", "ghost"],
    "additionalProperties": False,
}
GEMINI_PYDANTIC = {
    "type": "OBJECT",
    "title": "Query",
    "properties": {
        "place": {
            "type": "OBJECT",
            "description": "Where",
            "properties": {"city": {"type": "STRING", "minLength": 1}, "country": {"type": "STRING"}},
            "required": ["city"],
        },
        "unit": {
            "type": "STRING",
            "title": "Unit",
            "enum": ["celsius", "fahrenheit"],
            "default": None,
            "nullable": True,
        },
        "days": {"type": "INTEGER", "maximum": 14},
        "level": {"type": "INTEGER", "enum": ["1", "2", "3"], "format": "enum"},
        "mode": {"type": "STRING", "enum": ["fast"]},
        "when": {"type": "STRING", "format": "date-time"},
        "link": {"type": "STRING"},
        "id": {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]},
        "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "minItems": 1},
        "either": {"anyOf": [{"type": "STRING"}, {"type": "NUMBER"}]},
        "wrapped": {"type": "STRING", "title": "Unit", "enum": ["celsius", "fahrenheit"], "description": "A unit"},
    },
    "required": ["place", "days"],  # "ghost" is no property: Gemini would refuse it
}


def test_json_schema_is_converted_to_geminis_openapi_subset():
    assert gemini_schema(PYDANTIC_SCHEMA, "p") == GEMINI_PYDANTIC
    tool = {"type": "function", "function": {"name": "lookup", "parameters": PYDANTIC_SCHEMA}}
    sent = _sent({"messages": [USER], "tools": [tool], "tool_choice": "required"})
    assert sent["tools"][0]["functionDeclarations"][0]["parameters"] == GEMINI_PYDANTIC
    _official(sent)
    answer = _accepted_by_fake(sent).body
    assert answer["candidates"][0]["content"]["parts"][0]["functionCall"]["name"] == "lookup"


@pytest.mark.parametrize(
    ("schema", "field"),
    [
        (
            {"$defs": {"N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}}}, "$ref": "#/$defs/N"},
            "$ref",
        ),
        ({"type": "object", "properties": {"x": {"$ref": "#/components/X"}}}, "properties.x.$ref"),
        ({"type": "object", "properties": {"x": {"allOf": [{"type": "string"}, {"minLength": 2}]}}}, "x.allOf"),
        ({"type": "object", "properties": {"x": {"type": "null"}}}, "properties.x.type"),
        ({"type": "object", "properties": {"x": {"type": "array", "items": [{"type": "string"}]}}}, "x.items"),
    ],
)
def test_schemas_gemini_cannot_express_are_422_naming_the_place(schema, field):
    tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
    error = _rejected({"messages": [USER], "tools": [tool]})
    assert error.status == 422
    assert "tools[0].function.parameters" in error.message and field in error.message


@pytest.mark.parametrize("kind", [[{}], [["string"]], {}, 3, [None]])
def test_a_schema_type_that_is_no_type_name_is_a_400_naming_the_field(kind):
    """Found by fuzzing: ``"type": [{}]`` crashed the converter (a 500 with a traceback)."""
    tool = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": kind}}}},
    }
    error = _rejected({"messages": [USER], "tools": [tool]})
    assert error.status == 400
    assert "tools[0].function.parameters.properties.x.type" in error.message


CONVERSATION = [
    {"role": "user", "content": "Weather in Paris and Tokyo?"},
    {
        "role": "assistant",
        "content": "Checking both.",
        "tool_calls": [
            {
                "id": "call_a",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
            },
            {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_b", "content": '{"time": "09:00"}'},
    {"role": "tool", "tool_call_id": "call_a", "content": [{"type": "text", "text": "sunny, 21 degrees"}]},
]
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


def test_parallel_tool_calls_and_results_matched_by_id():
    sent = _sent({"messages": CONVERSATION, "tools": [WEATHER_TOOL, TIME_TOOL]})
    assert sent["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Paris and Tokyo?"}]},
        {
            "role": "model",
            "parts": [
                {"text": "Checking both."},
                {"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}},
                {"functionCall": {"name": "get_time", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                # A JSON object result is the response as is; other text goes under "output".
                {"functionResponse": {"name": "get_time", "response": {"time": "09:00"}}},
                {"functionResponse": {"name": "get_weather", "response": {"output": "sunny, 21 degrees"}}},
            ],
        },
    ]
    _official(sent)
    answer = _accepted_by_fake(sent).body
    assert "text" in answer["candidates"][0]["content"]["parts"][0]  # after the results: a text answer


def test_thought_signature_carried_in_the_tool_call_id_is_restored():
    signed = f"call_x{SIGNATURE_SEPARATOR}{gemini.THOUGHT_SIGNATURE}"
    messages = [
        USER,
        {
            "role": "assistant",
            "tool_calls": [{"id": signed, "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": signed, "content": "rain"},
    ]
    sent = _sent({"messages": messages, "tools": [WEATHER_TOOL]})
    assert sent["contents"][1]["parts"] == [
        {"functionCall": {"name": "get_weather", "args": {}}, "thoughtSignature": gemini.THOUGHT_SIGNATURE}
    ]
    _official(sent)
    _accepted_by_fake(sent)


def test_a_tool_result_for_an_unknown_call_is_400():
    error = _rejected({"messages": [USER, {"role": "tool", "tool_call_id": "call_zzz", "content": "x"}]})
    assert error.status == 400
    assert "messages[1].tool_call_id" in error.message and "call_zzz" in error.message


def test_images_audio_and_files():
    content = [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "gs://bucket/cat.jpeg"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/dog.webp?size=2"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
    ]
    sent = _sent({"messages": [{"role": "user", "content": content}]})
    assert sent["contents"][0]["parts"] == [
        {"text": "What is in these?"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "gs://bucket/cat.jpeg"}},
        {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/dog.webp?size=2"}},
        {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
    ]
    _official(sent)
    _accepted_by_fake(sent)


@pytest.mark.parametrize(
    ("part", "field"),
    [
        ({"type": "image_url", "image_url": {"url": "https://example.com/picture"}}, "content[0].image_url.url"),
        ({"type": "image_url", "image_url": {"url": "ftp://example.com/a.png"}}, "content[0].image_url.url"),
        ({"type": "file", "file": {"file_id": "file-abc"}}, "content[0].file"),
        ({"type": "video_url", "video_url": {"url": "x"}}, "content[0]"),
    ],
)
def test_parts_gemini_cannot_take_are_422(part, field):
    error = _rejected({"messages": [{"role": "user", "content": [part]}]})
    assert error.status == 422 and f"messages[0].{field}" in error.message


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
        ({"web_search_options": {}}, "web_search_options"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0]"),
        ({"tools": [WEATHER_TOOL], "tool_choice": {"type": "allowed_tools", "allowed_tools": {}}}, "tool_choice"),
        ({"messages": [{"role": "system", "content": "only a system prompt"}]}, "messages"),
        ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role"),
        (
            {
                "messages": [
                    USER,
                    {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}]},
                ]
            },
            "messages[1].tool_calls[0].function.arguments",
        ),
    ],
)
def test_what_gemini_cannot_express_is_422_naming_the_field(extra, field):
    error = _rejected({"messages": [USER], **extra})
    assert error.status == 422
    assert f"`{field}`" in error.message


def test_defaults_of_unsupported_fields_are_accepted():
    sent = _sent({"messages": [USER], "logprobs": False, "top_logprobs": 0, "logit_bias": {}, "n": 1, "stop": []})
    assert set(sent) == {"contents"}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"messages": "hi"},
        {"messages": [USER], "max_tokens": 0},
        {"messages": [USER], "temperature": "hot"},
        {"messages": [USER], "stop": 3},
        {"messages": [USER], "response_format": {"type": "yaml"}},
        {"messages": [{"role": "robot", "content": "x"}]},
        {"messages": [USER, {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]}]},
    ],
)
def test_malformed_openai_requests_are_400(body):
    assert _rejected(body).status == 400


# ---- non-streamed responses ------------------------------------------------------------------------------

RESPONSE = {
    "candidates": [
        {
            "content": {"role": "model", "parts": [{"text": "Hi! I am "}, {"text": "Gemini."}]},
            "finishReason": "STOP",
            "avgLogprobs": -0.2,
        }
    ],
    "usageMetadata": {
        "promptTokenCount": 1210,
        "candidatesTokenCount": 12,
        "totalTokenCount": 1262,
        "thoughtsTokenCount": 40,
        "cachedContentTokenCount": 1000,
        "trafficType": "ON_DEMAND",
    },
    "modelVersion": "gemini-2.5-flash-001",
    "createTime": "2025-03-14T09:26:53.713052Z",
    "responseId": "bfPTZ_ToK6vrmecPxcOIkQs",
}
NORMALISED = TokenUsage(input=1210, cached_input=1000, output=52, reasoning=40, total=1262)


def _answer(translator: OpenAIToGemini, status: int, body: bytes) -> bytes:
    if 200 <= status < 300:
        out = translator.translate_response_body(body, True)
    else:  # as the router calls it: errors have their own method
        out = translator.translate_error(status, {"content-type": "application/json"}, body)
    assert out is not None
    return out


def test_text_answer_usage_and_model():
    translator, _ = _translator({"messages": [USER]})
    changes = translator.translate_response_headers({"content-type": "application/json", "content-length": "9"})
    assert changes is not None and "content-length" in changes.remove_headers
    completion = orjson.loads(_answer(translator, 200, orjson.dumps(RESPONSE)))
    ChatCompletion.model_validate(completion)
    assert completion == {
        "id": "bfPTZ_ToK6vrmecPxcOIkQs",
        "object": "chat.completion",
        "created": 1741944413,  # Gemini's createTime
        "model": "gemini-2.5-flash-001",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi! I am Gemini.", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 1210,
            "completion_tokens": 52,  # candidates + thoughts: OpenAI counts reasoning as completion
            "total_tokens": 1262,
            "prompt_tokens_details": {"cached_tokens": 1000},
            "completion_tokens_details": {"reasoning_tokens": 40},
        },
    }
    assert translator.usage == NORMALISED
    assert translator.response_model == "gemini-2.5-flash-001"


def test_tool_calls_thoughts_and_signatures_answer():
    response = {
        **RESPONSE,
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "The user wants weather.", "thought": True},
                        {"text": "I'll check both cities."},
                        {
                            "functionCall": {"name": "get_weather", "args": {"location": "San Francisco, CA"}},
                            "thoughtSignature": "c2lnbmF0dXJl",
                        },
                        {"functionCall": {"name": "get_weather", "args": {"location": "New York, NY"}}},
                    ],
                },
                "finishReason": "STOP",
            }
        ],
    }
    translator, _ = _translator({"messages": [USER], "tools": [WEATHER_TOOL]})
    completion = ChatCompletion.model_validate_json(_answer(translator, 200, orjson.dumps(response)))
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "I'll check both cities."
    assert choice.message.model_extra == {"reasoning_content": "The user wants weather."}
    assert [(c.id, c.function.name, orjson.loads(c.function.arguments)) for c in choice.message.tool_calls] == [
        (f"call_id1{SIGNATURE_SEPARATOR}c2lnbmF0dXJl", "get_weather", {"location": "San Francisco, CA"}),
        ("call_id2", "get_weather", {"location": "New York, NY"}),
    ]
    # The client sends the history back: the signature is on the call again, and the results match by id.
    history = [
        USER,
        choice.message.model_dump(exclude_none=True),
        *({"role": "tool", "tool_call_id": c.id, "content": "sunny"} for c in choice.message.tool_calls),
    ]
    sent = _sent({"messages": history, "tools": [WEATHER_TOOL]})
    calls = [p for p in sent["contents"][1]["parts"] if "functionCall" in p]
    assert [p.get("thoughtSignature") for p in calls] == ["c2lnbmF0dXJl", None]
    assert len(sent["contents"][2]["parts"]) == 2
    _accepted_by_fake(sent)


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
        ("OTHER", "stop"),
    ],
)
def test_finish_reasons(reason, finish):
    translator, _ = _translator({"messages": [USER]})
    response = {**RESPONSE, "candidates": [{**RESPONSE["candidates"][0], "finishReason": reason}]}
    assert orjson.loads(_answer(translator, 200, orjson.dumps(response)))["choices"][0]["finish_reason"] == finish


def test_several_candidates_are_several_choices():
    response = {
        **RESPONSE,
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": "one"}]}, "finishReason": "STOP"},
            {"content": {"role": "model", "parts": [{"text": "two"}]}, "finishReason": "MAX_TOKENS", "index": 1},
        ],
    }
    translator, _ = _translator({"messages": [USER], "n": 2})
    completion = ChatCompletion.model_validate_json(_answer(translator, 200, orjson.dumps(response)))
    assert [(c.index, c.message.content, c.finish_reason) for c in completion.choices] == [
        (0, "one", "stop"),
        (1, "two", "length"),
    ]


def test_a_blocked_prompt_is_a_content_filter_finish():
    response = {
        "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
        "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8},
        "modelVersion": "gemini-2.5-flash",
    }
    translator, _ = _translator({"messages": [USER]})
    completion = ChatCompletion.model_validate_json(_answer(translator, 200, orjson.dumps(response)))
    assert [(c.message.content, c.finish_reason) for c in completion.choices] == [(None, "content_filter")]
    assert completion.id.startswith("chatcmpl-") and completion.created == NOW  # no responseId nor createTime
    assert translator.usage == TokenUsage(input=8, total=8)


@pytest.mark.parametrize("body", [b"<html></html>", b"null", b"[]", b"", b"\x89PNG", b'{"modelVersion": "g"}'])
def test_a_success_body_that_is_no_gemini_answer_is_a_502(body):
    translator, _ = _translator({"messages": [USER]})
    assert translator.translate_response_body(body[:2], False) == b""
    with pytest.raises(UpstreamShapeError) as raised:
        translator.translate_response_body(body[2:], True)
    assert raised.value.status == 502
    assert translator.usage is None


# ---- errors ---------------------------------------------------------------------------------------------

GOOGLE_429 = (
    b'{"error": {"code": 429, "message": "Resource exhausted. Please try again later.", '
    b'"status": "RESOURCE_EXHAUSTED"}}'
)


@pytest.mark.parametrize("stream", [False, True])
def test_google_error_becomes_the_openai_error_shape_with_the_status_kept(stream):
    translator, _ = _translator({"messages": [USER], "stream": stream})
    assert orjson.loads(_answer(translator, 429, GOOGLE_429)) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "code": "429", "message": "Resource exhausted. Please try again later."},
    }
    assert translator.usage is None


def test_an_error_array_from_a_streaming_method_is_read_too():
    translator, _ = _translator({"messages": [USER], "stream": True})
    body = b"[" + GOOGLE_429.replace(b"429", b"400").replace(b"RESOURCE_EXHAUSTED", b"INVALID_ARGUMENT") + b"]"
    assert orjson.loads(_answer(translator, 400, body))["error"] == {
        "type": "invalid_request_error",
        "code": "400",
        "message": "Resource exhausted. Please try again later.",
    }


def test_non_json_error_body_is_wrapped_not_lost():
    translator, _ = _translator({"messages": [USER]})
    out = orjson.loads(_answer(translator, 503, b"upstream connect error or disconnect/reset before headers"))
    assert out["error"] == {
        "type": "overloaded_error",
        "code": "503",
        "message": "upstream connect error or disconnect/reset before headers",
    }


# ---- streams --------------------------------------------------------------------------------------------


def _frame(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\r\n\r\n"


ENVELOPE = {"modelVersion": "gemini-2.5-pro", "createTime": "2025-03-14T09:26:53.713052Z", "responseId": "resp-42"}


def _usage(candidates: int, thoughts: int) -> dict[str, Any]:
    usage = {"promptTokenCount": 472, "cachedContentTokenCount": 256, "thoughtsTokenCount": thoughts}
    if candidates:
        usage["candidatesTokenCount"] = candidates
    usage["totalTokenCount"] = 472 + candidates + thoughts
    return usage


def _gemini_chunk(parts: list[dict[str, Any]], usage: dict[str, Any], finish: str | None = None) -> bytes:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}}
    if finish:
        candidate["finishReason"] = finish
    return _frame({"candidates": [candidate], "usageMetadata": usage, **ENVELOPE})


# A recorded-style stream: thought summaries, text with multi-byte characters, a keep-alive comment, LF line
# endings in one event, two parallel calls in one chunk (the second without arguments), usage on every chunk.
STREAM = b"".join(
    [
        _gemini_chunk([{"text": "Two cities, ", "thought": True}], _usage(0, 30)),
        _gemini_chunk([{"text": "two calls.", "thought": True}], _usage(0, 61)),
        _gemini_chunk([{"text": "Voilà, je vérifie "}], _usage(5, 61)),
        b": keep-alive\r\n\r\n",
        _gemini_chunk([{"text": "la météo 🌤️ 東京"}], _usage(11, 61)).replace(b"\r\n", b"\n"),
        _gemini_chunk(
            [
                {
                    "functionCall": {"name": "get_weather", "args": {"location": "San Francisco, CA"}},
                    "thoughtSignature": "c2ln",
                },
                {"functionCall": {"name": "now"}},
            ],
            _usage(28, 61),
            "STOP",
        ),
    ]
)
STREAM_USAGE = TokenUsage(input=472, cached_input=256, output=89, reasoning=61, total=561)
CHUNK_BASE = {"id": "resp-42", "object": "chat.completion.chunk", "created": 1741944413, "model": "gemini-2.5-pro"}


def _expected_chunks(include_usage: bool) -> list[Any]:
    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        out = {
            **CHUNK_BASE,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if include_usage:
            out["usage"] = None
        return out

    def call(index: int, call_id: str, name: str, arguments: str) -> dict[str, Any]:
        function = {"name": name, "arguments": arguments}
        return {"tool_calls": [{"index": index, "id": call_id, "type": "function", "function": function}]}

    chunks: list[Any] = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "Two cities, "}),
        chunk({"reasoning_content": "two calls."}),
        chunk({"content": "Voilà, je vérifie "}),
        chunk({"content": "la météo 🌤️ 東京"}),
        chunk(call(0, f"call_id1{SIGNATURE_SEPARATOR}c2ln", "get_weather", '{"location":"San Francisco, CA"}')),
        chunk(call(1, "call_id2", "now", "{}")),  # no arguments: clients still get JSON to parse
        chunk({}, "tool_calls"),
    ]
    if include_usage:
        usage = {
            "prompt_tokens": 472,
            "completion_tokens": 89,
            "total_tokens": 561,
            "prompt_tokens_details": {"cached_tokens": 256},
            "completion_tokens_details": {"reasoning_tokens": 61},
        }
        chunks.append({**CHUNK_BASE, "choices": [], "usage": usage})
    chunks.append("[DONE]")
    return chunks


def _streaming(include_usage: bool = False) -> OpenAIToGemini:
    body: dict[str, Any] = {"messages": [USER], "tools": [WEATHER_TOOL], "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    translator, upstream = _translator(body)
    assert upstream.path.endswith(":streamGenerateContent?alt=sse")
    assert translator.translate_response_headers({"content-type": "text/event-stream"}) is None
    return translator


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def _client_bytes(translator: OpenAIToGemini, chunks: list[bytes]) -> bytes:
    out = []
    for index, chunk in enumerate(chunks):
        try:
            replaced = translator.translate_response_body(chunk, index == len(chunks) - 1)
        except UpstreamShapeError as error:  # as the router answers it: the chunks so far, then an error chunk
            return b"".join(out) + error.emitted + ClientAPI.OPENAI_CHAT.stream_error_event(error)
        assert replaced is not None  # the Gemini stream must never reach an OpenAI client
        out.append(replaced)
    return b"".join(out)


def _parse_client_stream(data: bytes) -> list[Any]:
    events = []
    for block in data.split(b"\n\n"):
        if not block or block == b": ping":  # a keep-alive comment, which SSE readers skip (tested below)
            continue
        assert block.startswith(b"data: "), block
        payload = block[len(b"data: ") :]
        events.append("[DONE]" if payload == b"[DONE]" else orjson.loads(payload))
    assert not data or data.endswith(b"\n\n")
    return events


@pytest.mark.parametrize("include_usage", [False, True])
def test_stream_translated_chunk_by_chunk(include_usage):
    translator = _streaming(include_usage)
    chunks = _parse_client_stream(_client_bytes(translator, [STREAM]))
    assert chunks == _expected_chunks(include_usage)
    for chunk in chunks[:-1]:
        ChatCompletionChunk.model_validate(chunk)
    assert translator.usage == STREAM_USAGE  # read for metadata whether or not the client asked
    assert translator.response_model == "gemini-2.5-pro"


def test_stream_accumulates_into_a_valid_completion_with_the_openai_sdk():
    translator = _streaming(True)
    state = ChatCompletionStreamState(input_tools=[WEATHER_TOOL])
    for chunk in _parse_client_stream(_client_bytes(translator, [STREAM]))[:-1]:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    completion = state.get_final_completion()
    message = completion.choices[0].message
    assert message.content == "Voilà, je vérifie la météo 🌤️ 東京"
    assert [(c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("get_weather", '{"location":"San Francisco, CA"}'),
        ("now", "{}"),
    ]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.usage is not None and completion.usage.completion_tokens == 89


def test_stream_is_translated_as_it_comes_not_at_the_end():
    translator = _streaming()
    first_event_end = STREAM.index(b"\r\n\r\n") + 4
    out = translator.translate_response_body(STREAM[:first_event_end], False)
    assert _parse_client_stream(out) == _expected_chunks(False)[:2]
    assert translator.usage == TokenUsage(input=472, cached_input=256, output=30, reasoning=30, total=502)
    assert translator.translate_response_body(b'data: {"candidates', False) == b""


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=40), st.booleans())
def test_stream_translation_is_the_same_for_any_split(cuts, include_usage):
    reference = _client_bytes(_streaming(include_usage), [STREAM])
    translator = _streaming(include_usage)
    assert _client_bytes(translator, _split(STREAM, cuts)) == reference
    assert translator.usage == STREAM_USAGE


def test_stream_fed_one_byte_at_a_time_splits_every_utf8_character():
    reference = _client_bytes(_streaming(), [STREAM])
    translator = _streaming()
    pieces = [STREAM[i : i + 1] for i in range(len(STREAM))] + [b""]  # Envoy may end with an empty message
    assert _client_bytes(translator, pieces) == reference


def test_fake_provider_stream_with_several_candidates():
    body = {"messages": [USER], "stream": True, "n": 2, "max_tokens": 3, "stream_options": {"include_usage": True}}
    translator, upstream = _translator(body)
    reply = gemini.generate_content(upstream.body, MODEL, stream=True, response_id="r-9")
    stream = b"".join(gemini.sse_frame(c) for c in reply.chunks)
    chunks = _parse_client_stream(_client_bytes(translator, _split(stream, [7, 100, 333])))
    state = ChatCompletionStreamState()
    for chunk in chunks[:-1]:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    completion = state.current_completion_snapshot  # get_final_completion refuses "length" finishes
    assert [(c.index, c.message.content, c.finish_reason) for c in completion.choices] == [
        (0, "The quick brown", "length"),
        (1, "The quick brown", "length"),
    ]
    assert completion.usage.prompt_tokens == 2 and completion.usage.completion_tokens == 6
    assert chunks[-1] == "[DONE]"


def test_error_event_mid_stream_is_an_openai_error_chunk_and_ends_the_stream():
    translator = _streaming()
    head = STREAM[: STREAM.index(b": keep-alive")]
    error = _frame({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}})
    chunks = _parse_client_stream(
        _client_bytes(translator, [head, error + _gemini_chunk([{"text": "x"}], _usage(1, 0))])
    )
    assert chunks[-1] == {
        "type": "error",
        "error": {"type": "overloaded_error", "code": "503", "message": "The model is overloaded."},
    }
    assert "[DONE]" not in chunks  # the answer is incomplete: no end marker
    assert translator.usage == TokenUsage(input=472, cached_input=256, output=66, reasoning=61, total=538)


def test_a_truncated_stream_ends_with_an_error_chunk_and_no_done_marker():
    translator = _streaming(True)
    cut = STREAM.index(b"data: ", STREAM.index(b"\xe6\x9d\xb1"))  # just before the chunk with the calls
    chunks = _parse_client_stream(_client_bytes(translator, [STREAM[:cut]]))
    assert chunks[:-1] == _expected_chunks(True)[:5]
    assert chunks[-1]["error"]["code"] == "502" and "ended before a `finishReason`" in chunks[-1]["error"]["message"]


def test_a_stream_without_a_final_blank_line_still_ends():
    translator = _streaming()
    chunks = _parse_client_stream(_client_bytes(translator, [STREAM.removesuffix(b"\r\n\r\n")]))
    assert chunks == _expected_chunks(False)


def test_bad_json_and_empty_parts_are_skipped():
    translator = _streaming()
    noise = b"data: not json\r\n\r\n" + _gemini_chunk([{"text": "", "thoughtSignature": "c2ln"}], _usage(11, 61))
    stream = STREAM.replace(b": keep-alive\r\n\r\n", noise)
    assert _parse_client_stream(_client_bytes(translator, [stream])) == _expected_chunks(False)


def test_a_blocked_prompt_in_a_stream():
    translator = _streaming(True)
    stream = _frame({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": {"promptTokenCount": 3}})
    chunks = _parse_client_stream(_client_bytes(translator, [stream]))
    assert [c["choices"][0]["finish_reason"] for c in chunks[:2]] == [None, "content_filter"]
    assert chunks[2]["usage"]["prompt_tokens"] == 3 and chunks[3] == "[DONE]"


# ---- usage ----------------------------------------------------------------------------------------------


def test_usage_normalisation():
    usage = usage_from_gemini(
        {
            "promptTokenCount": 100,
            "cachedContentTokenCount": 60,
            "toolUsePromptTokenCount": 7,
            "candidatesTokenCount": 20,
            "thoughtsTokenCount": 5,
            "totalTokenCount": 132,
        }
    )
    assert usage == TokenUsage(input=107, cached_input=60, output=25, reasoning=5, total=132)
    assert usage_from_gemini({"promptTokenCount": True, "candidatesTokenCount": -3}) == TokenUsage()


# ---- any JSON Schema ------------------------------------------------------------------------------------

_TYPE_NAMES = st.sampled_from(["string", "number", "integer", "boolean", "array", "object", "null"])
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=4))
_EXTRAS = st.fixed_dictionaries(
    {},
    optional={
        "description": st.text(max_size=5),
        "additionalProperties": st.booleans(),
        "$comment": st.text(max_size=3),
        "format": st.sampled_from(["uri", "date-time", "int64", "double", "enum", "uuid"]),
        "minimum": st.integers(0, 3),
        "exclusiveMaximum": st.integers(4, 9),
        "minLength": st.integers(0, 3),
        "uniqueItems": st.booleans(),
        "enum": st.lists(_SCALARS, min_size=1, max_size=3),
        "const": _SCALARS,
        "default": _SCALARS,
    },
)


def _schemas(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    typed = st.builds(
        lambda t, extra: {"type": t, **extra},
        st.one_of(_TYPE_NAMES, st.lists(_TYPE_NAMES, min_size=1, max_size=3)),
        _EXTRAS,
    )
    obj = st.builds(
        lambda props, extra: {
            "type": "object",
            "properties": props,
            "required": [*sorted(props)[:1], "ghost"],
            **extra,
        },
        st.dictionaries(st.sampled_from(["a", "b", "c"]), children, max_size=3),
        _EXTRAS,
    )
    array = st.builds(lambda items: {"type": "array", "items": items}, children)
    union = st.builds(
        lambda key, members: {key: members},
        st.sampled_from(["anyOf", "oneOf"]),
        st.lists(children, min_size=1, max_size=3),
    )
    return st.one_of(typed, obj, array, union)


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.builds(lambda t, extra: {"type": t, **extra}, _TYPE_NAMES, _EXTRAS), _schemas, max_leaves=8))
def test_any_json_schema_converts_to_one_gemini_accepts_or_a_422(schema):
    try:
        converted = gemini_schema(schema, "response_format.json_schema.schema")
    except GatewayError as error:
        assert error.status == 422 and "response_format.json_schema.schema" in error.message
        return
    genai_types.Schema.model_validate(converted)
    body = {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "generationConfig": {"responseMimeType": "application/json", "responseSchema": converted},
    }
    reply = gemini.generate_content(orjson.dumps(body), MODEL, stream=False, response_id="r")
    assert reply.status == 200, (converted, reply.body)


def test_gemini_chunks_with_nothing_to_show_and_comments_keep_the_client_alive():
    """Gemini has no keep-alive; a usage-only chunk or a proxy's comment still reaches the client as bytes."""
    out = _client_bytes(_streaming(), [STREAM])
    assert out.count(b": ping\n\n") == 1  # the recorded `: keep-alive` comment, in its place
    assert out.index(b": ping") < out.index("météo".encode())
    translator = _streaming()
    translator.translate_response_body(_gemini_chunk([{"text": "Hi"}], _usage(1, 0)), False)
    usage_only = _frame({"candidates": [{"content": {"role": "model", "parts": []}}], "usageMetadata": _usage(1, 0)})
    assert translator.translate_response_body(usage_only, False) == b": ping\n\n"
    assert translator.translate_response_body(usage_only[:10], False) == b""  # half a chunk: wait for the rest
