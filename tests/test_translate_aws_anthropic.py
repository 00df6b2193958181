"""Claude on Bedrock InvokeModel (schema ``AWSAnthropic``) for OpenAI and Anthropic clients.

The content mapping is Anthropic's (tested in test_translate_openai_to_anthropic.py); these tests pin what
the Bedrock wire changes: the path, the body keys, the event-stream answers (compared with the same events
sent as Anthropic SSE, split at any byte), mid-stream exceptions and Bedrock's error shape.
"""

from __future__ import annotations

import base64
import dataclasses
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
from tokenvoy.extproc.sse import SSEParser
from tokenvoy.extproc.translate import translator_for
from tokenvoy.extproc.translate.anthropic_to_anthropic import AnthropicToAnthropic
from tokenvoy.extproc.translate.aws_anthropic import AnthropicToAWSAnthropic, OpenAIToAWSAnthropic
from tokenvoy.extproc.translate.base import ClientAPI, ClientRequest
from tokenvoy.extproc.translate.openai_to_anthropic import OpenAIToAnthropic
from tokenvoy.extproc.usage import TokenUsage
from tokenvoy.testupstream import anthropic_clouds
from tokenvoy.testupstream.http import Request
from tokenvoy.testupstream.server import App

BEDROCK = Backend("bedrock", "AWSAnthropic", None, "", Endpoint("bedrock-runtime.us-east-1.amazonaws.com", 443, True))
ANTHROPIC = Backend("anthropic", "Anthropic", None, "/v1", Endpoint("api.anthropic.com", 443, tls=True))
MODEL = "anthropic.claude-sonnet-4-5-20250929-v1:0"
NOW = 1_700_000_000
USER = {"role": "user", "content": "Hello, Claude"}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def _openai(body: dict[str, Any], headers: dict[str, str] | None = None) -> ClientRequest:
    body = {"model": MODEL, **body}
    return ClientRequest(
        ClientAPI.OPENAI_CHAT,
        "/v1/chat/completions",
        orjson.dumps(body),
        body,
        body["model"],
        body.get("stream") is True,
        True,
        headers=headers or {},
    )


def _anthropic(body: dict[str, Any], headers: dict[str, str] | None = None, raw: bytes | None = None) -> ClientRequest:
    return ClientRequest(
        ClientAPI.ANTHROPIC_MESSAGES,
        "/anthropic/v1/messages",
        raw if raw is not None else orjson.dumps(body),
        body,
        body["model"],
        body.get("stream") is True,
        True,
        headers=headers if headers is not None else {"anthropic-version": "2023-06-01", "x-api-key": "client"},
    )


def _sent(upstream_body: bytes | None) -> dict[str, Any]:
    assert upstream_body is not None
    return orjson.loads(upstream_body)


# ---- requests ----------------------------------------------------------------------------------------


def test_registered_for_both_client_apis():
    openai_factory = translator_for(ClientAPI.OPENAI_CHAT, "AWSAnthropic")
    anthropic_factory = translator_for(ClientAPI.ANTHROPIC_MESSAGES, "AWSAnthropic")
    assert openai_factory is not None and isinstance(openai_factory(), OpenAIToAWSAnthropic)
    assert anthropic_factory is not None and isinstance(anthropic_factory(), AnthropicToAWSAnthropic)


@pytest.mark.parametrize(
    ("stream", "model", "path"),
    [
        (False, MODEL, "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"),
        (True, MODEL, "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke-with-response-stream"),
        (
            False,
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5-v1:0",
            "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-sonnet-4-5-v1%3A0/invoke",
        ),
    ],
)
def test_path_is_the_url_encoded_model_id_and_the_stream_choice(stream: bool, model: str, path: str):
    upstream = OpenAIToAWSAnthropic().translate_request(_openai({"messages": [USER], "stream": stream}), BEDROCK, model)
    assert upstream.path == path
    upstream = AnthropicToAWSAnthropic().translate_request(
        _anthropic({"model": "claude", "max_tokens": 5, "messages": [USER], "stream": stream}), BEDROCK, model
    )
    assert upstream.path == path


