"""Anthropic Messages client → AWS Bedrock Converse: requests rebuilt as Converse blocks, answers and AWS event
streams translated back into Anthropic messages and SSE events.

Bedrock-side shapes follow botocore's bedrock-runtime service model; every translated answer is checked with the
official ``anthropic`` SDK's types and its stream accumulator.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
from typing import Any

import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from tokenvoy.config.model import Backend, Endpoint
from tokenvoy.extproc.errors import GatewayError, UpstreamShapeError
from tokenvoy.extproc.eventstream import encode_event, encode_exception
from tokenvoy.extproc.translate import translator_for
from tokenvoy.extproc.translate.anthropic_to_bedrock import AnthropicToBedrock
from tokenvoy.extproc.translate.base import ClientAPI, ClientRequest
from tokenvoy.extproc.usage import TokenUsage
from tokenvoy.testupstream import bedrock_converse
from tokenvoy.testupstream.bedrock_converse import THINKING_SIGNATURE, THINKING_TEXT
from tokenvoy.testupstream.openai_chat import WORDS

BACKEND = Backend(
    name="bedrock",
    schema="AWSBedrock",
    schema_version=None,
    path_prefix="",
    endpoint=Endpoint("bedrock-runtime.us-east-1.amazonaws.com", 443, tls=True),
)
MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
REQUEST_ID = "0c1d2e3f-0000-4000-8000-0000000000aa"
PNG = "iVBORw0KGgo="
WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}
WEATHER_SPEC = {
    "toolSpec": {
        "name": "get_weather",
        "description": "Get the current weather in a given location",
        "inputSchema": {"json": WEATHER["input_schema"]},
    }
}
EVENTS = TypeAdapter(RawMessageStreamEvent)


def _request(body: dict[str, Any], headers: dict[str, str] | None = None) -> ClientRequest:
    body = {"model": MODEL, "max_tokens": 1024, **body}
    return ClientRequest(
        api=ClientAPI.ANTHROPIC_MESSAGES,
        path="/anthropic/v1/messages",
        raw=orjson.dumps(body),
        body=body,
        model=body["model"],
        stream=body.get("stream") is True,
        needs_usage=True,
        headers=headers or {},
    )


def _translator(body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[AnthropicToBedrock, Any]:
    translator = AnthropicToBedrock()
    return translator, translator.translate_request(_request(body, headers), BACKEND, MODEL)


def _sent(body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    _, upstream = _translator(body, headers)
    return orjson.loads(upstream.body)


def _rejected(body: dict[str, Any]) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        _translator(body)
    return caught.value


def _user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


# ---- request --------------------------------------------------------------------------------------------


def test_registered_for_the_bedrock_schema() -> None:
    assert translator_for(ClientAPI.ANTHROPIC_MESSAGES, "AWSBedrock") is AnthropicToBedrock


def test_path_headers_and_betas() -> None:
    headers = {
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "context-1m-2025-08-07, interleaved-thinking-2025-05-14",
    }
    _, upstream = _translator({"messages": [_user("hi")], "stream": True}, headers)
    assert upstream.path == "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse-stream"
    assert {"anthropic-version", "anthropic-beta", "x-api-key"} <= set(upstream.remove_headers)
    sent = orjson.loads(upstream.body)
    assert sent == {
        "messages": [{"role": "user", "content": [{"text": "hi"}]}],
        "inferenceConfig": {"maxTokens": 1024},
        "additionalModelRequestFields": {
            "anthropic_beta": ["context-1m-2025-08-07", "interleaved-thinking-2025-05-14"]
        },
    }


def test_system_sampling_thinking_and_top_k() -> None:
    sent = _sent(
        {
            "system": [
                {"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "be kind"},
            ],
            "messages": [_user("hi")],
            "max_tokens": 4096,
            "temperature": 1,
            "top_p": 0.5,
            "top_k": 10,
            "stop_sequences": ["END"],
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "metadata": {"user_id": "alice"},
            "service_tier": "auto",
        }
    )
    assert sent["system"] == [{"text": "be brief"}, {"cachePoint": {"type": "default"}}, {"text": "be kind"}]
    assert sent["inferenceConfig"] == {"maxTokens": 4096, "temperature": 1, "topP": 0.5, "stopSequences": ["END"]}
    assert sent["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": 2048}, "top_k": 10}
    assert set(sent) == {"system", "messages", "inferenceConfig", "additionalModelRequestFields"}
    assert _sent({"system": "plain", "messages": [_user("hi")]})["system"] == [{"text": "plain"}]


HISTORY = [
    _user("weather in Paris and Rome?"),
    {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "Two cities: two calls.", "signature": "c2lnbmF0dXJl"},
            {"type": "redacted_thinking", "data": "cmVkYWN0ZWQ="},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"location": "Rome"}},
        ],
    },
    _user(
        [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_1",
                "content": "sunny",
                "cache_control": {"type": "ephemeral"},
            },
            {
                "type": "tool_result",
                "tool_use_id": "toolu_2",
                "is_error": True,
                "content": [
                    {"type": "text", "text": "station offline"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                ],
            },
        ]
    ),
    _user("which is nicer?"),
]


def test_tool_use_results_and_signed_thinking_replay() -> None:
    sent = _sent({"messages": HISTORY, "tools": [WEATHER]})
    assert sent["messages"] == [
        {"role": "user", "content": [{"text": "weather in Paris and Rome?"}]},
        {
            "role": "assistant",
            "content": [
                {
                    "reasoningContent": {
                        "reasoningText": {"text": "Two cities: two calls.", "signature": "c2lnbmF0dXJl"}
                    }
                },
                {"reasoningContent": {"redactedContent": "cmVkYWN0ZWQ="}},
                {"text": "Checking."},
                {"toolUse": {"toolUseId": "toolu_1", "name": "get_weather", "input": {"location": "Paris"}}},
                {"toolUse": {"toolUseId": "toolu_2", "name": "get_weather", "input": {"location": "Rome"}}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": "toolu_1", "content": [{"text": "sunny"}]}},
                {"cachePoint": {"type": "default"}},
                {
                    "toolResult": {
                        "toolUseId": "toolu_2",
                        "content": [
                            {"text": "station offline"},
                            {"image": {"format": "png", "source": {"bytes": PNG}}},
                        ],
                        "status": "error",
                    }
                },
                {"text": "which is nicer?"},
            ],
        },
    ]
    assert sent["toolConfig"] == {"tools": [WEATHER_SPEC]}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, None),
        ({"type": "any", "disable_parallel_tool_use": True}, {"any": {}}),
        ({"type": "tool", "name": "get_weather"}, {"tool": {"name": "get_weather"}}),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: dict[str, Any] | None) -> None:
    config = _sent({"messages": [_user("hi")], "tools": [WEATHER], "tool_choice": choice})["toolConfig"]
    assert config.get("toolChoice") == expected


def test_tool_choice_none_drops_the_tools_and_is_422_with_tool_history() -> None:
    assert "toolConfig" not in _sent({"messages": [_user("hi")], "tools": [WEATHER], "tool_choice": {"type": "none"}})
    error = _rejected({"messages": HISTORY, "tools": [WEATHER], "tool_choice": {"type": "none"}})
    assert error.status == 422 and "`tool_choice`" in error.message
    error = _rejected({"messages": HISTORY})
    assert error.status == 422 and "`tools`" in error.message


def test_images_documents_and_cache_control_on_tools() -> None:
    pdf = {
        "type": "document",
        "title": "Annual report 2024.pdf",
        "context": "finance",
        "source": {"type": "base64", "media_type": "application/pdf", "data": PNG},
    }
    note = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain notes"}}
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/webp", "data": PNG},
        "cache_control": {"type": "ephemeral"},
    }
    sent = _sent(
        {
            "messages": [_user([pdf, note, image, {"type": "text", "text": "summarise"}])],
            "tools": [{**WEATHER, "cache_control": {"type": "ephemeral"}}],
        }
    )
    assert sent["messages"][0]["content"] == [
        {"document": {"format": "pdf", "name": "Annual report 2024", "source": {"bytes": PNG}, "context": "finance"}},
        {
            "document": {
                "format": "txt",
                "name": "document",
                "source": {"bytes": base64.b64encode(b"plain notes").decode()},
            }
        },
        {"image": {"format": "webp", "source": {"bytes": PNG}}},
        {"cachePoint": {"type": "default"}},
        {"text": "summarise"},
    ]
    assert sent["toolConfig"]["tools"] == [WEATHER_SPEC, {"cachePoint": {"type": "default"}}]


def test_structured_output_and_effort() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    sent = _sent(
        {
            "messages": [_user("hi")],
            "output_config": {"format": {"type": "json_schema", "schema": schema}, "effort": "low"},
        }
    )
    assert sent["outputConfig"] == {
        "textFormat": {"type": "json_schema", "structure": {"jsonSchema": {"schema": orjson.dumps(schema).decode()}}},
        "effort": "low",
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {"messages": [_user([{"type": "image", "source": {"type": "url", "url": "https://x/cat.png"}}])]},
            "messages[0].content[0].source",
        ),
        (
            {
                "messages": [
                    _user([{"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": PNG}}])
                ]
            },
            "messages[0].content[0].source",
        ),
        (
            {"messages": [_user([{"type": "search_result", "source": "x", "title": "t", "content": []}])]},
            "messages[0].content[0]",
        ),
        ({"messages": [_user("hi")], "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0]"),
        ({"messages": [_user("hi")], "tools": [{"type": "bash_20250124", "name": "bash"}]}, "tools[0]"),
        (
            {"messages": [_user("hi")], "mcp_servers": [{"type": "url", "url": "https://mcp", "name": "m"}]},
            "mcp_servers",
        ),
        ({"messages": [_user("hi")], "output_format": {"type": "text"}}, "output_format"),
    ],
)
def test_what_bedrock_cannot_express_is_422_naming_the_field(body: dict[str, Any], field: str) -> None:
    error = _rejected(body)
    assert error.status == 422
    assert f"`{field}`" in error.message


def test_only_the_beta_flags_aws_documents_for_claude_reach_converse_and_the_config_can_widen_them() -> None:
    headers = {"anthropic-beta": "claude-code-20250219, interleaved-thinking-2025-05-14"}
    sent = _sent({"messages": [_user("hi")]}, headers)
    assert sent["additionalModelRequestFields"]["anthropic_beta"] == ["interleaved-thinking-2025-05-14"]
    assert bedrock_converse.converse(orjson.dumps(sent), stream=False).status == 200
    refused = {**sent, "additionalModelRequestFields": {"anthropic_beta": ["claude-code-20250219"]}}
    reply = bedrock_converse.converse(orjson.dumps(refused), stream=False)
    assert reply.status == 400 and "invalid beta flag: claude-code-20250219" in str(reply.body)
    translator = AnthropicToBedrock()
    wide = dataclasses.replace(BACKEND, anthropic_betas=frozenset({"*"}))
    upstream = translator.translate_request(_request({"messages": [_user("hi")]}, headers), wide, MODEL)
    betas = orjson.loads(upstream.body)["additionalModelRequestFields"]["anthropic_beta"]
    assert betas == ["claude-code-20250219", "interleaved-thinking-2025-05-14"]


def test_mid_conversation_system_messages_become_system_blocks_after_the_top_level_ones() -> None:
    """Converse takes system text only at the top level, and roles only user/assistant: Claude Code's
    ``role: "system"`` message at ``messages[1]`` joins the system blocks; the turns around it merge."""
    sent = _sent(
        {
            "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                _user("hello"),
                {"role": "system", "content": "Answer briefly."},
                _user("again"),
                {"role": "assistant", "content": "Hi"},
                {"role": "system", "content": [{"type": "text", "text": "Now in French."}]},
                _user("more"),
            ],
        }
    )
    assert sent["system"] == [
        {"text": "You are Claude Code."},
        {"cachePoint": {"type": "default"}},
        {"text": "Answer briefly."},
        {"text": "Now in French."},
    ]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][0]["content"] == [{"text": "hello"}, {"text": "again"}]
    assert bedrock_converse.converse(orjson.dumps(sent), stream=False).status == 200  # the fake (AWS docs) takes it


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        ({"messages": [_user("x"), {"role": "system", "content": 3}]}, "messages[1].content"),
        ({"messages": [_user("x")], "max_tokens": 0}, "max_tokens"),
        ({"messages": [_user("x")], "stop_sequences": "END"}, "stop_sequences"),
        ({"messages": [_user([{"type": "tool_use", "id": "a", "name": "f", "input": {}}])]}, "messages[0].content[0]"),
        ({"messages": [_user([{"type": "tool_result"}])]}, "messages[0].content[0].tool_use_id"),
        ({"messages": [_user("x")], "tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
    ],
)
def test_malformed_requests_are_400_naming_the_field(body: dict[str, Any], field: str) -> None:
    error = _rejected(body)
    assert error.status == 400
    assert f"`{field}`" in error.message


@pytest.mark.parametrize(
    "body",
    [
        {"system": "be brief", "messages": [_user("hello")], "stop_sequences": ["x"], "top_k": 3},
        {"messages": HISTORY, "tools": [WEATHER], "tool_choice": {"type": "any"}},
        {"messages": [_user("think")], "max_tokens": 4096, "thinking": {"type": "enabled", "budget_tokens": 1024}},
        {"messages": [_user("hi"), {"role": "assistant", "content": "The answer is"}]},
    ],
)
def test_translated_requests_pass_the_fake_bedrock_validation(body: dict[str, Any]) -> None:
    _, upstream = _translator(body, {"anthropic-beta": "token-efficient-tools-2025-02-19"})
    reply = bedrock_converse.converse(upstream.body, stream=False)
    assert reply.status == 200, reply.body


# ---- answers --------------------------------------------------------------------------------------------


def _answer(translator: AnthropicToBedrock, status: int, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    headers = headers if headers is not None else {"x-amzn-requestid": REQUEST_ID}
    if not 200 <= status < 300:  # as the router calls it: errors have their own method
        out = translator.translate_error(status, headers, body)
    else:
        translator.translate_response_headers(headers)
        out = translator.translate_response_body(body, True)
    assert out is not None
    return out


def test_answer_with_thinking_tool_use_and_cache_usage() -> None:
    translator, _ = _translator({"messages": [_user("weather?")], "tools": [WEATHER]})
    answer = {
        "output": {
            "message": {
                "role": "assistant",
                "content": [
                    {"reasoningContent": {"reasoningText": {"text": "Call it.", "signature": "c2ln"}}},
                    {"reasoningContent": {"redactedContent": "cmVk"}},
                    {"text": "Checking."},
                    {"toolUse": {"toolUseId": "tooluse_x", "name": "get_weather", "input": {"location": "Oslo"}}},
                ],
            }
        },
        "stopReason": "tool_use",
        "usage": {
            "inputTokens": 9,
            "outputTokens": 20,
            "totalTokens": 139,
            "cacheReadInputTokens": 100,
            "cacheWriteInputTokens": 10,
        },
        "metrics": {"latencyMs": 9},
    }
    message = Message.model_validate(orjson.loads(_answer(translator, 200, orjson.dumps(answer))))
    assert message.id == f"msg_bdrk_{REQUEST_ID}"
    assert message.model == MODEL
    assert message.stop_reason == "tool_use"
    assert [b.model_dump(exclude_none=True) for b in message.content] == [
        {"type": "thinking", "thinking": "Call it.", "signature": "c2ln"},
        {"type": "redacted_thinking", "data": "cmVk"},
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "tooluse_x", "name": "get_weather", "input": {"location": "Oslo"}},
    ]
    assert (
        message.usage.input_tokens,
        message.usage.cache_read_input_tokens,
        message.usage.cache_creation_input_tokens,
        message.usage.output_tokens,
    ) == (9, 100, 10, 20)
    assert translator.usage == TokenUsage(input=119, cached_input=100, cache_creation_input=10, output=20, total=139)
    assert translator.response_model == MODEL


@pytest.mark.parametrize(
    ("bedrock", "anthropic"),
    [
        ("end_turn", "end_turn"),
        ("stop_sequence", "stop_sequence"),
        ("max_tokens", "max_tokens"),
        ("tool_use", "tool_use"),
        ("model_context_window_exceeded", "model_context_window_exceeded"),
        ("guardrail_intervened", "refusal"),
        ("content_filtered", "refusal"),
        ("malformed_tool_use", "end_turn"),
    ],
)
def test_stop_reasons(bedrock: str, anthropic: str) -> None:
    translator, _ = _translator({"messages": [_user("hi")]})
    answer = {
        "output": {"message": {"role": "assistant", "content": [{"text": "x"}]}},
        "stopReason": bedrock,
        "usage": {},
    }
    assert orjson.loads(_answer(translator, 200, orjson.dumps(answer)))["stop_reason"] == anthropic


@pytest.mark.parametrize("stream", [False, True])
def test_throttling_keeps_status_and_bedrock_type_in_anthropic_shape(stream: bool) -> None:
    translator, _ = _translator({"messages": [_user("hi")], "stream": stream})
    headers = {"x-amzn-errortype": "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"}
    out = _answer(translator, 429, b'{"message":"Too many requests, please wait before trying again."}', headers)
    assert orjson.loads(out) == {
        "type": "error",
        "error": {"type": "ThrottlingException", "message": "Too many requests, please wait before trying again."},
    }


def test_access_denied_and_bodies_that_are_not_json() -> None:
    translator, _ = _translator({"messages": [_user("hi")]})
    out = orjson.loads(_answer(translator, 403, b"<html>denied</html>", {"x-amzn-errortype": "AccessDeniedException"}))
    assert out == {"type": "error", "error": {"type": "AccessDeniedException", "message": "<html>denied</html>"}}


# ---- streams --------------------------------------------------------------------------------------------


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    return encode_event(kind, orjson.dumps({**payload, "p": "abcdefgh"}))


STREAM = b"".join(
    [
        _event("messageStart", {"role": "assistant"}),
        _event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "Let me see… ☃"}}}),
        _event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "c2ln"}}}),
        _event("contentBlockStop", {"contentBlockIndex": 0}),
        _event(
            "contentBlockDelta", {"contentBlockIndex": 1, "delta": {"reasoningContent": {"redactedContent": "cmVk"}}}
        ),
        _event(
            "contentBlockDelta", {"contentBlockIndex": 1, "delta": {"reasoningContent": {"redactedContent": "YWN0"}}}
        ),
        _event("contentBlockStop", {"contentBlockIndex": 1}),
        _event("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"text": "Grüße "}}),
        _event("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"text": "世界"}}),
        _event("contentBlockStop", {"contentBlockIndex": 2}),
        _event(
            "contentBlockStart",
            {"contentBlockIndex": 3, "start": {"toolUse": {"toolUseId": "tooluse_9", "name": "get_weather"}}},
        ),
        _event("contentBlockDelta", {"contentBlockIndex": 3, "delta": {"toolUse": {"input": ""}}}),
        _event("contentBlockDelta", {"contentBlockIndex": 3, "delta": {"toolUse": {"input": '{"location":'}}}),
        _event("contentBlockDelta", {"contentBlockIndex": 3, "delta": {"toolUse": {"input": '"Zürich"}'}}}),
        _event("contentBlockStop", {"contentBlockIndex": 3}),
        _event("messageStop", {"stopReason": "tool_use"}),
        _event(
            "metadata",
            {
                "usage": {
                    "inputTokens": 8,
                    "outputTokens": 30,
                    "totalTokens": 88,
                    "cacheReadInputTokens": 40,
                    "cacheWriteInputTokens": 10,
                },
                "metrics": {"latencyMs": 7},
            },
        ),
    ]
)


def _streaming() -> AnthropicToBedrock:
    translator, _ = _translator({"messages": [_user("weather?")], "tools": [WEATHER], "stream": True})
    changes = translator.translate_response_headers({"x-amzn-requestid": REQUEST_ID})
    assert changes is not None and changes.set_headers == {"content-type": "text/event-stream; charset=utf-8"}
    return translator


def _client_bytes(translator: AnthropicToBedrock, pieces: list[bytes]) -> bytes:
    """What the client gets, as the router sends it: a malformed stream ends with the router's error event."""
    out = b""
    for i, p in enumerate(pieces):
        try:
            out += translator.translate_response_body(p, i == len(pieces) - 1) or b""
        except UpstreamShapeError as error:
            return out + error.emitted + ClientAPI.ANTHROPIC_MESSAGES.stream_error_event(error)
    return out


