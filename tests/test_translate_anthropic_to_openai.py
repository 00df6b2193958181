"""Anthropic Messages client → OpenAI-schema backend: requests rebuilt for /chat/completions, answers and
streams translated back into Anthropic's message and SSE events.

Request examples follow Anthropic's documented Messages API requests (system, images, tool use, tool
results); OpenAI-side answers follow OpenAI's documented chat completion and chunk shapes. Every
translated answer is checked against the official ``anthropic`` SDK's types and stream accumulator.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenvoy.config.model import Backend, Endpoint
from tokenvoy.extproc.errors import GatewayError, UpstreamShapeError
from tokenvoy.extproc.sse import SSEParser
from tokenvoy.extproc.translate import translator_for
from tokenvoy.extproc.translate.anthropic_to_openai import AnthropicToOpenAI, build_request
from tokenvoy.extproc.translate.base import ClientAPI, ClientRequest
from tokenvoy.testupstream import openai_chat

BACKEND = Backend(
    name="openai",
    schema="OpenAI",
    schema_version=None,
    path_prefix="/v1",
    endpoint=Endpoint("api.openai.com", 443, tls=True),
)
WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string", "description": "The city and state"}},
        "required": ["location"],
    },
}
USER = {"role": "user", "content": "Hello, Claude"}


def _request(body: dict[str, Any]) -> ClientRequest:
    body = {"model": "gpt-4o", "max_tokens": 1024, **body}
    return ClientRequest(
        api=ClientAPI.ANTHROPIC_MESSAGES,
        path="/anthropic/v1/messages",
        raw=orjson.dumps(body),
        body=body,
        model=body["model"],
        stream=body.get("stream") is True,
        needs_usage=True,
        headers={"anthropic-version": "2023-06-01"},
    )


def _translator(body: dict[str, Any], model: str = "gpt-4o") -> tuple[AnthropicToOpenAI, Any]:
    translator = AnthropicToOpenAI()
    upstream = translator.translate_request(_request(body), BACKEND, model)
    return translator, upstream


def _sent(body: dict[str, Any], model: str = "gpt-4o") -> dict[str, Any]:
    _, upstream = _translator(body, model)
    return orjson.loads(upstream.body)


def _rejected(body: dict[str, Any]) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        _translator(body)
    return caught.value


# ---- requests ----------------------------------------------------------------------------------------


def test_registered_for_the_openai_schema():
    factory = translator_for(ClientAPI.ANTHROPIC_MESSAGES, "OpenAI")
    assert factory is not None and isinstance(factory(), AnthropicToOpenAI)


def test_path_headers_model_system_and_limits():
    _, upstream = _translator(
        {
            "system": [{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Answer in French."}],
            "messages": [USER],
            "stop_sequences": ["\n\nHuman:"],
            "temperature": 0.5,
            "top_p": 0.9,
            "top_k": 40,
            "metadata": {"user_id": "user-42"},
            "service_tier": "auto",
        },
        model="gpt-4o-override",
    )
    assert upstream.path == "/v1/chat/completions"
    assert {"anthropic-version", "anthropic-beta"} <= set(upstream.remove_headers)
    assert orjson.loads(upstream.body) == {
        "model": "gpt-4o-override",
        "messages": [
            {"role": "system", "content": "You are terse.\n\nAnswer in French."},
            {"role": "user", "content": "Hello, Claude"},
        ],
        "max_completion_tokens": 1024,
        "stop": ["\n\nHuman:"],
        "temperature": 0.5,
        "top_p": 0.9,
        "user": "user-42",
    }


def test_streaming_always_asks_for_the_usage():
    sent = _sent({"messages": [USER], "stream": True})
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}


def test_images_and_documents_become_content_parts():
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0"}},
        {"type": "text", "text": "Describe these.", "cache_control": {"type": "ephemeral"}},
    ]
    sent = _sent({"messages": [{"role": "user", "content": content}]})
    assert sent["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                {
                    "type": "file",
                    "file": {"file_data": "data:application/pdf;base64,JVBERi0", "filename": "document.pdf"},
                },
                {"type": "text", "text": "Describe these."},
            ],
        }
    ]


def test_tool_use_history_tools_and_results():
    messages = [
        {"role": "user", "content": "What's the weather like in San Francisco and Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Two calls.", "signature": "sig"},
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"location": "SF"}},
                {"type": "tool_use", "id": "toolu_02", "name": "get_weather", "input": {"location": "Paris"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "15 degrees"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_02",
                    "content": [{"type": "text", "text": "22 degrees"}],
                    "is_error": False,
                },
                {"type": "text", "text": "Which is warmer?"},
            ],
        },
    ]
    sent = _sent({"messages": messages, "tools": [WEATHER], "tool_choice": {"type": "auto"}})
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": WEATHER["description"],
                "parameters": WEATHER["input_schema"],
            },
        }
    ]
    assert sent["tool_choice"] == "auto"
    assert sent["messages"] == [
        {"role": "user", "content": "What's the weather like in San Francisco and Paris?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "toolu_01",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location":"SF"}'},
                },
                {
                    "id": "toolu_02",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_01", "content": "15 degrees"},
        {"role": "tool", "tool_call_id": "toolu_02", "content": "22 degrees"},
        {"role": "user", "content": "Which is warmer?"},
    ]


def test_images_in_a_tool_result_follow_the_tool_message():
    png = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}}
    messages = [
        USER,
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "screenshot", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [png]}]},
    ]
    sent = _sent({"messages": messages})
    assert sent["messages"][1]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert sent["messages"][2:] == [
        {"role": "tool", "tool_call_id": "t1", "content": ""},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}}]},
    ]


@pytest.mark.parametrize(
    ("choice", "expected", "parallel"),
    [
        ({"type": "auto"}, "auto", None),
        ({"type": "any"}, "required", None),
        ({"type": "none"}, "none", None),
        ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}, None),
        ({"type": "any", "disable_parallel_tool_use": True}, "required", False),
    ],
)
def test_tool_choice(choice, expected, parallel):
    sent = _sent({"messages": [USER], "tools": [WEATHER], "tool_choice": choice})
    assert sent["tool_choice"] == expected
    assert sent.get("parallel_tool_calls") == parallel


def test_a_mid_conversation_system_message_stays_in_place_as_a_system_message():
    """Claude Code puts a ``role: "system"`` message at ``messages[1]`` for a model name it does not know."""
    sent = _sent(
        {
            "system": "You are Claude Code.",
            "messages": [
                USER,
                {
                    "role": "system",
                    "content": [{"type": "text", "text": "Answer briefly."}, {"type": "text", "text": "Be kind."}],
                },
                {"role": "assistant", "content": "Hi"},
                {"role": "user", "content": "More"},
                {"role": "system", "content": "Now in French."},
            ],
        }
    )
    assert sent["messages"] == [
        {"role": "system", "content": "You are Claude Code."},
        {"role": "user", "content": "Hello, Claude"},
        {"role": "system", "content": "Answer briefly.\n\nBe kind."},
        {"role": "assistant", "content": "Hi"},
        {"role": "user", "content": "More"},
        {"role": "system", "content": "Now in French."},
    ]


@pytest.mark.parametrize(
    ("output_config", "effort"),
    [(None, "high"), ({"effort": "low"}, "low"), ({"effort": "medium"}, "medium"), ({"effort": "max"}, "xhigh")],
)
def test_adaptive_thinking_becomes_the_reasoning_effort_claude_code_asks_for(output_config, effort):
    body: dict[str, Any] = {"messages": [USER], "thinking": {"type": "adaptive"}}
    if output_config is not None:
        body["output_config"] = output_config
    assert _sent(body, "o4-mini")["reasoning_effort"] == effort


def test_an_unknown_effort_is_a_400_naming_it():
    error = _rejected({"messages": [USER], "thinking": {"type": "adaptive"}, "output_config": {"effort": "huge"}})
    assert error.status == 400 and "`output_config.effort`" in error.message


@pytest.mark.parametrize(
    ("budget", "effort"), [(1024, "low"), (4095, "low"), (4096, "medium"), (16383, "medium"), (16384, "high")]
)
def test_thinking_budget_becomes_reasoning_effort(budget, effort):
    sent = _sent({"messages": [USER], "thinking": {"type": "enabled", "budget_tokens": budget}}, "o4-mini")
    assert sent["reasoning_effort"] == effort
    assert "reasoning_effort" not in _sent({"messages": [USER], "thinking": {"type": "disabled"}}, "o4-mini")


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "GPT-3.5-turbo", "chatgpt-4o-latest"])
def test_no_reasoning_effort_for_a_model_openai_documents_without_reasoning(model):
    # Claude Code sends adaptive thinking on every turn; gpt-4o-mini answers 400 to a reasoning_effort.
    sent = _sent({"messages": [USER], "thinking": {"type": "adaptive"}, "output_config": {"effort": "low"}}, model)
    assert "reasoning_effort" not in sent
    assert sent["messages"][-1]["role"] == "user"


@pytest.mark.parametrize("model", ["o4-mini", "o3", "gpt-5", "gpt-5-mini", "deepseek-reasoner"])
def test_reasoning_effort_kept_for_reasoning_and_unknown_models(model):
    sent = _sent({"messages": [USER], "thinking": {"type": "enabled", "budget_tokens": 2048}}, model)
    assert sent["reasoning_effort"] == "low"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"messages": []}, 400, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, 400, "messages[0].role"),
        ({"messages": [USER, {"role": "system", "content": [{"type": "image"}]}]}, 400, "messages[1].content[0]"),
        ({"messages": [USER], "max_tokens": 0}, 400, "max_tokens"),
        ({"messages": [USER], "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, 422, "tools[0]"),
        ({"messages": [USER], "tools": [WEATHER], "tool_choice": {"type": "maybe"}}, 400, "tool_choice.type"),
        (
            {"messages": [{"role": "user", "content": [{"type": "search_result", "source": "x"}]}]},
            422,
            "messages[0].content[0]",
        ),
    ],
)
def test_bad_or_inexpressible_requests(body, status, field):
    error = _rejected(body)
    assert error.status == status
    assert f"`{field}`" in error.message


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [USER]},
        {"messages": [USER], "stream": True, "system": "be brief", "stop_sequences": ["x"]},
        {"messages": [USER], "tools": [WEATHER], "tool_choice": {"type": "tool", "name": "get_weather"}},
    ],
)
def test_translated_requests_pass_the_fake_openai_validation(body):
    sent = build_request(_request(body).body, "gpt-4o")
    reply = openai_chat.chat_completion(sent, completion_id="chatcmpl-1", created=1)
    assert reply.status == 200, reply.body


# ---- answers -----------------------------------------------------------------------------------------


COMPLETION = {
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi! How can I help?", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 1117,
        "completion_tokens": 46,
        "total_tokens": 1163,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
}


def _answer(translator: AnthropicToOpenAI, completion: dict[str, Any]) -> bytes:
    changes = translator.translate_response_headers({})
    assert changes is not None and "content-length" in changes.remove_headers
    out = translator.translate_response_body(orjson.dumps(completion), True)
    assert out is not None
    return out


def test_text_answer_usage_and_model():
    translator, _ = _translator({"messages": [USER]})
    message = orjson.loads(_answer(translator, COMPLETION))
    Message.model_validate(message)
    assert message == {
        "id": "msg_chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "type": "message",
        "role": "assistant",
        "model": "gpt-4o-2024-08-06",
        "content": [{"type": "text", "text": "Hi! How can I help?"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 93,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 1024,
            "output_tokens": 46,
        },
    }
    assert translator.response_model == "gpt-4o-2024-08-06"
    usage = translator.usage
    assert usage is not None
    assert (usage.input, usage.cached_input, usage.output, usage.total) == (1117, 1024, 46, 1163)


def test_tool_call_answer():
    translator, _ = _translator({"messages": [USER], "tools": [WEATHER]})
    completion = {
        **COMPLETION,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": "They want weather.",
                    "tool_calls": [
                        {
                            "id": "call_abc",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"location": "Boston, MA"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
    }
    message = orjson.loads(_answer(translator, completion))
    Message.model_validate(message)
    assert message["content"] == [
        {"type": "thinking", "thinking": "They want weather.", "signature": ""},
        {"type": "tool_use", "id": "call_abc", "name": "get_weather", "input": {"location": "Boston, MA"}},
    ]
    assert message["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("finish", "stop"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"), ("content_filter", "refusal")],
)
def test_stop_reasons(finish, stop):
    translator, _ = _translator({"messages": [USER]})
    completion = {**COMPLETION, "choices": [{**COMPLETION["choices"][0], "finish_reason": finish}]}
    assert orjson.loads(_answer(translator, completion))["stop_reason"] == stop


@pytest.mark.parametrize("stream", [False, True])
def test_openai_error_becomes_anthropics_shape_with_the_status_kept(stream):
    translator, _ = _translator({"messages": [USER], "stream": stream})
    error = openai_chat.error_body("Rate limit reached for gpt-4o", "rate_limit_exceeded", None, "rate_limit_exceeded")
    out = translator.translate_error(429, {}, orjson.dumps(error))
    assert out is not None
    assert orjson.loads(out) == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Rate limit reached for gpt-4o"},
    }
    assert translator.usage is None


def test_non_json_error_is_wrapped():
    translator, _ = _translator({"messages": [USER]})
    out = translator.translate_error(502, {}, b"<html>bad gateway</html>")
    assert orjson.loads(out) == {"type": "error", "error": {"type": "api_error", "message": "<html>bad gateway</html>"}}


# ---- streams -----------------------------------------------------------------------------------------


def _chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}],
        "usage": None,
    }
    chunk.update(extra)
    return chunk


USAGE_CHUNK = {
    **_chunk(),
    "choices": [],
    "usage": {
        "prompt_tokens": 20,
        "completion_tokens": 9,
        "total_tokens": 29,
        "prompt_tokens_details": {"cached_tokens": 4},
    },
}
TEXT_STREAM = (
    b"".join(
        openai_chat.sse_frame(c)
        for c in (
            _chunk({"role": "assistant", "content": ""}),
            _chunk({"content": "Hello"}),
            _chunk({"content": " wörld"}),
            _chunk({}, "stop"),
            USAGE_CHUNK,
        )
    )
    + openai_chat.SSE_DONE
)
TOOL_STREAM = (
    b"".join(
        openai_chat.sse_frame(c)
        for c in (
            _chunk({"role": "assistant", "content": None}),
            _chunk({"content": "Checking."}),
            _chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": ""},
                        }
                    ]
                }
            ),
            _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"location"'}}]}),
            _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ': "Paris"}'}}]}),
            _chunk(
                {
                    "tool_calls": [
                        {
                            "index": 1,
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "get_time", "arguments": "{}"},
                        }
                    ]
                }
            ),
            _chunk({}, "tool_calls"),
            USAGE_CHUNK,
        )
    )
    + openai_chat.SSE_DONE
)


def _events(out: bytes) -> list[dict[str, Any]]:
    parser = SSEParser()
    events = parser.feed(out) + parser.flush()
    decoded = []
    for event in events:
        if not event.data:
            continue  # the blank lines the router's error event starts with
        payload = orjson.loads(event.data)
        assert event.event == payload["type"]  # Anthropic names every event
        decoded.append(payload)
    return decoded


def _stream(raw: bytes, pieces: list[bytes] | None = None) -> bytes:
    translator, _ = _translator({"messages": [USER], "stream": True})
    assert translator.translate_response_headers({"content-type": "text/event-stream"}) is None
    pieces = pieces if pieces is not None else [raw]
    out = []
    for index, piece in enumerate(pieces):
        chunk = translator.translate_response_body(piece, index == len(pieces) - 1)
        assert chunk is not None
        out.append(chunk)
    assert translator.usage is not None and translator.usage.total == 29
    assert translator.response_model == "gpt-4o-mini"
    return b"".join(out)


def test_text_stream_event_by_event():
    events = _events(_stream(TEXT_STREAM))
    assert [e["type"] for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0]["message"]["id"] == "msg_chatcmpl-123"
    assert events[0]["message"]["model"] == "gpt-4o-mini"
    assert events[1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert events[3]["delta"] == {"type": "text_delta", "text": " wörld"}
    assert events[5] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {
            "input_tokens": 16,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 4,
            "output_tokens": 9,
        },
    }


def test_message_start_carries_an_estimate_of_the_input_tokens():
    """OpenAI reports usage only at the end; Claude Code reads message_start's input_tokens meanwhile."""
    events = _events(_stream(TEXT_STREAM))
    assert events[0]["message"]["usage"] == {"input_tokens": 4 + 4, "output_tokens": 0}  # 13 bytes / 4 + 4
    assert events[-2]["usage"]["input_tokens"] == 16  # the provider's real count, at the end