def test_backend_prefix_is_kept():
    prefixed = dataclasses.replace(BEDROCK, path_prefix="/bedrock-proxy")
    upstream = OpenAIToAWSAnthropic().translate_request(_openai({"messages": [USER]}), prefixed, "m")
    assert upstream.path == "/bedrock-proxy/model/m/invoke"


RICH_CHAT = {
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "rain"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And this picture?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        },
    ],
    "tools": [WEATHER_TOOL],
    "tool_choice": "required",
    "parallel_tool_calls": False,
    "stop": ["END"],
    "max_completion_tokens": 3000,
    "temperature": 0.5,
    "top_p": 0.9,
    "reasoning_effort": "low",
    "user": "alice",
}


@pytest.mark.parametrize("stream", [False, True])
def test_openai_body_is_anthropics_without_model_and_stream_plus_bedrocks_version(stream: bool):
    body = {**RICH_CHAT, "stream": stream}
    direct = OpenAIToAnthropic().translate_request(_openai(body), ANTHROPIC, MODEL)
    upstream = OpenAIToAWSAnthropic().translate_request(_openai(body), BEDROCK, MODEL)
    expected = {k: v for k, v in _sent(direct.body).items() if k not in ("model", "stream")}
    assert _sent(upstream.body) == {**expected, "anthropic_version": "bedrock-2023-05-31"}
    assert "anthropic-version" not in upstream.set_headers  # Bedrock reads the version from the body
    assert upstream.set_headers["content-type"] == "application/json"
    assert "authorization" in upstream.remove_headers  # the client's OpenAI key stays at the gateway


def test_what_claude_cannot_express_is_still_422():
    with pytest.raises(GatewayError) as caught:
        OpenAIToAWSAnthropic().translate_request(_openai({"messages": [USER], "logprobs": True}), BEDROCK, MODEL)
    assert caught.value.status == 422 and "`logprobs`" in caught.value.message


def _fake_bedrock(path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    request = Request("POST", path, path, "", "HTTP/1.1", {"content-type": "application/json"}, body, True)
    response = anthropic_clouds.bedrock_invoke(request, App(), 0.0)
    raw = response.body if response.stream is None else b"".join(response.stream)  # type: ignore[arg-type]
    return response.status, dict(response.headers), raw


# What Claude takes with thinking on: temperature 1, top_p 0.95 to 1 (the extended thinking page).
THINKING_CHAT = {**RICH_CHAT, "temperature": 1, "top_p": 0.95}


@pytest.mark.parametrize(
    "body",
    [
        THINKING_CHAT,
        {**THINKING_CHAT, "stream": True},
        {"messages": [USER], "tools": [WEATHER_TOOL]},
        {"messages": [USER], "max_tokens": 7, "stop": "x", "temperature": 1},
    ],
)
def test_translated_requests_pass_the_fake_bedrocks_validation(body: dict[str, Any]):
    upstream = OpenAIToAWSAnthropic().translate_request(_openai(body), BEDROCK, MODEL)
    status, _, raw = _fake_bedrock(upstream.path, upstream.body or b"")
    assert status == 200, raw


def test_a_temperature_with_reasoning_is_the_clients_and_claude_refuses_it():
    """reasoning_effort and temperature 0.5 are both sent as asked; Claude answers 400, as it would directly."""
    upstream = OpenAIToAWSAnthropic().translate_request(_openai(RICH_CHAT), BEDROCK, MODEL)
    status, _, raw = _fake_bedrock(upstream.path, upstream.body or b"")
    assert status == 400 and b"`temperature` may only be set to 1 when thinking is enabled" in raw


def test_anthropic_client_bytes_are_edited_in_place():
    raw = (
        b'{"model": "claude-x",  "max_tokens": 10, "stream": true,\n'
        b' "messages": [{"role": "user", "content": "h\xc3\xa9llo  spaced"}], "metadata": {"user_id": "u1"}}'
    )
    request = _anthropic(orjson.loads(raw), raw=raw)
    upstream = AnthropicToAWSAnthropic().translate_request(request, BEDROCK, MODEL)
    assert upstream.path.endswith("/invoke-with-response-stream")
    assert upstream.set_headers == {}  # no anthropic-version header: it is in the body
    assert upstream.body is not None
    assert b'[{"role": "user", "content": "h\xc3\xa9llo  spaced"}]' in upstream.body  # untouched bytes
    assert orjson.loads(upstream.body) == {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "h\u00e9llo  spaced"}],
        "metadata": {"user_id": "u1"},
    }
    status, _, answer = _fake_bedrock(upstream.path, upstream.body)
    assert status == 200, answer


