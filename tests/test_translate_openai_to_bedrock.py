"""OpenAI client → AWS Bedrock Converse: requests rebuilt for /model/{id}/converse[-stream], answers and AWS event
streams translated back.

Bedrock-side shapes follow botocore's bedrock-runtime service model; recorded streams come from the fake provider
(whose wire format botocore's own client parses, see test_testupstream_bedrock.py). Every translated answer is
checked against the official ``openai`` SDK's types and stream accumulator.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tokenvoy.config.model import Backend, Endpoint
from tokenvoy.extproc.errors import GatewayError, UpstreamShapeError
from tokenvoy.extproc.eventstream import encode_event, encode_exception
from tokenvoy.extproc.translate import translator_for
from tokenvoy.extproc.translate.base import ClientAPI, ClientRequest
from tokenvoy.extproc.translate.bedrock_common import usage_from_bedrock
from tokenvoy.extproc.translate.openai_to_bedrock import OpenAIToBedrock
from tokenvoy.extproc.usage import TokenUsage
from tokenvoy.testupstream import bedrock_converse

BACKEND = Backend(
    name="bedrock",
    schema="AWSBedrock",
    schema_version=None,
    path_prefix="",
    endpoint=Endpoint("bedrock-runtime.us-east-1.amazonaws.com", 443, tls=True),
)
MODEL = "anthropic.claude-sonnet-4-5-20250929-v1:0"
PROFILE = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3"
NOW = 1_700_000_000
REQUEST_ID = "6f1c2a1e-0000-4000-8000-00000000beef"
PNG = "iVBORw0KGgo="
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string", "description": "The city and state"}},
            "required": ["location"],
        },
    },
}
WEATHER_SPEC = {
    "toolSpec": {
        "name": "get_weather",
        "description": "Get the current weather in a given location",
        "inputSchema": {"json": WEATHER_TOOL["function"]["parameters"]},
    }
}


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


def _translator(body: dict[str, Any], model: str = MODEL) -> tuple[OpenAIToBedrock, Any]:
    translator = OpenAIToBedrock(clock=lambda: NOW)
    return translator, translator.translate_request(_request(body), BACKEND, model)


def _sent(body: dict[str, Any]) -> dict[str, Any]:
    _, upstream = _translator(body)
    return orjson.loads(upstream.body)


def _rejected(body: dict[str, Any]) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        _translator(body)
    return caught.value


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


# ---- request --------------------------------------------------------------------------------------------


def test_registered_for_the_bedrock_schema() -> None:
    assert translator_for(ClientAPI.OPENAI_CHAT, "AWSBedrock") is OpenAIToBedrock


def test_path_has_the_url_encoded_model_and_the_body_has_none() -> None:
    _, upstream = _translator({"messages": [_user("hi")]}, model=PROFILE)
    assert (
        upstream.path
        == "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aapplication-inference-profile%2Fa1b2c3/converse"
    )
    assert upstream.set_headers == {"content-type": "application/json"}
    assert orjson.loads(upstream.body) == {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}
    _, streamed = _translator({"messages": [_user("hi")], "stream": True})
    assert streamed.path == "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse-stream"
    assert "stream" not in orjson.loads(streamed.body)


def test_system_and_developer_messages_become_system_blocks_in_order_and_history_alternates() -> None:
    sent = _sent(
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                _user("hello"),
                {"role": "assistant", "content": "hi, how can I help?"},
                {"role": "developer", "content": [{"type": "text", "text": "answer in French"}]},
                _user("what is 2+2"),
                _user("and 3+3"),
            ]
        }
    )
    assert sent["system"] == [{"text": "be brief"}, {"text": "answer in French"}]
    assert sent["messages"] == [
        {"role": "user", "content": [{"text": "hello"}]},
        {"role": "assistant", "content": [{"text": "hi, how can I help?"}]},
        {"role": "user", "content": [{"text": "what is 2+2"}, {"text": "and 3+3"}]},
    ]


def test_limits_sampling_stop_and_top_k() -> None:
    sent = _sent(
        {
            "messages": [_user("hi")],
            "max_tokens": 10,
            "max_completion_tokens": 300,
            "temperature": 0.2,
            "top_p": 0.9,
            "top_k": 40,
            "stop": "END",
            "seed": 7,
            "user": "alice",
            "parallel_tool_calls": False,
        }
    )
    assert sent["inferenceConfig"] == {"maxTokens": 300, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]}
    assert sent["additionalModelRequestFields"] == {"top_k": 40}
    assert set(sent) == {"messages", "inferenceConfig", "additionalModelRequestFields"}
    assert _sent({"messages": [_user("hi")], "stop": ["a", "b"]})["inferenceConfig"] == {"stopSequences": ["a", "b"]}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, None),
        ("auto", None),
        ("required", {"any": {}}),
        ({"type": "function", "function": {"name": "get_weather"}}, {"tool": {"name": "get_weather"}}),
    ],
)
def test_tools_and_tool_choice(choice: object, expected: dict[str, Any] | None) -> None:
    body: dict[str, Any] = {"messages": [_user("weather?")], "tools": [WEATHER_TOOL]}
    if choice is not None:
        body["tool_choice"] = choice
    config = _sent(body)["toolConfig"]
    assert config["tools"] == [WEATHER_SPEC]
    assert config.get("toolChoice") == expected


def test_tool_choice_none_sends_no_tools() -> None:
    assert "toolConfig" not in _sent({"messages": [_user("hi")], "tools": [WEATHER_TOOL], "tool_choice": "none"})


CALLED = [
    _user("weather in Paris and Rome?"),
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
            },
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "rainy"}]},
    _user("thanks, so which is nicer?"),
]


def test_parallel_tool_calls_and_results_in_history() -> None:
    sent = _sent({"messages": CALLED, "tools": [WEATHER_TOOL]})
    assert sent["messages"] == [
        {"role": "user", "content": [{"text": "weather in Paris and Rome?"}]},
        {
            "role": "assistant",
            "content": [
                {"toolUse": {"toolUseId": "call_1", "name": "get_weather", "input": {"location": "Paris"}}},
                {"toolUse": {"toolUseId": "call_2", "name": "get_weather", "input": {}}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": "call_1", "content": [{"text": "sunny"}]}},
                {"toolResult": {"toolUseId": "call_2", "content": [{"text": "rainy"}]}},
                {"text": "thanks, so which is nicer?"},
            ],
        },
    ]


def test_tool_history_needs_declared_tools_and_no_none_choice() -> None:
    without_tools = _rejected({"messages": CALLED})
    assert without_tools.status == 422 and "`tools`" in without_tools.message
    with_none = _rejected({"messages": CALLED, "tools": [WEATHER_TOOL], "tool_choice": "none"})
    assert with_none.status == 422 and "`tool_choice`" in with_none.message


def test_images_files_and_cache_control() -> None:
    content = [
        {"type": "text", "text": "long context", "cache_control": {"type": "ephemeral"}},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "s3://bucket/cat.JPG"}},
        {
            "type": "file",
            "file": {"filename": "Q3 report.final.pdf", "file_data": f"data:application/pdf;base64,{PNG}"},
        },
        {"type": "text", "text": "compare"},
    ]
    tool = {**WEATHER_TOOL, "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    sent = _sent({"messages": [{"role": "user", "content": content}], "tools": [tool]})
    assert sent["messages"][0]["content"] == [
        {"text": "long context"},
        {"cachePoint": {"type": "default"}},
        {"image": {"format": "png", "source": {"bytes": PNG}}},
        {"image": {"format": "jpeg", "source": {"s3Location": {"uri": "s3://bucket/cat.JPG"}}}},
        {"document": {"format": "pdf", "name": "Q3 report-final", "source": {"bytes": PNG}}},
        {"text": "compare"},
    ]
    assert sent["toolConfig"]["tools"] == [WEATHER_SPEC, {"cachePoint": {"type": "default", "ttl": "1h"}}]


@pytest.mark.parametrize(
    ("part", "field"),
    [
        (
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            "messages[0].content[0].image_url.url",
        ),
        (
            {"type": "image_url", "image_url": {"url": f"data:image/bmp;base64,{PNG}"}},
            "messages[0].content[0].image_url.url",
        ),
        ({"type": "file", "file": {"file_id": "file-abc"}}, "messages[0].content[0].file"),
        ({"type": "input_audio", "input_audio": {"data": PNG, "format": "wav"}}, "messages[0].content[0]"),
    ],
)
def test_content_bedrock_cannot_take_is_422_naming_the_part(part: dict[str, Any], field: str) -> None:
    error = _rejected({"messages": [{"role": "user", "content": [part]}]})
    assert error.status == 422
    assert f"`{field}`" in error.message


@pytest.mark.parametrize(
    ("effort", "limit", "max_tokens", "budget"),
    [("low", None, 2048 + 4096, 2048), ("high", None, 16384 + 4096, 16384), ("medium", 5000, 5000, 4999)],
)
def test_reasoning_effort_becomes_claude_thinking(effort: str, limit: int | None, max_tokens: int, budget: int) -> None:
    body: dict[str, Any] = {"messages": [_user("think")], "reasoning_effort": effort}
    if limit is not None:
        body["max_completion_tokens"] = limit
    sent = _sent(body)
    assert sent["inferenceConfig"] == {"maxTokens": max_tokens}
    assert sent["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": budget}}


def test_native_thinking_wins_and_an_effort_that_cannot_fit_is_422() -> None:
    native = {"type": "enabled", "budget_tokens": 3000}
    sent = _sent({"messages": [_user("x")], "reasoning_effort": "high", "thinking": native, "max_tokens": 4000})
    assert sent["additionalModelRequestFields"] == {"thinking": native}
    assert "additionalModelRequestFields" not in _sent({"messages": [_user("x")], "reasoning_effort": "none"})
    error = _rejected({"messages": [_user("x")], "reasoning_effort": "low", "max_completion_tokens": 500})
    assert error.status == 422 and "`reasoning_effort`" in error.message


def test_json_schema_response_format_is_structured_output() -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    response_format = {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema, "strict": True}}
    sent = _sent({"messages": [_user("x")], "response_format": response_format})
    assert sent["outputConfig"] == {
        "textFormat": {
            "type": "json_schema",
            "structure": {"jsonSchema": {"schema": orjson.dumps(schema).decode(), "name": "reply"}},
        }
    }
    assert "outputConfig" not in _sent({"messages": [_user("x")], "response_format": {"type": "text"}})


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
        ({"web_search_options": {}}, "web_search_options"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0]"),
        ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role"),
    ],
)
def test_what_bedrock_cannot_express_is_422_naming_the_field(extra: dict[str, Any], field: str) -> None:
    error = _rejected({"messages": [_user("hi")], **extra})
    assert error.status == 422
    assert f"`{field}`" in error.message
    assert "AWS Bedrock" in error.message


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [_user("x")], "max_tokens": 0}, "max_tokens"),
        ({"messages": [_user("x")], "stop": [""]}, "stop"),
        ({"messages": [_user("x")], "temperature": "hot"}, "temperature"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"messages": [_user("x")], "reasoning_effort": "extreme"}, "reasoning_effort"),
    ],
)
def test_malformed_requests_are_400_naming_the_field(body: dict[str, Any], field: str) -> None:
    error = _rejected(body)
    assert error.status == 400
    assert f"`{field}`" in error.message


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "system", "content": "be brief"}, _user("hello")], "max_tokens": 5, "stop": ["x"]},
        {"messages": CALLED, "tools": [WEATHER_TOOL], "tool_choice": "required"},
        {"messages": [_user("hi")], "tools": [WEATHER_TOOL], "tool_choice": "none"},
        {"messages": [_user("think")], "reasoning_effort": "medium", "temperature": 1, "top_k": 5},
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "see", "cache_control": {"type": "ephemeral"}},
                        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{PNG}"}},
                        {"type": "file", "file": {"filename": "a.txt", "file_data": f"data:text/plain;base64,{PNG}"}},
                    ],
                }
            ],
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}}},
        },
    ],
)
def test_translated_requests_pass_the_fake_bedrock_validation(body: dict[str, Any]) -> None:
    _, upstream = _translator(body)
    reply = bedrock_converse.converse(upstream.body, stream=False)
    assert reply.status == 200, reply.body


# ---- answers --------------------------------------------------------------------------------------------


def _answer(translator: OpenAIToBedrock, status: int, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    headers = headers if headers is not None else {"x-amzn-requestid": REQUEST_ID}
    if not 200 <= status < 300:  # as the router calls it: errors have their own method
        out = translator.translate_error(status, headers, body)
    else:
        translator.translate_response_headers(headers)
        out = translator.translate_response_body(body, True)
    assert out is not None
    return out


CONVERSE_ANSWER = {
    "output": {"message": {"role": "assistant", "content": [{"text": "Hello there."}]}},
    "stopReason": "end_turn",
    "usage": {
        "inputTokens": 12,
        "outputTokens": 3,
        "totalTokens": 35,
        "cacheReadInputTokens": 20,
        "cacheWriteInputTokens": 0,
    },
    "metrics": {"latencyMs": 310},
}


def test_text_answer_usage_id_and_the_model_sent() -> None:
    translator, _ = _translator({"messages": [_user("hi")]}, model=PROFILE)
    changes = translator.translate_response_headers({"x-amzn-requestid": REQUEST_ID})
    assert changes is not None and changes.set_headers == {"content-type": "application/json"}
    completion = ChatCompletion.model_validate(
        orjson.loads(translator.translate_response_body(orjson.dumps(CONVERSE_ANSWER), True))
    )
    assert completion.id == f"chatcmpl-{REQUEST_ID}"
    assert completion.model == PROFILE
    assert completion.created == NOW
    assert completion.choices[0].message.content == "Hello there."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (
        32,
        3,
        35,
    )
    assert completion.usage.prompt_tokens_details.cached_tokens == 20
    assert translator.usage == TokenUsage(input=32, cached_input=20, output=3, total=35)
    assert translator.response_model == PROFILE


def test_tool_use_and_reasoning_answer() -> None:
    translator, _ = _translator({"messages": [_user("weather?")], "tools": [WEATHER_TOOL]})
    answer = {
        "output": {
            "message": {
                "role": "assistant",
                "content": [
                    {"reasoningContent": {"reasoningText": {"text": "I should call the tool.", "signature": "c2ln"}}},
                    {"text": "Let me check."},
                    {"toolUse": {"toolUseId": "tooluse_a", "name": "get_weather", "input": {"location": "Paris"}}},
                    {"toolUse": {"toolUseId": "tooluse_b", "name": "get_weather", "input": {"location": "Rome"}}},
                ],
            }
        },
        "stopReason": "tool_use",
        "usage": {"inputTokens": 5, "outputTokens": 9, "totalTokens": 14},
        "metrics": {"latencyMs": 1},
    }
    completion = ChatCompletion.model_validate(orjson.loads(_answer(translator, 200, orjson.dumps(answer))))
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls"
    assert message.content == "Let me check."
    assert message.model_extra == {
        "reasoning_content": "I should call the tool.",
        "reasoning_details": [
            {
                "type": "reasoning.text",
                "text": "I should call the tool.",
                "signature": "c2ln",
                "format": "anthropic-claude-v1",
                "index": 0,
            }
        ],
    }
    assert [(c.id, c.function.name, orjson.loads(c.function.arguments)) for c in message.tool_calls or []] == [
        ("tooluse_a", "get_weather", {"location": "Paris"}),
        ("tooluse_b", "get_weather", {"location": "Rome"}),
    ]

    # Sent back with its reasoning_details, the turn replays with Converse's signed reasoningContent first.
    history = [
        _user("weather?"),
        {**message.model_dump(exclude_none=True), "content": message.content},
        *({"role": "tool", "tool_call_id": c.id, "content": "sunny"} for c in message.tool_calls or []),
    ]
    sent = _sent({"messages": history, "tools": [WEATHER_TOOL], "reasoning_effort": "low", "max_tokens": 4096})
    assert sent["messages"][1]["content"][:2] == [
        {"reasoningContent": {"reasoningText": {"text": "I should call the tool.", "signature": "c2ln"}}},
        {"text": "Let me check."},
    ]
    assert bedrock_converse.converse(orjson.dumps(sent), stream=False).status == 200


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
        ("malformed_model_output", "stop"),
    ],
)
def test_finish_reasons(stop_reason: str, finish_reason: str) -> None:
    translator, _ = _translator({"messages": [_user("hi")]})
    answer = {**CONVERSE_ANSWER, "stopReason": stop_reason}
    assert orjson.loads(_answer(translator, 200, orjson.dumps(answer)))["choices"][0]["finish_reason"] == finish_reason


@pytest.mark.parametrize("stream", [False, True])
def test_throttling_keeps_its_status_and_type_in_the_openai_shape(stream: bool) -> None:
    translator, _ = _translator({"messages": [_user("hi")], "stream": stream})
    headers = {"x-amzn-errortype": "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"}
    out = translator.translate_error(429, headers, b'{"message":"Too many requests, please wait."}')
    assert orjson.loads(out) == {
        "type": "error",
        "error": {"type": "ThrottlingException", "code": "429", "message": "Too many requests, please wait."},
    }
    assert translator.usage is None


def test_error_type_without_the_header_comes_from_the_status_and_other_bodies_are_kept() -> None:
    translator, _ = _translator({"messages": [_user("hi")]})
    out = orjson.loads(_answer(translator, 503, b"upstream connect error", headers={}))
    assert out["error"] == {"type": "ServiceUnavailableException", "code": "503", "message": "upstream connect error"}
    translator, _ = _translator({"messages": [_user("hi")]})
    out = orjson.loads(
        _answer(translator, 400, b'{"Message":"bad","__type":"com.amazon#ValidationException"}', headers={})
    )
    assert out["error"] == {"type": "ValidationException", "code": "400", "message": "bad"}


# ---- streams --------------------------------------------------------------------------------------------


def _recorded(body: dict[str, Any]) -> bytes:
    """The fake provider's event stream for the translated request (what Bedrock would send)."""
    _, upstream = _translator({**body, "stream": True})
    reply = bedrock_converse.converse(upstream.body, stream=True)
    assert reply.events is not None
    return b"".join(bedrock_converse.frames(reply.events))