def test_a_keep_alive_comment_becomes_anthropics_ping_after_message_start():
    """Long reasoning on an OpenAI-compatible server: its ``: keep-alive`` comments keep the client alive."""
    out = _stream(b": keep-alive\n\n" + TEXT_STREAM.replace(b"\n\ndata: ", b"\n\n: keep-alive\n\ndata: ", 1))
    events = _events(out)
    assert [e["type"] for e in events[:3]] == ["message_start", "ping", "ping"]
    assert events[0]["message"]["usage"]["input_tokens"] == 8
    assert _accumulate(out).content[0].text == "Hello wörld"  # the SDK reads the stream as before


def _accumulate(out: bytes) -> Any:
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for event in _events(out):
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_bufs)
    return snapshot


def test_tool_stream_accumulates_with_the_anthropic_sdk():
    message = _accumulate(_stream(TOOL_STREAM))
    assert [block.type for block in message.content] == ["text", "tool_use", "tool_use"]
    assert message.content[0].text == "Checking."
    assert (message.content[1].id, message.content[1].name, message.content[1].input) == (
        "call_1",
        "get_weather",
        {"location": "Paris"},
    )
    assert (message.content[2].name, message.content[2].input) == ("get_time", {})
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens, message.usage.output_tokens) == (
        16,
        4,
        9,
    )