def test_anthropic_beta_header_becomes_the_body_list_bedrock_reads():
    body = {"model": "c", "max_tokens": 5, "messages": [USER]}
    headers = {"anthropic-beta": "context-1m-2025-08-07, interleaved-thinking-2025-05-14"}
    upstream = AnthropicToAWSAnthropic().translate_request(_anthropic(body, headers), BEDROCK, MODEL)
    assert _sent(upstream.body)["anthropic_beta"] == ["context-1m-2025-08-07", "interleaved-thinking-2025-05-14"]
    own = {**body, "anthropic_beta": ["token-efficient-tools-2025-02-19"]}
    upstream = AnthropicToAWSAnthropic().translate_request(_anthropic(own, headers), BEDROCK, MODEL)
    assert _sent(upstream.body)["anthropic_beta"] == ["token-efficient-tools-2025-02-19"]  # the body's wins


CLAUDE_CODE_BETAS = (
    "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,"
    "thinking-token-count-2026-05-13,effort-2025-11-24"
)


def test_beta_flags_bedrock_does_not_document_are_dropped_and_the_fake_bedrock_accepts_the_rest():
    """Claude Code's default flags: Bedrock refuses ``claude-code-20250219`` (400 "invalid beta flag")."""
    body = {"model": "c", "max_tokens": 5, "messages": [USER], "stream": True}
    request = _anthropic(body, {"anthropic-beta": CLAUDE_CODE_BETAS})
    upstream = AnthropicToAWSAnthropic().translate_request(request, BEDROCK, MODEL)
    sent = _sent(upstream.body)
    assert sent["anthropic_beta"] == [
        "interleaved-thinking-2025-05-14",
        "context-management-2025-06-27",
        "effort-2025-11-24",
    ]
    assert "anthropic-beta" in upstream.remove_headers  # read from the body only
    status, _, answer = _fake_bedrock(upstream.path, upstream.body)
    assert status == 200, answer
    refused = _fake_bedrock(upstream.path, orjson.dumps({**sent, "anthropic_beta": ["claude-code-20250219"]}))
    assert refused[0] == 400 and b"invalid beta flag: claude-code-20250219" in refused[2]


def test_no_allowed_beta_flag_left_sends_no_beta_list():
    request = _anthropic(
        {"model": "c", "max_tokens": 5, "messages": [USER]}, {"anthropic-beta": "claude-code-20250219"}
    )
    upstream = AnthropicToAWSAnthropic().translate_request(request, BEDROCK, MODEL)
    assert "anthropic_beta" not in _sent(upstream.body)