# A hand-made stream exercising every event kind, with multi-byte UTF-8 text inside deltas.
STREAM = b"".join(
    [
        encode_event("messageStart", b'{"role":"assistant","p":"abc"}'),
        encode_event(
            "contentBlockDelta",
            orjson.dumps({"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "Hmm… ☃"}}}),
        ),
        encode_event(
            "contentBlockDelta",
            orjson.dumps({"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "c2ln"}}}),
        ),
        encode_event("contentBlockStop", b'{"contentBlockIndex":0}'),
        encode_event("contentBlockDelta", orjson.dumps({"contentBlockIndex": 1, "delta": {"text": "Grüße, "}})),
        encode_event("contentBlockDelta", orjson.dumps({"contentBlockIndex": 1, "delta": {"text": "世界"}})),
        encode_event("contentBlockStop", b'{"contentBlockIndex":1}'),
        encode_event(
            "contentBlockStart",
            orjson.dumps(
                {"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather"}}}
            ),
        ),
        encode_event(
            "contentBlockDelta", orjson.dumps({"contentBlockIndex": 2, "delta": {"toolUse": {"input": '{"location"'}}})
        ),
        encode_event(
            "contentBlockDelta", orjson.dumps({"contentBlockIndex": 2, "delta": {"toolUse": {"input": ':"Zürich"}'}}})
        ),
        encode_event("contentBlockStop", b'{"contentBlockIndex":2}'),
        encode_event(
            "contentBlockStart",
            orjson.dumps({"contentBlockIndex": 3, "start": {"toolUse": {"toolUseId": "tooluse_2", "name": "now"}}}),
        ),
        encode_event("contentBlockStop", b'{"contentBlockIndex":3}'),
        encode_event("messageStop", b'{"stopReason":"tool_use"}'),
        encode_event(
            "metadata",
            orjson.dumps(
                {
                    "usage": {"inputTokens": 7, "outputTokens": 11, "totalTokens": 28, "cacheReadInputTokens": 10},
                    "metrics": {"latencyMs": 5},
                }
            ),
        ),
    ]
)


def _streaming(include_usage: bool = True) -> OpenAIToBedrock:
    body: dict[str, Any] = {"messages": [_user("weather?")], "tools": [WEATHER_TOOL], "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    translator, _ = _translator(body)
    changes = translator.translate_response_headers({"x-amzn-requestid": REQUEST_ID})
    assert changes is not None and changes.set_headers == {"content-type": "text/event-stream; charset=utf-8"}
    return translator


def _client_bytes(translator: OpenAIToBedrock, pieces: list[bytes]) -> bytes:
    """What the client gets, as the router sends it: a malformed stream ends with the router's error event."""
    out = b""
    for index, piece in enumerate(pieces):
        try:
            result = translator.translate_response_body(piece, index == len(pieces) - 1)
        except UpstreamShapeError as error:
            return out + error.emitted + ClientAPI.OPENAI_CHAT.stream_error_event(error)
        out += result or b""
    return out


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


def _chunks(data: bytes) -> list[dict[str, Any]]:
    frames = [f for f in data.split(b"\n\n") if f and f != b": ping"]  # keep-alive comments: tested below
    assert all(f.startswith(b"data: ") for f in frames)
    return [orjson.loads(f[6:]) if f != b"data: [DONE]" else "[DONE]" for f in frames]


def test_stream_translated_event_by_event() -> None:
    chunks = _chunks(_client_bytes(_streaming(), [STREAM]))
    deltas = [c["choices"][0]["delta"] if c != "[DONE]" and c["choices"] else c for c in chunks]
    detail = {"type": "reasoning.text", "format": "anthropic-claude-v1", "index": 0}
    assert deltas[:5] == [
        {"role": "assistant", "content": ""},
        {"reasoning_content": "Hmm… ☃", "reasoning_details": [{**detail, "text": "Hmm… ☃"}]},
        {"reasoning_details": [{**detail, "text": "", "signature": "c2ln"}]},  # kept for a replay
        {"content": "Grüße, "},
        {"content": "世界"},
    ]
    chunks.pop(2)
    deltas.pop(2)
    assert deltas[4:8] == [
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "tooluse_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"location"'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": ':"Zürich"}'}}]},
        {
            "tool_calls": [
                {"index": 1, "id": "tooluse_2", "type": "function", "function": {"name": "now", "arguments": ""}}
            ]
        },
    ]
    assert deltas[8] == {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}  # a call without arguments
    assert chunks[9]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[10]["choices"] == []
    assert chunks[10]["usage"] == {
        "prompt_tokens": 17,
        "completion_tokens": 11,
        "total_tokens": 28,
        "prompt_tokens_details": {"cached_tokens": 10},
    }
    assert chunks[11] == "[DONE]"
    assert len(chunks) == 12
    assert all(c["id"] == f"chatcmpl-{REQUEST_ID}" and c["model"] == MODEL for c in chunks[:-1])
    for chunk in chunks[:-1]:
        ChatCompletionChunk.model_validate(chunk)


