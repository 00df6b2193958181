"""OpenAI SDK → real Envoy + extproc → an Anthropic-schema backend (the fake Anthropic Messages API).

The gateway is the default config with the backend's schema switched to ``Anthropic`` (prefix left to the
``/v1`` default, so requests go to ``/v1/messages``) and an ``AnthropicAPIKey`` policy, as a user would
write it for api.anthropic.com.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import orjson
import pytest
import yaml
from openai import OpenAI

from tests.integration.conftest import Gateway, free_port, gateway_config, start_gateway
from tokenvoy.testupstream.openai_chat import WORDS

SECRET = "sk-ant-api03-test-7c6b5a"
MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there gateway"}]
PROMPT_WORDS = 5  # the fake counts system + message words
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1},
            },
            "required": ["city", "unit", "days"],
        },
    },
}


def anthropic_config(listener_port: int, fake_port: int) -> str:
    documents = list(yaml.safe_load_all(gateway_config(listener_port, fake_port, 1_000_000)))
    for doc in documents:
        if doc["kind"] == "AIServiceBackend":
            doc["spec"]["schema"] = {"name": "Anthropic"}
    documents += [
        {
            "apiVersion": "aigateway.envoyproxy.io/v1alpha1",
            "kind": "BackendSecurityPolicy",
            "metadata": {"name": "anthropic-key"},
            "spec": {
                "type": "AnthropicAPIKey",
                "targetRefs": [{"group": "aigateway.envoyproxy.io", "kind": "AIServiceBackend", "name": "fake"}],
                "anthropicAPIKey": {"secretRef": {"name": "anthropic-key"}},
            },
        },
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "anthropic-key"}, "stringData": {"apiKey": SECRET}},
    ]
    return yaml.safe_dump_all(documents, sort_keys=False)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    directory: Path = tmp_path_factory.mktemp("anthropic")
    listener_port, fake_port = free_port(), free_port()
    running = start_gateway(directory, config_text=anthropic_config(listener_port, fake_port), fake_port=fake_port)
    try:
        yield running
    finally:
        running.stop()


def client(gateway: Gateway, request_id: str | None = None) -> OpenAI:
    headers = {"x-request-id": request_id} if request_id else {}
    return OpenAI(base_url=f"{gateway.url}/v1", api_key="client-openai-key", default_headers=headers, max_retries=0)


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


def test_chat_is_translated_both_ways_and_logged(gateway: Gateway) -> None:
    request_id = f"anthropic-chat-{uuid.uuid4()}"
    reply = client(gateway, request_id).chat.completions.create(
        model="claude-sonnet-4-5", messages=MESSAGES, max_tokens=5
    )
    assert reply.choices[0].message.content == " ".join(WORDS[:5])
    assert reply.choices[0].finish_reason == "length"
    assert reply.model == "claude-sonnet-4-5"
    assert reply.id.startswith("msg_")
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (
        PROMPT_WORDS,
        5,
        PROMPT_WORDS + 5,
    )

    sent = sent_to_provider(gateway, request_id)
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["x-api-key"] == SECRET
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent["headers"]  # the client's OpenAI key stays at the gateway
    assert orjson.loads(sent["body"]) == {
        "model": "claude-sonnet-4-5",
        "system": [{"type": "text", "text": "be brief"}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there gateway"}]}],
        "max_tokens": 5,
    }

    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert entry["response_code"] == 200
    assert entry["genai_backend_name"] == "fake"
    assert entry["genai_response_model"] == "claude-sonnet-4-5"
    assert tokens(entry) == (PROMPT_WORDS, 5, PROMPT_WORDS + 5, 0)


def test_without_a_limit_the_default_max_tokens_is_sent_and_the_answer_ends_naturally(gateway: Gateway) -> None:
    request_id = f"anthropic-default-{uuid.uuid4()}"
    reply = client(gateway, request_id).chat.completions.create(model="claude-haiku", messages=MESSAGES)
    assert reply.choices[0].message.content == " ".join(WORDS)
    assert reply.choices[0].finish_reason == "stop"
    assert orjson.loads(sent_to_provider(gateway, request_id)["body"])["max_tokens"] == 4096


@pytest.mark.parametrize("include_usage", [True, False])
def test_streamed_chat(gateway: Gateway, include_usage: bool) -> None:
    request_id = f"anthropic-stream-{uuid.uuid4()}"
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(
        client(gateway, request_id).chat.completions.create(
            model="claude-sonnet-4-5", messages=MESSAGES, max_tokens=7, stream=True, **options
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == " ".join(WORDS[:7])
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    if include_usage:
        assert chunks[-1].choices == []
        assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (PROMPT_WORDS, 7)
    else:
        assert all(c.choices and c.usage is None for c in chunks)
    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert tokens(entry) == (PROMPT_WORDS, 7, PROMPT_WORDS + 7, 0)  # read from the Anthropic events either way
    assert entry["genai_response_model"] == "claude-sonnet-4-5"


def test_tool_call_and_tool_result_round_trip(gateway: Gateway) -> None:
    messages: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
    first = client(gateway).chat.completions.create(
        model="claude-sonnet-4-5", messages=messages, tools=[WEATHER_TOOL], tool_choice="required"
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    arguments = orjson.loads(call.function.arguments)
    jsonschema.validate(arguments, WEATHER_TOOL["function"]["parameters"])

    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 degrees"},
    ]
    second = client(gateway).chat.completions.create(model="claude-sonnet-4-5", messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == " ".join(WORDS)
    assert second.usage.prompt_tokens == 3 + 3  # the question and the tool result


def test_streamed_tool_call(gateway: Gateway) -> None:
    stream = client(gateway).chat.completions.create(
        model="claude-sonnet-4-5",
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        for delta_call in chunk.choices[0].delta.tool_calls or ():
            call = calls.setdefault(delta_call.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += delta_call.id or ""
            call["name"] += (delta_call.function.name or "") if delta_call.function else ""
            call["arguments"] += (delta_call.function.arguments or "") if delta_call.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert list(calls) == [0]
    assert calls[0]["id"].startswith("toolu_")
    assert calls[0]["name"] == "get_weather"
    jsonschema.validate(orjson.loads(calls[0]["arguments"]), WEATHER_TOOL["function"]["parameters"])


def test_cached_prompt_tokens_are_counted_and_logged(gateway: Gateway) -> None:
    request_id = f"anthropic-cache-{uuid.uuid4()}"
    cached = {"type": "text", "text": "a long shared preamble", "cache_control": {"type": "ephemeral"}}
    reply = client(gateway, request_id).chat.completions.create(
        model="claude-sonnet-4-5",
        messages=[{"role": "system", "content": [cached]}, {"role": "user", "content": "hi"}],
        max_tokens=2,
    )
    assert reply.usage.prompt_tokens == 4 + 1  # Anthropic's input + cache reads, as OpenAI counts them
    assert reply.usage.prompt_tokens_details.cached_tokens == 4
    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert tokens(entry) == (5, 2, 7, 4)


def test_provider_errors_keep_their_status_in_the_openai_shape(gateway: Gateway) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client(gateway).chat.completions.create(
            model="claude-sonnet-4-5", messages=MESSAGES, extra_headers={"x-testupstream-status": "529"}
        )
    assert caught.value.status_code == 529
    assert caught.value.response.json() == {
        "type": "error",
        "error": {"type": "overloaded_error", "code": "529", "message": "testupstream: forced status 529"},
    }


def test_a_request_anthropic_cannot_express_is_422(gateway: Gateway) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client(gateway).chat.completions.create(model="claude-sonnet-4-5", messages=MESSAGES, n=2)
    assert "`n`" in caught.value.response.json()["error"]["message"]