@pytest.mark.parametrize(
    ("allowed", "expected"),
    [
        (frozenset({"claude-code-20250219"}), ["claude-code-20250219"]),
        (frozenset({"*"}), CLAUDE_CODE_BETAS.split(",")),
    ],
)
def test_the_configured_allowlist_replaces_the_documented_one(allowed, expected):
    backend = dataclasses.replace(BEDROCK, anthropic_betas=allowed)
    request = _anthropic({"model": "c", "max_tokens": 5, "messages": [USER]}, {"anthropic-beta": CLAUDE_CODE_BETAS})
    upstream = AnthropicToAWSAnthropic().translate_request(request, backend, MODEL)
    assert _sent(upstream.body)["anthropic_beta"] == expected


def test_the_fakes_beta_list_is_the_one_aws_documents():
    """Both were written from AWS's "Request and Response" page for Claude (the table of beta headers)."""
    from tokenvoy.extproc.translate.anthropic_common import BEDROCK_CLAUDE_BETAS

    assert anthropic_clouds.BEDROCK_BETAS == BEDROCK_CLAUDE_BETAS


# ---- JSON answers -------------------------------------------------------------------------------------

MESSAGE = {
    "id": "msg_bdrk_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_bdrk_01A", "name": "get_weather", "input": {"city": "Paris"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 20,
        "cache_creation_input_tokens": 5,
        "cache_read_input_tokens": 100,
        "output_tokens": 30,
    },
}
MESSAGE_USAGE = TokenUsage(input=125, cached_input=100, cache_creation_input=5, output=30, total=155)


def test_openai_client_gets_a_chat_completion_with_usage_and_model():
    translator = OpenAIToAWSAnthropic(clock=lambda: NOW)
    translator.translate_request(_openai({"messages": [USER], "tools": [WEATHER_TOOL]}), BEDROCK, MODEL)
    changes = translator.translate_response_headers({"content-type": "application/json"})
    assert changes is not None and "content-length" in changes.remove_headers
    completion = ChatCompletion.model_validate(
        orjson.loads(translator.translate_response_body(orjson.dumps(MESSAGE), True))
    )
    assert completion.id == MESSAGE["id"]
    assert completion.model == "claude-sonnet-4-5-20250929"
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.choices[0].message.content == "Let me check."
    assert completion.choices[0].message.tool_calls[0].function.arguments == '{"city":"Paris"}'
    assert completion.usage.prompt_tokens == 125 and completion.usage.prompt_tokens_details.cached_tokens == 100
    assert translator.usage == MESSAGE_USAGE
    assert translator.response_model == "claude-sonnet-4-5-20250929"


def test_anthropic_client_gets_the_answer_unchanged_and_usage_is_read():
    translator = AnthropicToAWSAnthropic()
    translator.translate_request(_anthropic({"model": "c", "max_tokens": 5, "messages": [USER]}), BEDROCK, MODEL)
    assert translator.translate_response_headers({"content-type": "application/json"}) is None
    assert translator.translate_response_body(orjson.dumps(MESSAGE), True) is None
    assert translator.usage == MESSAGE_USAGE
    assert translator.response_model == "claude-sonnet-4-5-20250929"


def test_an_answer_without_a_model_reports_the_model_asked_for():
    message = {k: v for k, v in MESSAGE.items() if k != "model"}
    openai_translator = OpenAIToAWSAnthropic(clock=lambda: NOW)
    openai_translator.translate_request(_openai({"messages": [USER]}), BEDROCK, MODEL)
    completion = orjson.loads(openai_translator.translate_response_body(orjson.dumps(message), True))
    assert completion["model"] == MODEL
    assert openai_translator.response_model == MODEL
    anthropic_translator = AnthropicToAWSAnthropic()
    anthropic_translator.translate_request(
        _anthropic({"model": "c", "max_tokens": 5, "messages": [USER]}), BEDROCK, MODEL
    )
    anthropic_translator.translate_response_body(orjson.dumps(message), True)
    assert anthropic_translator.response_model == MODEL


# ---- streams ------------------------------------------------------------------------------------------

