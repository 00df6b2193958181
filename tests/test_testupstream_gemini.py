"""The fake Gemini on Vertex AI (``…/publishers/google/models/{m}:generateContent``), driven by the official
``google-genai`` SDK (Vertex mode, pointed at the fake) and by httpx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import orjson
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from google.oauth2.credentials import Credentials

from tokenvoy.testupstream import gemini
from tokenvoy.testupstream.gemini import THINKING_TEXT, THOUGHT_SIGNATURE, generate_content
from tokenvoy.testupstream.openai_chat import WORDS
from tokenvoy.testupstream.server import BackgroundServer, run_in_thread

SENTENCE = " ".join(WORDS)
MODEL = "gemini-2.5-flash"
PREFIX = "/v1/projects/p/locations/us-central1/publishers/google/models"
USER = {"role": "user", "parts": [{"text": "What is the weather like in Paris today"}]}  # 8 words
WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "parameters": {
        "type": "OBJECT",
        "properties": {
            "location": {"type": "STRING"},
            "unit": {"type": "STRING", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "INTEGER", "minimum": 1},
        },
        "required": ["location", "unit", "days"],
    },
}
WEATHER_JSON_SCHEMA = {
    "type": "object",
    "properties": {
        "location": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1},
    },
    "required": ["location", "unit", "days"],
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[BackgroundServer]:
    with run_in_thread() as server:
        yield server


@pytest.fixture(scope="module")
def client(upstream: BackgroundServer) -> genai.Client:
    return genai.Client(
        vertexai=True,
        credentials=Credentials(token="ya29.test-token"),
        project="p",
        location="us-central1",
        http_options=types.HttpOptions(base_url=upstream.url, api_version="v1", retry_options=None),
    )


@pytest.fixture(scope="module")
def web(upstream: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=upstream.url) as c:
        yield c


def _generate(body: dict[str, Any], stream: bool = False) -> gemini.GeminiReply:
    return generate_content(orjson.dumps(body), MODEL, stream=stream, response_id="resp-7")


def _parse(reply: gemini.GeminiReply) -> types.GenerateContentResponse:
    assert reply.status == 200, reply.body
    return types.GenerateContentResponse.model_validate(reply.body)


# ---- through the official SDK ------------------------------------------------------------------------------


def test_sdk_text_answer_with_system_instruction_and_limit(client: genai.Client):
    reply = client.models.generate_content(
        model=MODEL,
        contents="What is the weather like in Paris today",
        config=types.GenerateContentConfig(system_instruction="Be brief", max_output_tokens=5),
    )
    assert reply.text == " ".join(WORDS[:5])
    assert reply.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    usage = reply.usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count, usage.total_token_count) == (10, 5, 15)
    assert reply.model_version == MODEL
    assert reply.response_id.startswith("gemini-response-")
    assert reply.create_time is not None


def test_sdk_stream(client: genai.Client):
    chunks = list(
        client.models.generate_content_stream(
            model=MODEL, contents="hello", config=types.GenerateContentConfig(max_output_tokens=4)
        )
    )
    assert [c.text for c in chunks] == ["The", " quick", " brown", " fox"]
    assert [c.candidates[0].finish_reason for c in chunks] == [None, None, None, types.FinishReason.MAX_TOKENS]
    assert [c.usage_metadata.candidates_token_count for c in chunks] == [1, 2, 3, 4]


def test_sdk_function_call_then_response_then_text(client: genai.Client):
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[types.FunctionDeclaration.model_validate(WEATHER)])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    first = client.models.generate_content(model=MODEL, contents="weather in Paris?", config=config)
    (call,) = first.function_calls
    assert call.name == "get_weather"
    jsonschema.validate(call.args, WEATHER_JSON_SCHEMA)
    assert first.candidates[0].content.parts[0].thought_signature is not None
    history = [
        types.Content(role="user", parts=[types.Part(text="weather in Paris?")]),
        first.candidates[0].content,
        types.Content(
            role="user", parts=[types.Part.from_function_response(name="get_weather", response={"output": "sunny"})]
        ),
    ]
    second = client.models.generate_content(model=MODEL, contents=history, config=config)
    assert second.text == SENTENCE
    assert second.usage_metadata.prompt_token_count == 3 + 1  # the question and the function's output


def test_sdk_python_function_tools_use_parameters_json_schema(client: genai.Client):
    def get_weather(location: str, days: int) -> str:
        """Get the weather."""
        return "sunny"

    config = types.GenerateContentConfig(
        tools=[get_weather], automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True)
    )
    reply = client.models.generate_content(model=MODEL, contents="weather?", config=config)
    assert [(c.name, c.args) for c in reply.function_calls] == [("get_weather", {"location": "fox", "days": 0})]


def test_sdk_thoughts(client: genai.Client):
    config = types.GenerateContentConfig(
        max_output_tokens=8, thinking_config=types.ThinkingConfig(include_thoughts=True, thinking_budget=1024)
    )
    reply = client.models.generate_content(model=MODEL, contents="hi", config=config)
    thought, answer = reply.candidates[0].content.parts
    assert (thought.thought, thought.text) == (True, THINKING_TEXT)
    assert answer.text == "The quick"  # the thought's 6 words count against the limit
    assert reply.usage_metadata.thoughts_token_count == 6


def test_sdk_sees_forced_errors_in_googles_shape(client: genai.Client):
    with pytest.raises(genai_errors.ClientError) as caught:
        client.models.generate_content(
            model=MODEL,
            contents="hi",
            config=types.GenerateContentConfig(
                http_options=types.HttpOptions(headers={"x-testupstream-status": "429"})
            ),
        )
    assert caught.value.code == 429
    assert caught.value.status == "RESOURCE_EXHAUSTED"


def test_sdk_request_the_fake_refuses(client: genai.Client):
    with pytest.raises(genai_errors.ClientError) as caught:
        client.models.generate_content(model=MODEL, contents="hi", config=types.GenerateContentConfig(temperature=3.0))
    assert caught.value.code == 400 and caught.value.status == "INVALID_ARGUMENT"
    assert "temperature" in caught.value.message


# ---- HTTP details ------------------------------------------------------------------------------------------


def test_sse_stream_is_framed_like_google(web: httpx.Client):
    response = web.post(
        f"{PREFIX}/{MODEL}:streamGenerateContent?alt=sse",
        json={"contents": [USER], "generationConfig": {"maxOutputTokens": 2}},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = response.content.split(b"\r\n\r\n")
    assert frames[-1] == b"" and len(frames) == 3
    chunks = [orjson.loads(frame.removeprefix(b"data: ")) for frame in frames[:-1]]
    assert [c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks] == ["The", " quick"]
    assert chunks[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert chunks[-1]["usageMetadata"]["totalTokenCount"] == 8 + 2


def test_stream_without_alt_sse_is_one_json_array(web: httpx.Client):
    response = web.post(f"{PREFIX}/{MODEL}:streamGenerateContent", json={"contents": [USER]})
    chunks = response.json()
    assert isinstance(chunks, list) and len(chunks) == len(WORDS)
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks) == SENTENCE


@pytest.mark.parametrize(
    ("status", "google_status"),
    [
        (400, "INVALID_ARGUMENT"),
        (403, "PERMISSION_DENIED"),
        (429, "RESOURCE_EXHAUSTED"),
        (500, "INTERNAL"),
        (503, "UNAVAILABLE"),
    ],
)
@pytest.mark.parametrize("method", [":generateContent", ":streamGenerateContent?alt=sse"])
def test_forced_statuses_answer_googles_error_shape(web: httpx.Client, status: int, google_status: str, method: str):
    response = web.post(
        f"{PREFIX}/{MODEL}{method}", json={"contents": [USER]}, headers={"x-testupstream-status": str(status)}
    )
    assert response.status_code == status
    assert response.json() == {
        "error": {"code": status, "message": f"testupstream: forced status {status}", "status": google_status}
    }


def test_expect_path_sees_the_model_and_method(web: httpx.Client):
    path = f"{PREFIX}/{MODEL}:generateContent"
    ok = web.post(path, json={"contents": [USER]}, headers={"x-testupstream-expect-path": path})
    assert ok.status_code == 200
    wrong = web.post(path, json={"contents": [USER]}, headers={"x-testupstream-expect-path": "/v1/other"})
    assert wrong.status_code == 400 and wrong.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_other_vertex_methods_are_not_taken(web: httpx.Client):
    assert web.post(f"{PREFIX}/{MODEL}:computeTokens", json={"contents": [USER]}).status_code == 404


def test_count_tokens_counts_the_prompt_and_refuses_generate_only_fields(web: httpx.Client):
    """Vertex's countTokens takes contents, systemInstruction, tools and generationConfig, nothing else."""
    body = {"systemInstruction": {"parts": [{"text": "Be brief"}]}, "contents": [USER]}
    counted = web.post(f"{PREFIX}/{MODEL}:countTokens", json=body)
    assert counted.status_code == 200
    words = 2 + 8  # "Be brief" and USER's 8 words
    assert counted.json()["totalTokens"] == words
    assert counted.json()["promptTokensDetails"] == [{"modality": "TEXT", "tokenCount": words}]
    refused = web.post(f"{PREFIX}/{MODEL}:countTokens", json={**body, "safetySettings": []})
    assert refused.status_code == 400 and refused.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert web.post(f"{PREFIX}/{MODEL}:countTokens", json={}).status_code == 400