def test_without_include_usage_there_is_no_usage_chunk_but_the_gateway_still_counts() -> None:
    translator = _streaming(include_usage=False)
    chunks = _chunks(_client_bytes(translator, [STREAM]))
    assert all(c == "[DONE]" or (c["choices"] and "usage" not in c) for c in chunks)
    assert translator.usage == TokenUsage(input=17, cached_input=10, output=11, total=28)


def test_recorded_stream_accumulates_into_the_same_completion_as_the_json_answer() -> None:
    body = {"messages": [_user("weather in Paris?")], "tools": [WEATHER_TOOL]}
    translator = _streaming()
    state = ChatCompletionStreamState()
    for chunk in _chunks(_client_bytes(translator, [_recorded(body)])):
        if chunk != "[DONE]":
            state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    streamed = state.get_final_completion()

    whole, upstream = _translator(body)
    reply = bedrock_converse.converse(upstream.body, stream=False)
    completion = ChatCompletion.model_validate(orjson.loads(_answer(whole, 200, orjson.dumps(reply.body))))
    assert streamed.choices[0].finish_reason == completion.choices[0].finish_reason == "tool_calls"
    (streamed_call,) = streamed.choices[0].message.tool_calls or []
    (call,) = completion.choices[0].message.tool_calls or []
    assert (streamed_call.id, streamed_call.function.name) == (call.id, call.function.name)
    assert (
        orjson.loads(streamed_call.function.arguments) == orjson.loads(call.function.arguments) == {"location": "fox"}
    )
    assert translator.usage == whole.usage


