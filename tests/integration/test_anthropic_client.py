"""The official ``anthropic`` SDK (as Claude Code and Cline talk) → real Envoy + extproc → the fake provider.

``/anthropic/v1/messages`` is served against two gateways: one whose backend speaks Anthropic (the
request passes through, usage is read from the answer) and one whose backend speaks OpenAI (the request
and the answer are translated both ways, streams included).
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import jsonschema
import orjson
import pytest
from anthropic import Anthropic

from tests.integration.conftest import Gateway, free_port, gateway_config, start_gateway
from tests.integration.test_anthropic_backend import SECRET, anthropic_config
from tokenvoy.testupstream import openai_chat
from tokenvoy.testupstream.openai_chat import WORDS

SYSTEM = "be brief"
MESSAGES: list[Any] = [{"role": "user", "content": "hello there gateway"}]
PROMPT_WORDS = 5  # the fakes count system + message words
BUDGET = 60  # tokens per user and hour on the OpenAI-backend gateway
WEATHER = {
    "name": "get_weather",
    "description": "Get the weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
        "required": ["city", "days"],
    },
}


def _start(tmp_path_factory: pytest.TempPathFactory, name: str, config: Any) -> Iterator[Gateway]:
    directory: Path = tmp_path_factory.mktemp(name)
    listener_port, fake_port = free_port(), free_port()
    running = start_gateway(directory, config_text=config(listener_port, fake_port), fake_port=fake_port)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def anthropic_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    yield from _start(tmp_path_factory, "anthropic-client-anthropic", anthropic_config)


@pytest.fixture(scope="module")
def openai_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    yield from _start(
        tmp_path_factory, "anthropic-client-openai", lambda port, fake: gateway_config(port, fake, BUDGET)
    )


def client(gateway: Gateway, request_id: str | None = None, **headers: str) -> Anthropic:
    extra = {"x-user-id": f"user-{uuid.uuid4()}", **headers}  # a fresh token budget unless one is given
    if request_id:
        extra["x-request-id"] = request_id
    return Anthropic(base_url=f"{gateway.url}/anthropic", api_key="unused", default_headers=extra, max_retries=0)


def sent_to_provider(gateway: Gateway, request_id: str) -> dict[str, Any]:
    received = httpx.get(f"{gateway.fake_url}/__testupstream/requests").json()
    return next(r for r in received if r["headers"].get("x-request-id") == request_id)


def tokens(entry: dict[str, Any]) -> tuple[int, int, int, int]:
    return (
        entry["genai_tokens_input"],
        entry["genai_tokens_output"],
        entry["genai_tokens_total"],
        entry["genai_tokens_cached_input"],
    )


def _new_id(kind: str) -> str:
    return f"anthropic-client-{kind}-{uuid.uuid4()}"


# ---- Anthropic-schema backend: pass-through --------------------------------------------------------------


def test_messages_to_an_anthropic_backend(anthropic_gateway: Gateway) -> None:
    request_id = _new_id("a-messages")
    raw = client(anthropic_gateway, request_id).messages.with_raw_response.create(
        model="claude-sonnet-4-6", system=SYSTEM, messages=MESSAGES, max_tokens=5
    )
    message = raw.parse()
    assert message.content[0].type == "text"
    assert message.content[0].text == " ".join(WORDS[:5])
    assert message.stop_reason == "max_tokens"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (PROMPT_WORDS, 5)
    assert raw.headers.get("x-ratelimit-limit")  # the token budget still applies on this endpoint

    sent = sent_to_provider(anthropic_gateway, request_id)
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["x-api-key"] == SECRET  # the client's key stays at the gateway
    assert sent["headers"]["anthropic-version"] == raw.http_request.headers["anthropic-version"]  # the client's
    assert orjson.loads(sent["body"]) == {
        "model": "claude-sonnet-4-6",
        "system": SYSTEM,
        "messages": MESSAGES,
        "max_tokens": 5,
    }
    entry = anthropic_gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert entry["response_code"] == 200
    assert entry["genai_response_model"] == "claude-sonnet-4-6"
    assert tokens(entry) == (PROMPT_WORDS, 5, PROMPT_WORDS + 5, 0)


def test_streamed_messages_to_an_anthropic_backend(anthropic_gateway: Gateway) -> None:
    request_id = _new_id("a-stream")
    cached = {"type": "text", "text": "a long shared preamble", "cache_control": {"type": "ephemeral"}}
    with client(anthropic_gateway, request_id).messages.stream(
        model="claude-sonnet-4-6", system=[cached], messages=MESSAGES, max_tokens=7
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == " ".join(WORDS[:7])
    assert final.stop_reason == "max_tokens"
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens, final.usage.output_tokens) == (3, 4, 7)
    entry = anthropic_gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert tokens(entry) == (3 + 4, 7, 3 + 4 + 7, 4)  # input counts cache reads


def test_tool_use_round_trip_with_an_anthropic_backend(anthropic_gateway: Gateway) -> None:
    messages: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
    first = client(anthropic_gateway).messages.create(
        model="claude-sonnet-4-6", messages=messages, tools=[WEATHER], tool_choice={"type": "any"}, max_tokens=100
    )
    assert first.stop_reason == "tool_use"
    (call,) = [b for b in first.content if b.type == "tool_use"]
    jsonschema.validate(call.input, WEATHER["input_schema"])
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]},
    ]
    with client(anthropic_gateway).messages.stream(
        model="claude-sonnet-4-6", messages=messages, tools=[WEATHER], max_tokens=100
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "end_turn"
    assert final.content[0].text == " ".join(WORDS)


def test_provider_error_reaches_the_client_as_anthropic_sent_it(anthropic_gateway: Gateway) -> None:
    with pytest.raises(anthropic.InternalServerError) as caught:
        client(anthropic_gateway, **{"x-testupstream-status": "529"}).messages.create(
            model="claude-sonnet-4-6", messages=MESSAGES, max_tokens=5
        )
    assert caught.value.status_code == 529
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "testupstream: forced status 529"},
    }


# ---- OpenAI-schema backend: translated both ways -----------------------------------------------------------


def test_messages_to_an_openai_backend(openai_gateway: Gateway) -> None:
    request_id = _new_id("o-messages")
    raw = client(openai_gateway, request_id).messages.with_raw_response.create(
        model="gpt-4o-mini", system=SYSTEM, messages=MESSAGES, max_tokens=5, stop_sequences=["zzz"]
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.content[0].text == " ".join(WORDS[:5])
    assert message.stop_reason == "max_tokens"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (PROMPT_WORDS, 5)
    assert raw.headers.get("x-ratelimit-limit")

    sent = sent_to_provider(openai_gateway, request_id)
    assert sent["path"] == "/v1/chat/completions"
    assert "anthropic-version" not in sent["headers"]
    assert orjson.loads(sent["body"]) == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hello there gateway"}],
        "max_completion_tokens": 5,
        "stop": ["zzz"],
    }
    entry = openai_gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert entry["response_code"] == 200
    assert entry["genai_response_model"] == "gpt-4o-mini"
    assert tokens(entry) == (PROMPT_WORDS, 5, PROMPT_WORDS + 5, 0)
    # the access log names the path the client called, and separately the one the provider got
    assert entry["x-envoy-origin-path"] == "/anthropic/v1/messages"
    assert entry["upstream_path"] == "/v1/chat/completions"


def test_streamed_messages_to_an_openai_backend(openai_gateway: Gateway) -> None:
    request_id = _new_id("o-stream")
    with client(openai_gateway, request_id).messages.stream(
        model="gpt-4o-mini", system=SYSTEM, messages=MESSAGES, max_tokens=7
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == " ".join(WORDS[:7])
    assert final.stop_reason == "max_tokens"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (PROMPT_WORDS, 7)
    sent = orjson.loads(sent_to_provider(openai_gateway, request_id)["body"])
    assert sent["stream_options"] == {"include_usage": True}
    entry = openai_gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert tokens(entry) == (PROMPT_WORDS, 7, PROMPT_WORDS + 7, 0)


def _canned(body: bytes, content_type: str = "application/json") -> dict[str, str]:
    return {"x-testupstream-body": base64.b64encode(body).decode(), "x-testupstream-content-type": content_type}


TOOL_COMPLETION = {
    "id": "chatcmpl-tool",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris", "days": 2}'},
                    }
                ],
            },
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52},
}


def _tool_stream() -> bytes:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return {
            "id": "chatcmpl-s",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [choice],
        }

    call = {"index": 0, "id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    chunks = [
        chunk({"role": "assistant", "content": None, "tool_calls": [call]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Pa'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ris", "days": 3}'}}]}),
        chunk({}, "tool_calls"),
        {**chunk({}), "choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39}},
    ]
    return b"".join(openai_chat.sse_frame(c) for c in chunks) + openai_chat.SSE_DONE


def test_tool_use_with_an_openai_backend(openai_gateway: Gateway) -> None:
    request_id = _new_id("o-tools")
    history = [
        {"role": "user", "content": "weather in Rome?"},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "call_0", "name": "get_weather", "input": {"city": "Rome", "days": 1}}
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_0", "content": "hot"},
                {"type": "text", "text": "and Paris?"},
            ],
        },
    ]
    message = client(openai_gateway, request_id, **_canned(orjson.dumps(TOOL_COMPLETION))).messages.create(
        model="gpt-4o-mini", messages=history, tools=[WEATHER], tool_choice={"type": "any"}, max_tokens=100
    )
    assert message.stop_reason == "tool_use"
    (call,) = message.content
    assert (call.type, call.id, call.name, call.input) == (
        "tool_use",
        "call_1",
        "get_weather",
        {"city": "Paris", "days": 2},
    )
    sent = orjson.loads(sent_to_provider(openai_gateway, request_id)["body"])
    assert sent["tool_choice"] == "required"
    assert sent["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool", "user"]
    entry = openai_gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert tokens(entry) == (40, 12, 52, 0)

    stream_id = _new_id("o-tools-stream")
    with client(openai_gateway, stream_id, **_canned(_tool_stream(), "text/event-stream")).messages.stream(
        model="gpt-4o-mini", messages=MESSAGES, tools=[WEATHER], max_tokens=100
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    (call,) = final.content
    assert (call.id, call.name, call.input) == ("call_9", "get_weather", {"city": "Paris", "days": 3})
    assert (final.usage.input_tokens, final.usage.output_tokens) == (30, 9)
    entry = openai_gateway.wait_for_log(lambda e: e.get("x-request-id") == stream_id)
    assert tokens(entry) == (30, 9, 39, 0)


def test_openai_provider_error_in_anthropics_shape(openai_gateway: Gateway) -> None:
    with pytest.raises(anthropic.RateLimitError) as caught:
        client(openai_gateway, **{"x-testupstream-status": "429"}).messages.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=5
        )
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "testupstream: forced status 429"},
    }


def test_gateway_errors_on_this_endpoint_are_in_anthropics_shape(openai_gateway: Gateway) -> None:
    url = f"{openai_gateway.url}/anthropic/v1/messages"
    bad_json = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert bad_json.status_code == 400
    body = bad_json.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert set(body["error"]) == {"type", "message"}
    with pytest.raises(anthropic.UnprocessableEntityError) as caught:
        client(openai_gateway).messages.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            max_tokens=5,
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
        )
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert "`tools[0]`" in caught.value.body["error"]["message"]


def test_budget_exceeded_is_a_429_in_anthropics_shape(openai_gateway: Gateway) -> None:
    user = {"x-user-id": f"budget-{uuid.uuid4()}"}
    first = client(openai_gateway, **user).messages.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=BUDGET
    )
    assert first.headers["x-ratelimit-limit"].startswith(str(BUDGET))
    deadline = time.monotonic() + 10  # the charge is made when the answer has finished
    while True:
        try:
            client(openai_gateway, **user).messages.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=1)
        except anthropic.RateLimitError as error:
            assert error.body == {
                "type": "error",
                "error": {
                    "type": "rate_limit_error",
                    "message": (
                        "budget exceeded for this client (tokens, USD or requests in flight); retry after the reset"
                    ),
                },
            }
            assert error.response.headers["x-ratelimit-remaining"] == "0"
            break
        assert time.monotonic() < deadline, "the budget was never exceeded"
        time.sleep(0.1)
