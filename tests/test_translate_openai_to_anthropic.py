"""OpenAI client → Anthropic backend: requests rebuilt for /v1/messages, answers and streams translated back.

Anthropic-side examples follow the shapes of Anthropic's documented Messages API requests, responses and
SSE streams; every translated answer is checked against the official ``openai`` SDK's types.
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
from tokenvoy.extproc.translate import translator_for
from tokenvoy.extproc.translate.anthropic_common import merge_usage, usage_from_anthropic
from tokenvoy.extproc.translate.base import ClientAPI, ClientRequest
from tokenvoy.extproc.translate.openai_to_anthropic import DEFAULT_MAX_TOKENS, OpenAIToAnthropic
from tokenvoy.extproc.usage import TokenUsage
from tokenvoy.testupstream import anthropic_messages

BACKEND = Backend(
    name="anthropic",
    schema="Anthropic",
    schema_version=None,
    path_prefix="/v1",
    endpoint=Endpoint("api.anthropic.com", 443, tls=True),
)
NOW = 1_700_000_000
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


def _request(body: dict[str, Any]) -> ClientRequest:
    body = {"model": "claude-sonnet-4-5", **body}
    return ClientRequest(
        api=ClientAPI.OPENAI_CHAT,
        path="/v1/chat/completions",
        raw=orjson.dumps(body),
        body=body,
        model=body["model"],
        stream=body.get("stream") is True,
        needs_usage=True,
    )


def _translator(body: dict[str, Any], model: str = "claude-sonnet-4-5", backend: Backend = BACKEND):
    translator = OpenAIToAnthropic(clock=lambda: NOW)
    upstream = translator.translate_request(_request(body), backend, model)
    return translator, upstream


def _sent(body: dict[str, Any], model: str = "claude-sonnet-4-5") -> dict[str, Any]:
    _, upstream = _translator(body, model)
    assert upstream.body is not None
    return orjson.loads(upstream.body)


def _rejected(body: dict[str, Any]) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        _translator(body)
    return caught.value


USER = {"role": "user", "content": "Hello, Claude"}


# ---- requests ----------------------------------------------------------------------------------------


def test_registered_for_the_anthropic_schema():
    factory = translator_for(ClientAPI.OPENAI_CHAT, "Anthropic")
    assert factory is not None
    assert isinstance(factory(), OpenAIToAnthropic)


def test_path_headers_model_and_default_max_tokens():
    _, upstream = _translator({"messages": [USER]}, model="claude-opus-override")
    assert upstream.path == "/v1/messages"
    assert upstream.set_headers["anthropic-version"] == "2023-06-01"
    # The client's OpenAI key must not reach Anthropic (the gateway adds x-api-key).
    assert "authorization" in upstream.remove_headers
    assert orjson.loads(upstream.body) == {
        "model": "claude-opus-override",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello, Claude"}]}],
        "max_tokens": DEFAULT_MAX_TOKENS,
    }
    assert DEFAULT_MAX_TOKENS == 4096


def test_backend_prefix_is_kept():
    backend = Backend("a", "Anthropic", None, "/proxy/anthropic/v1", Endpoint("proxy", 8080))
    _, upstream = _translator({"messages": [USER]}, backend=backend)
    assert upstream.path == "/proxy/anthropic/v1/messages"


def test_system_and_developer_messages_become_top_level_system_blocks_in_order():
    sent = _sent(
        {
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
                USER,
                {"role": "assistant", "content": "Bonjour !"},
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "How are you?"},
            ]
        }
    )
    assert sent["system"] == [
        {"type": "text", "text": "You are a helpful assistant."},
        {"type": "text", "text": "Answer in French."},
        {"type": "text", "text": "Be brief."},
    ]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][1]["content"] == [{"type": "text", "text": "Bonjour !"}]


def test_limits_sampling_stop_and_user():
    sent = _sent(
        {
            "messages": [USER],
            "max_tokens": 100,
            "max_completion_tokens": 50,
            "temperature": 0.5,
            "top_p": 0.9,
            "top_k": 40,
            "stop": "\n\nHuman:",
            "user": "alice",
            "seed": 7,
            "store": False,
            "stream": False,
        }
    )
    assert sent["max_tokens"] == 50  # max_completion_tokens wins, as in OpenAI
    assert sent["temperature"] == 0.5
    assert sent["top_p"] == 0.9
    assert sent["top_k"] == 40
    assert sent["stop_sequences"] == ["\n\nHuman:"]
    assert sent["metadata"] == {"user_id": "alice"}
    assert "seed" not in sent and "store" not in sent and "stream" not in sent
    assert _sent({"messages": [USER], "stop": ["a", "b"], "max_tokens": 9})["stop_sequences"] == ["a", "b"]
    assert _sent({"messages": [USER], "max_tokens": 9})["max_tokens"] == 9


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, None),
        ("auto", None),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        ({"type": "function", "function": {"name": "get_weather"}}, {"type": "tool", "name": "get_weather"}),
    ],
)
def test_tools_and_tool_choice(choice, expected):
    body: dict[str, Any] = {"messages": [USER], "tools": [WEATHER_TOOL]}
    if choice is not None:
        body["tool_choice"] = choice
    sent = _sent(body)
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "description": "Get the current weather in a given location",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }
    ]
    assert sent.get("tool_choice") == expected


def test_parallel_tool_calls_false_disables_parallel_tool_use():
    sent = _sent({"messages": [USER], "tools": [WEATHER_TOOL], "parallel_tool_calls": False})
    assert sent["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    sent = _sent({"messages": [USER], "tools": [WEATHER_TOOL], "parallel_tool_calls": False, "tool_choice": "required"})
    assert sent["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


def test_tool_without_parameters_gets_an_empty_object_schema():
    tool = {"type": "function", "function": {"name": "now"}}
    assert _sent({"messages": [USER], "tools": [tool]})["tools"] == [
        {"name": "now", "input_schema": {"type": "object", "properties": {}}}
    ]


CONVERSATION = [
    {"role": "system", "content": "You are a weather bot."},
    {"role": "user", "content": "What's the weather in SF and NYC?"},
    {
        "role": "assistant",
        "content": "Let me check both.",
        "tool_calls": [
            {
                "id": "toolu_01A",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"location": "San Francisco, CA"}'},
            },
            {
                "id": "toolu_01B",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"location": "New York, NY"}'},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "toolu_01A", "content": "15 degrees"},
    {"role": "tool", "tool_call_id": "toolu_01B", "content": [{"type": "text", "text": "22 degrees"}]},
    {"role": "user", "content": "Which is warmer?"},
]


def test_parallel_tool_calls_and_results_in_history():
    sent = _sent({"messages": CONVERSATION, "tools": [WEATHER_TOOL]})
    assert sent["system"] == [{"type": "text", "text": "You are a weather bot."}]
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "What's the weather in SF and NYC?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check both."},
                {
                    "type": "tool_use",
                    "id": "toolu_01A",
                    "name": "get_weather",
                    "input": {"location": "San Francisco, CA"},
                },
                {"type": "tool_use", "id": "toolu_01B", "name": "get_weather", "input": {"location": "New York, NY"}},
            ],
        },
        {
            # Consecutive tool messages and the user's next words are one user turn, tool results first.
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "15 degrees"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01B",
                    "content": [{"type": "text", "text": "22 degrees"}],
                },
                {"type": "text", "text": "Which is warmer?"},
            ],
        },
    ]


def test_assistant_tool_call_without_text_or_arguments():
    sent = _sent(
        {
            "messages": [
                USER,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "now", "arguments": ""}}],
                },
                {"role": "tool", "tool_call_id": "c1", "content": ""},
            ]
        }
    )
    assert sent["messages"][1:] == [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "now", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1"}]},
    ]


def test_images_data_uris_and_urls_and_cache_control():
    sent = _sent(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
                        },
                        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                        {"type": "text", "text": "Describe", "cache_control": {"type": "ephemeral"}},
                        {
                            "type": "file",
                            "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
                        },
                    ],
                }
            ]
        }
    )
    assert sent["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "Describe", "cache_control": {"type": "ephemeral"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
    ]


def test_empty_messages_are_dropped_and_same_roles_merged():
    sent = _sent({"messages": [USER, {"role": "user", "content": ""}, {"role": "user", "content": "again"}]})
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Hello, Claude"}, {"type": "text", "text": "again"}]}
    ]


@pytest.mark.parametrize(
    ("effort", "limit", "max_tokens", "budget"),
    [
        ("low", None, 2048 + DEFAULT_MAX_TOKENS, 2048),
        ("minimal", None, 1024 + DEFAULT_MAX_TOKENS, 1024),
        ("medium", 20_000, 20_000, 8192),
        ("high", 20_000, 20_000, 16_384),
        ("high", 5000, 5000, 4999),  # OpenAI's limit includes reasoning: the budget fits under it
    ],
)
def test_reasoning_effort_becomes_a_thinking_budget(effort, limit, max_tokens, budget):
    body: dict[str, Any] = {"messages": [USER], "reasoning_effort": effort}
    if limit is not None:
        body["max_completion_tokens"] = limit
    sent = _sent(body)
    assert sent["max_tokens"] == max_tokens
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": budget}


def test_reasoning_effort_none_and_native_thinking():
    assert "thinking" not in _sent({"messages": [USER], "reasoning_effort": "none"})
    native = {"type": "enabled", "budget_tokens": 3000}
    sent = _sent({"messages": [USER], "reasoning_effort": "high", "thinking": native, "max_tokens": 5000})
    assert sent["thinking"] == native
    assert sent["max_tokens"] == 5000


def test_reasoning_effort_that_cannot_fit_is_422():
    error = _rejected({"messages": [USER], "reasoning_effort": "low", "max_completion_tokens": 500})
    assert error.status == 422
    assert "reasoning_effort" in error.message


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"n": 2}, "`n`"),
        ({"logprobs": True}, "`logprobs`"),
        ({"top_logprobs": 3}, "`top_logprobs`"),
        ({"presence_penalty": 0.5}, "`presence_penalty`"),
        ({"frequency_penalty": 1}, "`frequency_penalty`"),
        ({"logit_bias": {"50256": -100}}, "`logit_bias`"),
        ({"response_format": {"type": "json_object"}}, "`response_format`"),
        ({"modalities": ["text", "audio"]}, "`modalities`"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "`tools[0]`"),
        ({"tools": [WEATHER_TOOL], "tool_choice": {"type": "allowed_tools"}}, "`tool_choice`"),
        ({"messages": [{"role": "function", "name": "f", "content": "1"}]}, "`messages[0].role`"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
            "`messages[0].content[0]`",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]},
            "`messages[0].content[0].image_url.url`",
        ),
        (
            {
                "messages": [
                    USER,
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "[1]"}}],
                    },
                ]
            },
            "`messages[1].tool_calls[0].function.arguments`",
        ),
    ],
)
def test_what_anthropic_cannot_express_is_422_naming_the_field(extra, field):
    error = _rejected({"messages": [USER], **extra})
    assert error.status == 422
    assert field in error.message


def test_defaults_of_unsupported_fields_are_accepted():
    sent = _sent(
        {
            "messages": [USER],
            "n": 1,
            "logprobs": False,
            "presence_penalty": 0,
            "frequency_penalty": 0.0,
            "logit_bias": {},
            "response_format": {"type": "text"},
        }
    )
    assert set(sent) == {"model", "messages", "max_tokens"}


@pytest.mark.parametrize(
    "body",
    [{}, {"messages": "hi"}, {"messages": [USER], "max_tokens": 0}, {"messages": [{"role": "robot", "content": "x"}]}],
)
def test_malformed_openai_requests_are_400(body):
    assert _rejected(body).status == 400


@pytest.mark.parametrize(
    "body",
    [
        {"messages": CONVERSATION, "tools": [WEATHER_TOOL]},
        {"messages": CONVERSATION, "tools": [WEATHER_TOOL], "tool_choice": "required", "parallel_tool_calls": False},
        {"messages": [USER], "reasoning_effort": "medium", "stream": True, "stop": ["x"], "temperature": 1},
        {"messages": [{"role": "system", "content": "s"}, USER, {"role": "assistant", "content": "ok"}], "user": "u"},
    ],
)
def test_translated_requests_pass_the_fake_anthropic_validation(body):
    _, upstream = _translator(body)
    headers = {**upstream.set_headers, "x-api-key": "k"}
    reply = anthropic_messages.create_message(upstream.body, headers, message_id="msg_1")
    assert reply.status == 200, reply.body


# ---- non-streamed responses ------------------------------------------------------------------------------

MESSAGE = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "Hi! My name is Claude."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 10,
        "cache_creation_input_tokens": 200,
        "cache_read_input_tokens": 1000,
        "output_tokens": 12,
    },
}
NORMALISED = TokenUsage(input=1210, cached_input=1000, cache_creation_input=200, output=12, total=1222)


def _answer(translator: OpenAIToAnthropic, status: int, body: bytes) -> bytes:
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
    completion = orjson.loads(_answer(translator, 200, orjson.dumps(MESSAGE)))
    ChatCompletion.model_validate(completion)
    assert completion == {
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "object": "chat.completion",
        "created": NOW,
        "model": "claude-sonnet-4-5-20250929",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi! My name is Claude.", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 1210,
            "completion_tokens": 12,
            "total_tokens": 1222,
            "prompt_tokens_details": {"cached_tokens": 1000},
        },
    }
    assert translator.usage == NORMALISED
    assert translator.response_model == "claude-sonnet-4-5-20250929"


def test_tool_use_and_thinking_answer():
    message = {
        **MESSAGE,
        "content": [
            {"type": "thinking", "thinking": "The user wants weather.", "signature": "EqQBCgIYAh"},
            {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
            {"type": "text", "text": "I'll check both cities."},
            {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"location": "San Francisco, CA"}},
            {"type": "tool_use", "id": "toolu_01B", "name": "get_weather", "input": {"location": "New York, NY"}},
        ],
        "stop_reason": "tool_use",
    }
    translator, _ = _translator({"messages": [USER], "tools": [WEATHER_TOOL]})
    completion = ChatCompletion.model_validate_json(_answer(translator, 200, orjson.dumps(message)))
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "I'll check both cities."
    assert choice.message.model_extra == {
        "reasoning_content": "The user wants weather.",
        "reasoning_details": [  # OpenRouter's shape: what a replay needs, signature included
            {
                "type": "reasoning.text",
                "text": "The user wants weather.",
                "signature": "EqQBCgIYAh",
                "format": "anthropic-claude-v1",
                "index": 0,
            },
            {"type": "reasoning.encrypted", "data": "EmwKAhgBEgy3va3pzix", "format": "anthropic-claude-v1", "index": 1},
        ],
    }
    assert [(c.id, c.function.name, orjson.loads(c.function.arguments)) for c in choice.message.tool_calls] == [
        ("toolu_01A", "get_weather", {"location": "San Francisco, CA"}),
        ("toolu_01B", "get_weather", {"location": "New York, NY"}),
    ]

    # The client sends the turn back with its reasoning_details: Anthropic gets the signed blocks first.
    history = [
        USER,
        {**choice.message.model_dump(exclude_none=True), "content": choice.message.content},
        *({"role": "tool", "tool_call_id": c.id, "content": "sunny"} for c in choice.message.tool_calls),
    ]
    sent = _sent({"messages": history, "tools": [WEATHER_TOOL], "reasoning_effort": "low", "max_tokens": 4096})
    assert sent["messages"][1]["content"][:3] == [
        {"type": "thinking", "thinking": "The user wants weather.", "signature": "EqQBCgIYAh"},
        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
        {"type": "text", "text": "I'll check both cities."},
    ]
    reply = anthropic_messages.create_message(
        orjson.dumps(sent), {"x-api-key": "k", "anthropic-version": "2023-06-01"}, message_id="msg_1"
    )
    assert reply.status == 200, reply.body  # the fake (Anthropic's validation) takes the replayed thinking


def test_reasoning_details_without_a_signature_are_not_replayed():
    message = {
        "role": "assistant",
        "content": "Hi",
        "reasoning_content": "thought",
        "reasoning_details": [{"type": "reasoning.text", "text": "thought", "index": 0}],
    }
    sent = _sent({"messages": [USER, message, {"role": "user", "content": "again"}]})
    assert sent["messages"][1]["content"] == [{"type": "text", "text": "Hi"}]
    assert _rejected({"messages": [USER, {**message, "reasoning_details": "x"}]}).status == 400


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
    ],
)
def test_finish_reasons(stop_reason, finish_reason):
    translator, _ = _translator({"messages": [USER]})
    completion = orjson.loads(_answer(translator, 200, orjson.dumps({**MESSAGE, "stop_reason": stop_reason})))
    assert completion["choices"][0]["finish_reason"] == finish_reason


@pytest.mark.parametrize("body", [b"<html></html>", b"null", b"[]", b"", b"\x89PNG", b'{"type": "message"}'])
def test_a_success_body_that_is_no_anthropic_message_is_a_502(body):
    translator, _ = _translator({"messages": [USER]})
    assert translator.translate_response_body(body[:2], False) == b""
    with pytest.raises(UpstreamShapeError) as raised:
        translator.translate_response_body(body[2:], True)
    assert raised.value.status == 502
    assert translator.usage is None


# ---- errors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_provider_error_becomes_the_openai_error_shape_with_the_status_kept(stream):
    translator, _ = _translator({"messages": [USER], "stream": stream})
    body = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    assert orjson.loads(_answer(translator, 529, body)) == {
        "type": "error",
        "error": {"type": "overloaded_error", "code": "529", "message": "Overloaded"},
    }
    assert translator.usage is None


def test_non_json_error_body_is_wrapped_not_lost():
    translator, _ = _translator({"messages": [USER]})
    out = orjson.loads(_answer(translator, 502, b"upstream connect error or disconnect/reset before headers"))
    assert out == {
        "type": "error",
        "error": {
            "type": "api_error",
            "code": "502",
            "message": "upstream connect error or disconnect/reset before headers",
        },
    }


def test_non_json_overloaded_error_gets_anthropics_type_for_529():
    translator, _ = _translator({"messages": [USER]})
    out = orjson.loads(_answer(translator, 529, b"Overloaded"))
    assert out["error"] == {"type": "overloaded_error", "code": "529", "message": "Overloaded"}


def test_json_error_of_another_shape_is_kept_as_the_message():
    translator, _ = _translator({"messages": [USER]})
    out = orjson.loads(_answer(translator, 429, b'{"message":"slow down"}'))
    assert out["error"] == {"type": "rate_limit_error", "code": "429", "message": '{"message":"slow down"}'}


# ---- streams --------------------------------------------------------------------------------------------


def _event(payload: dict[str, Any]) -> bytes:
    return b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _delta(index: int, delta: dict[str, Any]) -> bytes:
    return _event({"type": "content_block_delta", "index": index, "delta": delta})


# A recorded-style stream: thinking, text with multi-byte characters, two parallel tool calls (one with no
# arguments), pings, a keep-alive comment, CRLF line endings in one event, cumulative usage in message_delta.
STREAM = b"".join(
    [
        _event(
            {
                "type": "message_start",
                "message": {
                    "id": "msg_014p7gG3wDgGV9EUtLvnow3U",
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
            }
        ),
        _event({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        _delta(0, {"type": "thinking_delta", "thinking": "Two cities, "}),
        _delta(0, {"type": "thinking_delta", "thinking": "two calls."}),
        _delta(0, {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"}),
        _event({"type": "content_block_stop", "index": 0}),
        _event({"type": "ping"}),
        _event({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
        _delta(1, {"type": "text_delta", "text": "Voilà, je vérifie "}),
        b": keep-alive\n\n",
        _delta(1, {"type": "text_delta", "text": "la météo 🌤️ 東京"}).replace(b"\n", b"\r\n"),
        _event({"type": "content_block_stop", "index": 1}),
        _event(
            {
                "type": "content_block_start",
                "index": 2,
                "content_block": {"type": "tool_use", "id": "toolu_01T1x", "name": "get_weather", "input": {}},
            }
        ),
        _delta(2, {"type": "input_json_delta", "partial_json": ""}),
        _delta(2, {"type": "input_json_delta", "partial_json": '{"location": "San Fra'}),
        _delta(2, {"type": "input_json_delta", "partial_json": 'ncisco, CA"}'}),
        _event({"type": "content_block_stop", "index": 2}),
        _event(
            {
                "type": "content_block_start",
                "index": 3,
                "content_block": {"type": "tool_use", "id": "toolu_01T2y", "name": "now", "input": {}},
            }
        ),
        _event({"type": "content_block_stop", "index": 3}),
        _event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 89},
            }
        ),
        _event({"type": "message_stop"}),
    ]
)
STREAM_USAGE = TokenUsage(input=2520, cached_input=2048, cache_creation_input=0, output=89, total=2609)
CHUNK_BASE = {
    "id": "msg_014p7gG3wDgGV9EUtLvnow3U",
    "object": "chat.completion.chunk",
    "created": NOW,
    "model": "claude-sonnet-4-5-20250929",
}


def _detail(**fields: str) -> dict[str, Any]:
    return {"type": "reasoning.text", **fields, "format": "anthropic-claude-v1", "index": 0}


def _expected_chunks(include_usage: bool) -> list[Any]:
    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        out = {
            **CHUNK_BASE,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if include_usage:
            out["usage"] = None
        return out

    def call(index: int, **fields: Any) -> dict[str, Any]:
        return {"tool_calls": [{"index": index, **fields}]}

    chunks: list[Any] = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "Two cities, ", "reasoning_details": [_detail(text="Two cities, ")]}),
        chunk({"reasoning_content": "two calls.", "reasoning_details": [_detail(text="two calls.")]}),
        chunk({"reasoning_details": [_detail(text="", signature="EqQBCgIYAhIM1gbcDa9GJwZA2b3h")]}),
        chunk({"content": "Voilà, je vérifie "}),
        chunk({"content": "la météo 🌤️ 東京"}),
        chunk(call(0, id="toolu_01T1x", type="function", function={"name": "get_weather", "arguments": ""})),
        chunk(call(0, function={"arguments": '{"location": "San Fra'})),
        chunk(call(0, function={"arguments": 'ncisco, CA"}'})),
        chunk(call(1, id="toolu_01T2y", type="function", function={"name": "now", "arguments": ""})),
        chunk(call(1, function={"arguments": "{}"})),  # no parameters: clients still get JSON to parse
        chunk({}, "tool_calls"),
    ]
    if include_usage:
        usage = {
            "prompt_tokens": 2520,
            "completion_tokens": 89,
            "total_tokens": 2609,
            "prompt_tokens_details": {"cached_tokens": 2048},
        }
        chunks.append({**CHUNK_BASE, "choices": [], "usage": usage})
    chunks.append("[DONE]")
    return chunks


def _streaming(include_usage: bool = False) -> OpenAIToAnthropic:
    body: dict[str, Any] = {"messages": [USER], "tools": [WEATHER_TOOL], "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    translator, upstream = _translator(body)
    assert orjson.loads(upstream.body)["stream"] is True
    assert "stream_options" not in orjson.loads(upstream.body)
    assert translator.translate_response_headers({"content-type": "text/event-stream"}) is None
    return translator


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def _client_bytes(translator: OpenAIToAnthropic, chunks: list[bytes]) -> bytes:
    out = []
    for index, chunk in enumerate(chunks):
        try:
            replaced = translator.translate_response_body(chunk, index == len(chunks) - 1)
        except UpstreamShapeError as error:  # as the router answers it: the events so far, then an error event
            return b"".join(out) + error.emitted + ClientAPI.OPENAI_CHAT.stream_error_event(error)
        assert replaced is not None  # the Anthropic stream must never reach an OpenAI client
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
    assert data.endswith(b"\n\n")
    return events


@pytest.mark.parametrize("include_usage", [False, True])
def test_stream_translated_event_by_event(include_usage):
    translator = _streaming(include_usage)
    chunks = _parse_client_stream(_client_bytes(translator, [STREAM]))
    assert chunks == _expected_chunks(include_usage)
    for chunk in chunks[:-1]:
        ChatCompletionChunk.model_validate(chunk)
    assert translator.usage == STREAM_USAGE  # read for metadata whether or not the client asked
    assert translator.response_model == "claude-sonnet-4-5-20250929"


def test_streamed_thinking_keeps_its_signature_in_reasoning_details_merged_by_index():
    chunks = _parse_client_stream(_client_bytes(_streaming(), [STREAM]))[:-1]
    details = [d for c in chunks if c["choices"] for d in c["choices"][0]["delta"].get("reasoning_details", [])]
    assert {d["index"] for d in details} == {0}
    assert "".join(d["text"] for d in details) == "Two cities, two calls."
    assert [d["signature"] for d in details if "signature" in d] == ["EqQBCgIYAhIM1gbcDa9GJwZA2b3h"]
    # Merged as a client accumulates it and sent back, it is Anthropic's signed thinking block again.
    replayed = {"role": "assistant", "content": None, "reasoning_details": details}
    sent = _sent({"messages": [USER, replayed, {"role": "user", "content": "go on"}]})
    assert sent["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "Two cities, two calls.", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h"}
    ]


def test_stream_accumulates_into_a_valid_completion_with_the_openai_sdk():
    translator = _streaming(True)
    state = ChatCompletionStreamState(input_tools=[WEATHER_TOOL])
    for chunk in _parse_client_stream(_client_bytes(translator, [STREAM]))[:-1]:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    completion = state.get_final_completion()
    message = completion.choices[0].message
    assert message.content == "Voilà, je vérifie la météo 🌤️ 東京"
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("toolu_01T1x", "get_weather", '{"location": "San Francisco, CA"}'),
        ("toolu_01T2y", "now", "{}"),
    ]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.usage is not None and completion.usage.prompt_tokens == 2520


def test_anthropic_pings_and_keepalive_comments_reach_the_client_as_sse_comments():
    """Long thinking sends only pings; an OpenAI client hears each one (a comment its SDK skips) and stays alive."""
    out = _client_bytes(_streaming(), [STREAM])
    blocks = [block for block in out.split(b"\n\n") if block]
    keepalives = [position for position, block in enumerate(blocks) if block == b": ping"]
    assert len(keepalives) == 2  # the `ping` event and the `: keep-alive` comment
    # each in its place in the stream: the ping after the signed thinking, the comment inside the text
    assert b"signature" in blocks[keepalives[0] - 1]
    assert "Voilà" in orjson.loads(blocks[keepalives[1] - 1][len(b"data: ") :])["choices"][0]["delta"]["content"]
    only_pings = _streaming()
    assert only_pings.translate_response_body(STREAM[: STREAM.index(b"\n\n") + 2], False)
    assert only_pings.translate_response_body(_event({"type": "ping"}) * 3, False) == b": ping\n\n" * 3


def test_stream_is_translated_as_it_comes_not_at_the_end():
    translator = _streaming()
    first_event_end = STREAM.index(b"\n\n") + 2
    out = translator.translate_response_body(STREAM[:first_event_end], False)
    assert _parse_client_stream(out) == _expected_chunks(False)[:1]
    assert translator.usage == TokenUsage(input=2520, cached_input=2048, output=2, total=2522)
    assert translator.translate_response_body(b"event: ping\ndata: {", False) == b""


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
    assert _client_bytes(translator, [STREAM[i : i + 1] for i in range(len(STREAM))]) == reference


def test_stream_without_a_final_blank_line_and_with_cumulative_input_usage():
    translator = _streaming(True)
    stream = (
        _event({"type": "message_start", "message": {"id": "msg_1", "model": "m", "usage": {"input_tokens": 5}}})
        + _event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "max_tokens"},
                # Newer API versions repeat the input side here, with cache counts: they win.
                "usage": {"input_tokens": 5, "cache_creation_input_tokens": 7, "output_tokens": 3},
            }
        )
        + b'event: message_stop\ndata: {"type":"message_stop"}'
    )
    chunks = _parse_client_stream(_client_bytes(translator, _split(stream, [30, 200])) + b"\n\n")
    assert chunks[1]["choices"][0]["finish_reason"] == "length"
    assert chunks[2]["usage"]["prompt_tokens"] == 12
    assert chunks[-1] == "[DONE]"
    assert translator.usage == TokenUsage(input=12, cache_creation_input=7, output=3, total=15)


def test_error_event_mid_stream_is_an_openai_error_chunk_and_ends_the_stream():
    translator = _streaming()
    head = STREAM[: STREAM.index(b"event: content_block_stop")]
    error = _event({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    chunks = _parse_client_stream(_client_bytes(translator, [head, error + _event({"type": "ping"})]))
    assert chunks[-1] == {
        "type": "error",
        "error": {"type": "overloaded_error", "code": "529", "message": "Overloaded"},
    }
    assert "[DONE]" not in chunks  # the answer is incomplete: no end marker
    assert translator.usage == TokenUsage(input=2520, cached_input=2048, output=2, total=2522)


def test_a_truncated_stream_ends_with_an_error_chunk_and_no_done_marker():
    translator = _streaming()
    cut = STREAM.index(b"event: message_delta")
    chunks = _parse_client_stream(_client_bytes(translator, [STREAM[:cut]]))
    assert chunks[:-1] == _expected_chunks(False)[:-2]
    assert chunks[-1]["error"]["code"] == "502" and "ended before `message_stop`" in chunks[-1]["error"]["message"]


def test_unknown_events_and_bad_json_are_skipped():
    translator = _streaming()
    stream = (
        STREAM[: STREAM.index(b"event: message_stop")]
        + b"event: some_future_event\ndata: {}\n\n"
        + b"data: not json\n\n"
        + _event({"type": "message_stop"})
    )
    assert _parse_client_stream(_client_bytes(translator, [stream])) == _expected_chunks(False)


# ---- usage helpers ---------------------------------------------------------------------------------------


def test_usage_normalisation_matches_design():
    usage = usage_from_anthropic(
        {"input_tokens": 3, "cache_read_input_tokens": 40, "cache_creation_input_tokens": 500, "output_tokens": 6}
    )
    assert usage == TokenUsage(input=543, cached_input=40, cache_creation_input=500, output=6, total=549)


def test_merge_usage_keeps_earlier_counts_and_ignores_junk():
    merged = merge_usage({"input_tokens": 5, "output_tokens": 1}, {"output_tokens": 9, "input_tokens": None})
    assert merged == {"input_tokens": 5, "output_tokens": 9}
    assert merge_usage(merged, None) == merged
    assert merge_usage({}, {"output_tokens": True}) == {}