# What Claude on Bedrock streams (recorded shape): thinking, text with multi-byte characters, a tool call
# streamed as JSON pieces, cache usage in message_start, cumulative output in message_delta, and Bedrock's
# invocation metrics on message_stop.
EVENTS: list[dict[str, Any]] = [
    {
        "type": "message_start",
        "message": {
            "id": "msg_bdrk_01Vn3",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": 472,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 2048,
                "output_tokens": 2,
            },
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "One city."}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Voilà, je vérifie "}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "la météo 🌤️ 東京"}},
    {"type": "content_block_stop", "index": 1},
    {
        "type": "content_block_start",
        "index": 2,
        "content_block": {"type": "tool_use", "id": "toolu_bdrk_01T1x", "name": "get_weather", "input": {}},
    },
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": ""}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"city": "Pa'}},
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": 'ris"}'}},
    {"type": "content_block_stop", "index": 2},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 89},
    },
    {
        "type": "message_stop",
        "amazon-bedrock-invocationMetrics": {
            "inputTokenCount": 472,
            "outputTokenCount": 89,
            "invocationLatency": 2103,
            "firstByteLatency": 412,
        },
    },
]
STREAM_USAGE = TokenUsage(input=2520, cached_input=2048, cache_creation_input=0, output=89, total=2609)


def _chunk(event: dict[str, Any]) -> bytes:
    return encode_event("chunk", orjson.dumps({"bytes": base64.b64encode(orjson.dumps(event)).decode(), "p": "abcd"}))


def _sse(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


BEDROCK_STREAM = b"".join(_chunk(e) for e in EVENTS)
SSE_STREAM = b"".join(_sse(e) for e in EVENTS)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def _feed(translator: Any, pieces: list[bytes]) -> bytes:
    out = []
    for i, piece in enumerate(pieces):
        result = translator.translate_response_body(piece, i == len(pieces) - 1)
        out.append(piece if result is None else result)
    return b"".join(out)


def _openai_streaming(cls: type[OpenAIToAnthropic] = OpenAIToAWSAnthropic, backend: Backend = BEDROCK) -> Any:
    translator = cls(clock=lambda: NOW)
    body = {"messages": [USER], "stream": True, "stream_options": {"include_usage": True}}
    translator.translate_request(_openai(body), backend, MODEL)
    return translator


def _anthropic_streaming(cls: type[AnthropicToAnthropic] = AnthropicToAWSAnthropic, backend: Backend = BEDROCK) -> Any:
    translator = cls()
    translator.translate_request(
        _anthropic({"model": "c", "max_tokens": 5, "messages": [USER], "stream": True}), backend, MODEL
    )
    return translator


def test_openai_stream_is_what_the_same_events_give_from_anthropic_itself():
    translator = _openai_streaming()
    changes = translator.translate_response_headers({"content-type": "application/vnd.amazon.eventstream"})
    assert changes is not None and changes.set_headers == {"content-type": "text/event-stream"}
    from_bedrock = _feed(translator, [BEDROCK_STREAM])
    from_anthropic = _feed(_openai_streaming(OpenAIToAnthropic, ANTHROPIC), [SSE_STREAM])
    assert from_bedrock == from_anthropic
    assert from_bedrock.endswith(b"data: [DONE]\n\n")
    assert translator.usage == STREAM_USAGE
    assert translator.response_model == "claude-sonnet-4-5-20250929"

    state = ChatCompletionStreamState()
    for event in SSEParser().feed(from_bedrock):
        if event.data != "[DONE]":
            state.handle_chunk(ChatCompletionChunk.model_validate(orjson.loads(event.data)))
    completion = state.get_final_completion()
    message = completion.choices[0].message
    assert message.content == "Voilà, je vérifie la météo 🌤️ 東京"
    assert message.tool_calls[0].function.arguments == '{"city": "Paris"}'
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.usage.prompt_tokens == 2520 and completion.usage.completion_tokens == 89


def test_anthropic_stream_is_reframed_as_anthropics_sse():
    translator = _anthropic_streaming()
    changes = translator.translate_response_headers({"content-type": "application/vnd.amazon.eventstream"})
    assert changes is not None and changes.set_headers == {"content-type": "text/event-stream"}
    out = _feed(translator, [BEDROCK_STREAM])
    events = SSEParser().feed(out)
    assert [e.event for e in events] == [e["type"] for e in EVENTS]
    assert [orjson.loads(e.data) for e in events] == EVENTS
    assert translator.usage == STREAM_USAGE
    assert translator.response_model == "claude-sonnet-4-5-20250929"


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(BEDROCK_STREAM)), max_size=40))
def test_any_split_of_the_event_stream_gives_the_same_client_bytes(cuts: list[int]):
    pieces = _split(BEDROCK_STREAM, cuts)
    assert _feed(_openai_streaming(), pieces) == _feed(_openai_streaming(), [BEDROCK_STREAM])
    assert _feed(_anthropic_streaming(), pieces) == SSE_STREAM