# ---- validation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "at least one contents field"),
        ({"contents": []}, "at least one contents field"),
        ({"contents": [USER], "model": MODEL}, 'Unknown name "model"'),
        ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, "valid role: user, model"),
        ({"contents": [{"role": "user", "parts": []}]}, "at least one parts field"),
        ({"contents": [{"role": "user", "parts": [{}]}]}, "exactly one of"),
        ({"contents": [{"role": "user", "parts": [{"text": "a", "inlineData": {}}]}]}, "exactly one of"),
        (
            {"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "not base64!"}}]}]},
            "inline_data.data",
        ),
        (
            {
                "contents": [
                    USER,
                    {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
                    {"role": "user", "parts": [{"functionResponse": {"name": "get_time", "response": {}}}]},
                ]
            },
            "'get_time' answers no function call",
        ),
        (
            {
                "contents": [
                    USER,
                    {
                        "role": "model",
                        "parts": [
                            {"functionCall": {"name": "a", "args": {}}},
                            {"functionCall": {"name": "b", "args": {}}},
                        ],
                    },
                    {"role": "user", "parts": [{"functionResponse": {"name": "a", "response": {}}}]},
                ]
            },
            "number of function response parts is equal",
        ),
        (
            {"contents": [USER, {"parts": [{"functionResponse": {"name": "a", "response": {}}}]}]},
            "function response turn comes immediately after a function call turn",
        ),
        (
            {
                "contents": [USER],
                "tools": [
                    {
                        "functionDeclarations": [
                            {**WEATHER, "parameters": {**WEATHER["parameters"], "additionalProperties": False}}
                        ]
                    }
                ],
            },
            """Unknown name "additionalProperties" at 'tools[0].function_declarations[0].parameters'""",
        ),
        (
            {
                "contents": [USER],
                "tools": [{"functionDeclarations": [{"name": "f", "parameters": {"type": "OBJECT"}}]}],
            },
            "should be non-empty for OBJECT type",
        ),
        (
            {
                "contents": [USER],
                "tools": [{"functionDeclarations": [{"name": "f", "parameters": {"type": ["string", "null"]}}]}],
            },
            "parameters.type",
        ),
        (
            {"contents": [USER], "tools": [{"functionDeclarations": [{"name": "1f"}]}]},
            "Invalid function name",
        ),
        (
            {
                "contents": [USER],
                "tools": [{"functionDeclarations": [WEATHER]}],
                "toolConfig": {"functionCallingConfig": {"mode": "AUTO", "allowedFunctionNames": ["get_weather"]}},
            },
            "only be set when the Mode is ANY",
        ),
        ({"contents": [USER], "generationConfig": {"maxOutputTokens": "5"}}, "generation_config.max_output_tokens"),
        ({"contents": [USER], "generationConfig": {"temperature": 2.5}}, "temperature value of 2.5"),
        ({"contents": [USER], "generationConfig": {"stopSequences": list("abcdef")}}, "at most 5"),
        ({"contents": [USER], "generationConfig": {"maxTokens": 5}}, 'Unknown name "maxTokens"'),
        (
            {"contents": [USER], "generationConfig": {"responseSchema": {"type": "STRING"}}},
            "requires responseMimeType",
        ),
        (
            {"contents": [USER], "generationConfig": {"thinkingConfig": {"thinkingBudget": "lots"}}},
            "thinking_config.thinking_budget",
        ),
        (
            {"contents": [USER], "systemInstruction": {"parts": [{"inlineData": {"mimeType": "a/b", "data": ""}}]}},
            "only text",
        ),
    ],
)
def test_invalid_requests_are_400_invalid_argument(body: dict[str, Any], message: str):
    reply = _generate(body)
    assert reply.status == 400
    assert reply.body["error"]["status"] == "INVALID_ARGUMENT"
    assert message in reply.body["error"]["message"]