def test_stream_is_translated_as_it_comes_not_at_the_end() -> None:
    translator = _streaming()
    first = STREAM.index(encode_event("contentBlockStop", b'{"contentBlockIndex":0}'))
    out = translator.translate_response_body(STREAM[:first], False)
    assert out is not None and b"Hmm" in out
    assert b"[DONE]" not in out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=40))
def test_stream_translation_is_the_same_for_any_split(cuts: list[int]) -> None:
    assert _client_bytes(_streaming(), _split(STREAM, cuts)) == _client_bytes(_streaming(), [STREAM])


def test_stream_fed_one_byte_at_a_time_splits_every_prelude_crc_and_utf8_character() -> None:
    pieces = [STREAM[i : i + 1] for i in range(len(STREAM))]
    assert _client_bytes(_streaming(), pieces) == _client_bytes(_streaming(), [STREAM])


def test_a_mid_stream_exception_is_an_openai_error_chunk_and_ends_the_stream() -> None:
    cut = STREAM.index(encode_event("contentBlockStop", b'{"contentBlockIndex":1}'))
    data = (
        STREAM[:cut]
        + encode_exception("throttlingException", b'{"message":"Too many tokens, slow down."}')
        + STREAM[cut:]
    )
    chunks = _chunks(_client_bytes(_streaming(), [data]))
    assert chunks[-1] == {
        "type": "error",
        "error": {"type": "ThrottlingException", "code": "429", "message": "Too many tokens, slow down."},
    }
    assert "[DONE]" not in chunks
    assert [c["choices"][0]["delta"].get("content") for c in chunks[3:5]] == ["Grüße, ", "世界"]  # after the signature