def _events(data: bytes) -> list[dict[str, Any]]:
    events = []
    for frame in data.split(b"\n\n"):
        if not frame:
            continue
        name, payload = frame.split(b"\n")
        event = orjson.loads(payload.removeprefix(b"data: "))
        assert name == b"event: " + event["type"].encode()
        events.append(event)
    return events


def _accumulate(events: list[dict[str, Any]]) -> Message:
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for event in events:
        snapshot = accumulate_event(event=EVENTS.validate_python(event), current_snapshot=snapshot, json_bufs=json_bufs)
    assert snapshot is not None
    return snapshot


def test_message_start_carries_an_estimate_of_the_input_tokens() -> None:
    """Bedrock reports usage only in its last event; Claude Code reads message_start's input_tokens meanwhile."""
    events = _events(_client_bytes(_streaming(), [STREAM]))
    assert events[0]["message"]["usage"] == {"input_tokens": 2 + 4, "output_tokens": 0}  # "weather?": 8 bytes / 4 + 4


def test_stream_translated_event_by_event() -> None:
    events = _events(_client_bytes(_streaming(), [STREAM]))
    assert [e["type"] for e in events] == [
        "message_start",
        *["content_block_start", "content_block_delta", "content_block_delta", "content_block_stop"],  # thinking
        *["content_block_start", "content_block_stop"],  # redacted thinking, whole
        *["content_block_start", "content_block_delta", "content_block_delta", "content_block_stop"],  # text
        *["content_block_start", "content_block_delta", "content_block_delta", "content_block_stop"],  # tool
        "message_delta",
        "message_stop",
    ]
    assert events[0]["message"]["id"] == f"msg_bdrk_{REQUEST_ID}" and events[0]["message"]["model"] == MODEL
    assert [e["index"] for e in events if e["type"] == "content_block_start"] == [0, 1, 2, 3]
    assert events[5]["content_block"] == {"type": "redacted_thinking", "data": base64.b64encode(b"redact").decode()}
    assert events[-2] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {
            "input_tokens": 8,
            "cache_creation_input_tokens": 10,
            "cache_read_input_tokens": 40,
            "output_tokens": 30,
        },
    }
    message = _accumulate(events)
    assert [b.model_dump(exclude_none=True) for b in message.content] == [
        {"type": "thinking", "thinking": "Let me see… ☃", "signature": "c2ln"},
        {"type": "redacted_thinking", "data": base64.b64encode(b"redact").decode()},
        {"type": "text", "text": "Grüße 世界"},
        {"type": "tool_use", "id": "tooluse_9", "name": "get_weather", "input": {"location": "Zürich"}},
    ]
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens, message.usage.output_tokens) == (
        8,
        40,
        30,
    )