def test_not_json_is_400():
    reply = generate_content(b"{", MODEL, stream=False, response_id="r")
    assert reply.status == 400 and "Invalid JSON payload" in reply.body["error"]["message"]


def test_proto_field_names_are_accepted_too():
    body = {"contents": [USER], "generation_config": {"max_output_tokens": 5, "stop_sequences": ["brown"]}}
    response = _parse(_generate(body))
    assert response.text == "The quick "
    assert response.candidates[0].finish_reason == types.FinishReason.STOP


# ---- determinism ---------------------------------------------------------------------------------------------


def test_full_answer_and_usage_shape():
    reply = _generate({"contents": [USER], "systemInstruction": {"parts": [{"text": "Be brief"}]}})
    assert reply.body == {
        "candidates": [{"content": {"role": "model", "parts": [{"text": SENTENCE}]}, "finishReason": "STOP"}],
        "usageMetadata": {
            "promptTokenCount": 10,
            "candidatesTokenCount": 28,
            "totalTokenCount": 38,
            "trafficType": "ON_DEMAND",
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 10}],
        },
        "modelVersion": MODEL,
        "createTime": "2025-01-01T00:00:00.000000Z",
        "responseId": "resp-7",
    }
    _parse(reply)


def test_stop_sequence_cuts_before_it():
    response = _parse(_generate({"contents": [USER], "generationConfig": {"stopSequences": ["fox"]}}))
    assert response.text == "The quick brown "
    assert response.candidates[0].finish_reason == types.FinishReason.STOP