def test_one_byte_at_a_time_splits_every_prelude_crc_and_payload_byte():
    pieces = [BEDROCK_STREAM[i : i + 1] for i in range(len(BEDROCK_STREAM))]
    openai_translator = _openai_streaming()
    assert _feed(openai_translator, pieces) == _feed(_openai_streaming(), [BEDROCK_STREAM])
    assert openai_translator.usage == STREAM_USAGE
    anthropic_translator = _anthropic_streaming()
    assert _feed(anthropic_translator, pieces) == SSE_STREAM
    assert anthropic_translator.usage == STREAM_USAGE


def test_stream_bytes_come_out_as_they_arrive():
    translator = _openai_streaming()
    first_two = _chunk(EVENTS[0]) + _chunk(EVENTS[5])
    out = translator.translate_response_body(first_two + BEDROCK_STREAM[:7], False)
    assert out.startswith(b"data: ") and b'"role":"assistant"' in out
    assert b"[DONE]" not in out


THROTTLED = (
    _chunk(EVENTS[0])
    + _chunk(EVENTS[5])
    + _chunk(EVENTS[6])
    + encode_exception("throttlingException", b'{"message":"Too many tokens, please wait before trying again."}')
)


def test_a_mid_stream_exception_is_an_openai_error_chunk_and_no_done():
    out = _feed(_openai_streaming(), [THROTTLED])
    frames = [e.data for e in SSEParser().feed(out)]
    assert "[DONE]" not in frames
    assert orjson.loads(frames[-1]) == {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "code": "429",
            "message": "throttlingException: Too many tokens, please wait before trying again.",
        },
    }


def test_a_mid_stream_exception_is_an_anthropic_error_event():
    out = _feed(_anthropic_streaming(), [THROTTLED])
    last = SSEParser().feed(out)[-1]
    assert last.event == "error"
    assert orjson.loads(last.data) == {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": "throttlingException: Too many tokens, please wait before trying again.",
        },
    }


def test_a_corrupted_event_stream_ends_with_an_error_not_garbage():
    corrupted = bytearray(BEDROCK_STREAM)
    corrupted[len(_chunk(EVENTS[0])) + 9] ^= 0x01  # inside the second message's prelude CRC
    with pytest.raises(UpstreamShapeError) as raised:  # the router ends the client's stream with an error event
        _feed(_anthropic_streaming(), [bytes(corrupted)])
    assert "invalid AWS event stream" in raised.value.message
    out = raised.value.emitted + ClientAPI.ANTHROPIC_MESSAGES.stream_error_event(raised.value)
    events = [e for e in SSEParser().feed(out) if e.data]
    assert [e.event for e in events] == ["message_start", "error"]  # nothing after the bad message