def test_reasoning_content_streams_as_a_thinking_block():
    raw = (
        b"".join(
            openai_chat.sse_frame(c)
            for c in (_chunk({"reasoning_content": "Hmm"}), _chunk({"content": "Yes"}), _chunk({}, "stop"), USAGE_CHUNK)
        )
        + openai_chat.SSE_DONE
    )
    message = _accumulate(_stream(raw))
    assert [(b.type, getattr(b, "thinking", None) or getattr(b, "text", None)) for b in message.content] == [
        ("thinking", "Hmm"),
        ("text", "Yes"),
    ]


def test_stream_is_translated_as_it_comes():
    translator, _ = _translator({"messages": [USER], "stream": True})
    first = TEXT_STREAM.index(b"\n\n") + 2
    out = translator.translate_response_body(TEXT_STREAM[:first], False)
    assert [e["type"] for e in _events(out)] == ["message_start"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(TOOL_STREAM)), max_size=40), st.booleans())
def test_stream_translation_is_the_same_for_any_split(cuts, tools):
    raw = TOOL_STREAM if tools else TEXT_STREAM
    points = sorted({min(c, len(raw)) for c in cuts})
    pieces = [raw[a:b] for a, b in itertools.pairwise([0, *points, len(raw)])]
    assert _stream(raw, pieces) == _stream(raw)