def test_recorded_stream_accumulates_to_the_same_message_as_the_json_answer() -> None:
    body = {
        "messages": [_user("hello there")],
        "max_tokens": 4096,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    streaming, upstream = _translator({**body, "stream": True})
    streaming.translate_response_headers({"x-amzn-requestid": REQUEST_ID})
    reply = bedrock_converse.converse(upstream.body, stream=True)
    assert reply.events is not None
    streamed = _accumulate(_events(_client_bytes(streaming, [b"".join(bedrock_converse.frames(reply.events))])))

    whole, upstream = _translator(body)
    answer = bedrock_converse.converse(upstream.body, stream=False)
    message = Message.model_validate(orjson.loads(_answer(whole, 200, orjson.dumps(answer.body))))
    assert streamed.model_dump() == message.model_dump()
    assert message.content[0].model_dump() == {
        "type": "thinking",
        "thinking": THINKING_TEXT,
        "signature": THINKING_SIGNATURE,
    }
    assert message.content[1].model_dump()["text"] == " ".join(WORDS)
    assert streaming.usage == whole.usage == TokenUsage(input=2, output=34, total=36)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=40))
def test_stream_translation_is_the_same_for_any_split(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(STREAM)]
    pieces = [STREAM[a:b] for a, b in itertools.pairwise(points)]
    assert _client_bytes(_streaming(), pieces) == _client_bytes(_streaming(), [STREAM])