def test_a_cut_or_corrupt_stream_ends_with_an_error_chunk_and_no_done() -> None:
    cut = STREAM.index(encode_event("messageStop", b'{"stopReason":"tool_use"}'))
    chunks = _chunks(_client_bytes(_streaming(), [STREAM[:cut]]))
    assert chunks[-1]["error"]["code"] == "502"
    assert "ended before `messageStop`" in chunks[-1]["error"]["message"]
    assert "[DONE]" not in chunks

    corrupt = bytearray(STREAM)
    corrupt[len(STREAM) // 2] ^= 0xFF
    chunks = _chunks(_client_bytes(_streaming(), [bytes(corrupt)]))
    assert "invalid AWS event stream" in chunks[-1]["error"]["message"]
    assert "[DONE]" not in chunks
    # A corrupt last message arriving in the same piece as the good ones: those are still answered first.
    last_corrupt = STREAM[:-1] + bytes([STREAM[-1] ^ 0xFF])
    chunks = _chunks(_client_bytes(_streaming(), [last_corrupt]))
    assert "invalid AWS event stream" in chunks[-1]["error"]["message"]
    assert any(c["choices"] and c["choices"][0]["delta"].get("tool_calls") for c in chunks[:-1])


def test_a_stream_without_metadata_still_ends_with_done() -> None:
    stop = encode_event("messageStop", b'{"stopReason":"tool_use"}')
    end = STREAM.index(stop) + len(stop)
    chunks = _chunks(_client_bytes(_streaming(), [STREAM[:end]]))
    assert chunks[-1] == "[DONE]"
    assert chunks[-2]["usage"]["total_tokens"] == 0


def test_usage_normalisation_matches_design() -> None:
    usage = usage_from_bedrock(
        {"inputTokens": 3, "outputTokens": 4, "cacheReadInputTokens": 100, "cacheWriteInputTokens": 20}
    )
    assert usage == TokenUsage(input=123, cached_input=100, cache_creation_input=20, output=4, total=127)
    assert usage_from_bedrock({"inputTokens": True, "outputTokens": -3}) == TokenUsage()


def test_converse_events_with_nothing_to_show_keep_the_client_alive_as_sse_comments() -> None:
    """Converse has no keep-alive; an empty delta (a tool's first, empty input) still reaches the client as bytes."""
    translator = _streaming()
    translator.translate_response_body(encode_event("messageStart", b'{"role":"assistant"}'), False)
    empty = encode_event("contentBlockDelta", orjson.dumps({"contentBlockIndex": 0, "delta": {"text": ""}}))
    assert translator.translate_response_body(empty, False) == b": ping\n\n"
    later = encode_event("reasoningSummaryDelta", b'{"contentBlockIndex":0}')  # an event type added later
    assert translator.translate_response_body(later, False) == b": ping\n\n"
    stop = encode_event("contentBlockStop", b'{"contentBlockIndex":0}')
    assert translator.translate_response_body(stop, False) == b""  # follows its last delta at once