def test_one_byte_at_a_time():
    assert _stream(TEXT_STREAM, [TEXT_STREAM[i : i + 1] for i in range(len(TEXT_STREAM))]) == _stream(TEXT_STREAM)


def test_stream_without_done_still_finishes():
    raw = TEXT_STREAM[: -len(openai_chat.SSE_DONE)]
    assert [e["type"] for e in _events(_stream(raw))][-2:] == ["message_delta", "message_stop"]


def test_truncated_stream_is_an_upstream_shape_error_after_the_events_so_far():
    translator, _ = _translator({"messages": [USER], "stream": True})
    raw = openai_chat.sse_frame(_chunk({"content": "Hel"}))
    with pytest.raises(UpstreamShapeError) as raised:
        translator.translate_response_body(raw, True)
    assert "ended before a finish reason or `[DONE]`" in raised.value.message
    events = _events(raised.value.emitted + ClientAPI.ANTHROPIC_MESSAGES.stream_error_event(raised.value))
    assert events[-2] == {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}}
    assert events[-1]["type"] == "error" and events[-1]["error"]["type"] == "api_error"


def test_error_chunk_mid_stream_is_an_error_event():
    translator, _ = _translator({"messages": [USER], "stream": True})
    raw = openai_chat.sse_frame(_chunk({"content": "Hel"})) + openai_chat.sse_frame(
        {"error": {"message": "server overloaded", "type": "server_error"}}
    )
    events = _events(translator.translate_response_body(raw, False))
    assert events[-1] == {"type": "error", "error": {"type": "api_error", "message": "server overloaded"}}
    assert translator.translate_response_body(openai_chat.SSE_DONE, True) == b""