def test_non_chunk_events_and_undecodable_chunks_are_skipped():
    junk = encode_event("chunk", b'{"bytes": "%%%not base64"}') + encode_event("other", b"{}")
    out = _feed(_anthropic_streaming(), [_chunk(EVENTS[0]) + junk + _chunk(EVENTS[-1])])
    assert [e.event for e in SSEParser().feed(out)] == ["message_start", "message_stop"]


# ---- errors -------------------------------------------------------------------------------------------

THROTTLING_HEADERS = {"x-amzn-errortype": "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"}


@pytest.mark.parametrize(
    ("status", "exception", "error_type"),
    [
        (429, "ThrottlingException", "rate_limit_error"),
        (400, "ValidationException", "invalid_request_error"),
        (403, "AccessDeniedException", "permission_error"),
        (404, "ResourceNotFoundException", "not_found_error"),
        (408, "ModelTimeoutException", "timeout_error"),
        (503, "ServiceUnavailableException", "overloaded_error"),
        (500, "InternalServerException", "api_error"),
    ],
)
def test_bedrock_errors_reach_both_clients_in_their_shape_with_the_status(status: int, exception: str, error_type: str):
    headers = {"x-amzn-errortype": f"{exception}:http://internal.amazon.com/coral/com.amazon.bedrock/"}
    body = b'{"message":"it went wrong"}'
    openai_translator = OpenAIToAWSAnthropic()
    openai_translator.translate_request(_openai({"messages": [USER], "stream": True}), BEDROCK, MODEL)
    assert orjson.loads(openai_translator.translate_error(status, headers, body)) == {
        "type": "error",
        "error": {"type": error_type, "code": str(status), "message": f"{exception}: it went wrong"},
    }
    anthropic_translator = AnthropicToAWSAnthropic()
    anthropic_translator.translate_request(
        _anthropic({"model": "c", "max_tokens": 5, "messages": [USER]}), BEDROCK, MODEL
    )
    assert orjson.loads(anthropic_translator.translate_error(status, headers, body)) == {
        "type": "error",
        "error": {"type": error_type, "message": f"{exception}: it went wrong"},
    }
    assert anthropic_translator.usage is None


def test_an_error_that_is_not_bedrocks_json_is_kept_as_the_message():
    translator = AnthropicToAWSAnthropic()
    translator.translate_request(_anthropic({"model": "c", "max_tokens": 5, "messages": [USER]}), BEDROCK, MODEL)
    out = orjson.loads(translator.translate_error(502, {"content-type": "text/html"}, b"<html>Bad Gateway</html>"))
    assert out == {"type": "error", "error": {"type": "api_error", "message": "<html>Bad Gateway</html>"}}


def test_the_fake_bedrocks_throttling_answer_reads_as_429_rate_limit():
    response = anthropic_clouds.bedrock_error(429, "Too many requests, please wait before trying again.")
    translator = OpenAIToAWSAnthropic()
    translator.translate_request(_openai({"messages": [USER]}), BEDROCK, MODEL)
    error = orjson.loads(translator.translate_error(429, dict(response.headers), response.body))["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "429")
    assert error["message"] == "ThrottlingException: Too many requests, please wait before trying again."
    assert THROTTLING_HEADERS["x-amzn-errortype"] == dict(response.headers)["x-amzn-errortype"]


def test_dropped_beta_flags_are_named_in_a_debug_log(caplog: pytest.LogCaptureFixture) -> None:
    request = _anthropic({"model": "c", "max_tokens": 5, "messages": [USER]}, {"anthropic-beta": CLAUDE_CODE_BETAS})
    with caplog.at_level("DEBUG", logger="tokenvoy.extproc.translate.anthropic_common"):
        AnthropicToAWSAnthropic().translate_request(request, BEDROCK, MODEL)
    (record,) = [r for r in caplog.records if "anthropic-beta" in r.getMessage()]
    assert record.levelname == "DEBUG"
    assert "claude-code-20250219, thinking-token-count-2026-05-13" in record.getMessage()
    assert "bedrock (AWSAnthropic)" in record.getMessage()