def test_candidate_count():
    response = _parse(_generate({"contents": [USER], "generationConfig": {"candidateCount": 3, "maxOutputTokens": 2}}))
    assert [(c.index, c.content.parts[0].text) for c in response.candidates] == [
        (None, "The quick"),  # proto3 JSON leaves index 0 out
        (1, "The quick"),
        (2, "The quick"),
    ]
    assert response.usage_metadata.candidates_token_count == 6


@pytest.mark.parametrize(
    ("tool_config", "called"),
    [
        (None, "get_weather"),
        ({"functionCallingConfig": {"mode": "NONE"}}, None),
        ({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["now"]}}, "now"),
    ],
)
def test_function_calling_modes(tool_config: dict[str, Any] | None, called: str | None):
    body: dict[str, Any] = {"contents": [USER], "tools": [{"functionDeclarations": [WEATHER, {"name": "now"}]}]}
    if tool_config:
        body["toolConfig"] = tool_config
    response = _parse(_generate(body))
    calls = response.function_calls or []
    assert [c.name for c in calls] == ([called] if called else [])
    if called == "get_weather":
        jsonschema.validate(calls[0].args, WEATHER_JSON_SCHEMA)
        assert response.usage_metadata.candidates_token_count == 1 + 3


def test_after_function_responses_the_answer_is_text_unless_any_forces_a_call():
    call_turn = {
        "role": "model",
        "parts": [{"functionCall": {"name": "get_weather", "args": {}}, "thoughtSignature": THOUGHT_SIGNATURE}],
    }
    result = {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"output": "sunny, 21 degrees"}}}],
    }
    body: dict[str, Any] = {"contents": [USER, call_turn, result], "tools": [{"functionDeclarations": [WEATHER]}]}
    answer = _parse(_generate(body))
    assert answer.text == SENTENCE
    assert answer.usage_metadata.prompt_token_count == 8 + 3
    forced = _parse(_generate({**body, "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}))
    assert [c.name for c in forced.function_calls] == ["get_weather"]


def test_streamed_function_call_and_thought_chunks():
    body = {
        "contents": [USER],
        "tools": [{"functionDeclarations": [WEATHER]}],
        "generationConfig": {"thinkingConfig": {"includeThoughts": True}},
    }
    reply = _generate(body, stream=True)
    chunks = [types.GenerateContentResponse.model_validate(c) for c in reply.chunks]
    assert len(chunks) == 2
    assert chunks[0].candidates[0].content.parts[0].thought is True
    call_part = chunks[1].candidates[0].content.parts[0]
    assert call_part.function_call.name == "get_weather"
    assert chunks[1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[1].usage_metadata.thoughts_token_count == 6
    assert gemini.sse_frame(reply.chunks[0]).endswith(b"\r\n\r\n")


def test_thinking_budget_zero_shows_no_thoughts():
    body = {"contents": [USER], "generationConfig": {"thinkingConfig": {"includeThoughts": True, "thinkingBudget": 0}}}
    response = _parse(_generate(body))
    assert [p.thought for p in response.candidates[0].content.parts] == [None]
    assert response.usage_metadata.thoughts_token_count is None