def test_stream_fed_one_byte_at_a_time() -> None:
    pieces = [STREAM[i : i + 1] for i in range(len(STREAM))]
    assert _client_bytes(_streaming(), pieces) == _client_bytes(_streaming(), [STREAM])


def test_a_mid_stream_exception_becomes_an_error_event() -> None:
    cut = STREAM.index(_event("contentBlockStop", {"contentBlockIndex": 2}))
    data = STREAM[:cut] + encode_exception("throttlingException", b'{"message":"Too many tokens"}') + STREAM[cut:]
    events = _events(_client_bytes(_streaming(), [data]))
    assert events[-1] == {"type": "error", "error": {"type": "ThrottlingException", "message": "Too many tokens"}}
    assert "message_stop" not in [e["type"] for e in events]


def test_a_cut_stream_ends_with_an_error_event_and_a_stream_without_metadata_still_stops() -> None:
    stop = _event("messageStop", {"stopReason": "tool_use"})
    cut = STREAM.index(stop)
    events = _events(_client_bytes(_streaming(), [STREAM[:cut]]))
    assert events[-1]["type"] == "error"
    assert "ended before `messageStop`" in events[-1]["error"]["message"]
    assert events[-2]["type"] != "message_stop"
    events = _events(_client_bytes(_streaming(), [STREAM[: cut + len(stop)]]))
    assert [e["type"] for e in events[-2:]] == ["message_delta", "message_stop"]
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
