"""The official openai and anthropic SDKs → real Envoy + extproc → an ``AWSBedrock`` backend (the fake Bedrock
Converse / ConverseStream API).

The gateway is the default config with the backend's schema switched to ``AWSBedrock`` (path prefix left to
its default, none), as a user would write it for bedrock-runtime. Signing is not part of this test (the fake
accepts unsigned requests); what is checked is what each client sees and what the provider received.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import jsonschema
import openai
import orjson
import pytest
import yaml
from anthropic import Anthropic
from openai import OpenAI

from tests.integration.conftest import Gateway, free_port, gateway_config, start_gateway
from tokenvoy.testupstream.bedrock_converse import STREAM_EXCEPTION_HEADER
from tokenvoy.testupstream.openai_chat import WORDS

MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
MODEL_PATH = "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0"
MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there gateway"}]
PROMPT_WORDS = 5  # the fake counts system + message words
SENTENCE = " ".join(WORDS)
PARAMETERS = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1},
    },
    "required": ["city", "unit", "days"],
}
OPENAI_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Get the weather", "parameters": PARAMETERS},
}
ANTHROPIC_TOOL = {"name": "get_weather", "description": "Get the weather", "input_schema": PARAMETERS}
THROTTLED = {"x-testupstream-status": "429"}


def bedrock_config(listener_port: int, fake_port: int) -> str:
    documents = list(yaml.safe_load_all(gateway_config(listener_port, fake_port, 1_000_000)))
    for doc in documents:
        if doc["kind"] == "AIServiceBackend":
            doc["spec"]["schema"] = {"name": "AWSBedrock"}
    return yaml.safe_dump_all(documents, sort_keys=False)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    directory: Path = tmp_path_factory.mktemp("bedrock")
    listener_port, fake_port = free_port(), free_port()
    running = start_gateway(directory, config_text=bedrock_config(listener_port, fake_port), fake_port=fake_port)
    try:
        yield running
    finally:
        running.stop()


def openai_client(gateway: Gateway, request_id: str | None = None) -> OpenAI:
    headers = {"x-request-id": request_id} if request_id else {}
    return OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", default_headers=headers, max_retries=0)


def anthropic_client(gateway: Gateway, request_id: str | None = None) -> Anthropic:
    headers = {"x-request-id": request_id} if request_id else {}
    return Anthropic(base_url=f"{gateway.url}/anthropic", api_key="unused", default_headers=headers, max_retries=0)


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


# ---- OpenAI clients -------------------------------------------------------------------------------------------


def test_openai_chat_is_translated_both_ways_and_logged(gateway: Gateway) -> None:
    request_id = f"bedrock-chat-{uuid.uuid4()}"
    reply = openai_client(gateway, request_id).chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    assert reply.choices[0].message.content == " ".join(WORDS[:5])
    assert reply.choices[0].finish_reason == "length"
    assert reply.model == MODEL
    assert reply.id.startswith("chatcmpl-")
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (
        PROMPT_WORDS,
        5,
        PROMPT_WORDS + 5,
    )

    sent = sent_to_provider(gateway, request_id)
    assert sent["path"] == f"{MODEL_PATH}/converse"
    assert orjson.loads(sent["body"]) == {
        "messages": [{"role": "user", "content": [{"text": "hello there gateway"}]}],
        "system": [{"text": "be brief"}],
        "inferenceConfig": {"maxTokens": 5},
    }
    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert entry["response_code"] == 200
    assert entry["genai_response_model"] == MODEL  # Converse names no model: the one sent is recorded
    assert tokens(entry) == (PROMPT_WORDS, 5, PROMPT_WORDS + 5, 0)


def test_openai_stream_is_translated_from_the_event_stream(gateway: Gateway) -> None:
    request_id = f"bedrock-stream-{uuid.uuid4()}"
    chunks = list(
        openai_client(gateway, request_id).chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=7, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == " ".join(WORDS[:7])
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (PROMPT_WORDS, 7)
    assert sent_to_provider(gateway, request_id)["path"] == f"{MODEL_PATH}/converse-stream"
    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert tokens(entry) == (PROMPT_WORDS, 7, PROMPT_WORDS + 7, 0)
    assert entry["genai_response_model"] == MODEL


def test_openai_tool_call_and_result_round_trip(gateway: Gateway) -> None:
    messages: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
    first = openai_client(gateway).chat.completions.create(
        model=MODEL, messages=messages, tools=[OPENAI_TOOL], tool_choice="required"
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "get_weather"
    jsonschema.validate(orjson.loads(call.function.arguments), PARAMETERS)

    request_id = f"bedrock-tools-{uuid.uuid4()}"
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 degrees"},
    ]
    second = openai_client(gateway, request_id).chat.completions.create(
        model=MODEL, messages=messages, tools=[OPENAI_TOOL]
    )
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == SENTENCE
    sent = orjson.loads(sent_to_provider(gateway, request_id)["body"])
    assert sent["messages"][2] == {
        "role": "user",
        "content": [{"toolResult": {"toolUseId": call.id, "content": [{"text": "sunny, 21 degrees"}]}}],
    }


def test_openai_streamed_tool_call(gateway: Gateway) -> None:
    stream = openai_client(gateway).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "weather in Paris?"}], tools=[OPENAI_TOOL], stream=True
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
    assert calls[0]["id"].startswith("tooluse_")
    assert calls[0]["name"] == "get_weather"
    jsonschema.validate(orjson.loads(calls[0]["arguments"]), PARAMETERS)


def test_openai_throttling_is_429_in_the_openai_shape(gateway: Gateway) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        openai_client(gateway).chat.completions.create(model=MODEL, messages=MESSAGES, extra_headers=THROTTLED)
    assert caught.value.status_code == 429
    assert caught.value.response.json() == {
        "type": "error",
        "error": {"type": "ThrottlingException", "code": "429", "message": "testupstream: forced status 429"},
    }


def test_openai_mid_stream_exception_raises_in_the_sdk(gateway: Gateway) -> None:
    stream = openai_client(gateway).chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        stream=True,
        extra_headers={STREAM_EXCEPTION_HEADER: "throttlingException"},
    )
    with pytest.raises(openai.APIError, match="forced throttlingException mid-stream"):
        for _ in stream:
            pass


def test_openai_request_bedrock_cannot_express_is_422(gateway: Gateway) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        openai_client(gateway).chat.completions.create(model=MODEL, messages=MESSAGES, n=2)
    assert "`n`" in caught.value.response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        (MODEL, {"thinking": {"type": "enabled", "budget_tokens": 2047}, "top_k": 5}),  # low, under the limit
        ("amazon.nova-pro-v1:0", {"inferenceConfig": {"topK": 5}}),  # Bedrock refuses Claude's fields for Nova
    ],
)
def test_openai_reasoning_and_top_k_reach_each_model_as_it_takes_them(
    gateway: Gateway, model: str, fields: dict[str, Any]
) -> None:
    """The fake Converse refuses Claude's ``thinking`` and ``top_k`` for Nova as Bedrock does: a 200 for both
    proves the gateway shaped ``additionalModelRequestFields`` for the model in the path."""
    request_id = f"bedrock-fields-{uuid.uuid4()}"
    reply = openai_client(gateway, request_id).chat.completions.create(
        model=model, messages=MESSAGES, max_completion_tokens=2048, reasoning_effort="low", extra_body={"top_k": 5}
    )
    assert reply.choices[0].message.content
    assert orjson.loads(sent_to_provider(gateway, request_id)["body"])["additionalModelRequestFields"] == fields


# ---- Anthropic clients ----------------------------------------------------------------------------------------


def test_anthropic_message_is_translated_both_ways_and_logged(gateway: Gateway) -> None:
    request_id = f"bedrock-messages-{uuid.uuid4()}"
    message = anthropic_client(gateway, request_id).messages.create(
        model=MODEL, max_tokens=6, system="be brief", messages=[{"role": "user", "content": "hello there gateway"}]
    )
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == " ".join(WORDS[:6])  # type: ignore[union-attr]
    assert message.stop_reason == "max_tokens"
    assert message.model == MODEL
    assert message.id.startswith("msg_bdrk_")
    assert (message.usage.input_tokens, message.usage.output_tokens) == (PROMPT_WORDS, 6)

    sent = sent_to_provider(gateway, request_id)
    assert sent["path"] == f"{MODEL_PATH}/converse"
    assert "x-api-key" not in sent["headers"] and "anthropic-version" not in sent["headers"]
    assert orjson.loads(sent["body"]) == {
        "messages": [{"role": "user", "content": [{"text": "hello there gateway"}]}],
        "system": [{"text": "be brief"}],
        "inferenceConfig": {"maxTokens": 6},
    }
    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert tokens(entry) == (PROMPT_WORDS, 6, PROMPT_WORDS + 6, 0)
    assert entry["genai_response_model"] == MODEL


def test_anthropic_stream_with_thinking_accumulates_in_the_sdk(gateway: Gateway) -> None:
    request_id = f"bedrock-messages-stream-{uuid.uuid4()}"
    with anthropic_client(gateway, request_id).messages.stream(
        model=MODEL,
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "hello there gateway"}],
    ) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    assert text == SENTENCE
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].signature  # type: ignore[union-attr]  # kept so the turn can be replayed
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 3
    output = len(WORDS) + 6  # the answer and the fake's six thinking words
    assert message.usage.output_tokens == output
    sent = orjson.loads(sent_to_provider(gateway, request_id)["body"])
    assert sent["additionalModelRequestFields"] == {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert tokens(entry) == (3, output, 3 + output, 0)


def test_anthropic_tool_use_round_trip(gateway: Gateway) -> None:
    messages: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
    client = anthropic_client(gateway)
    first = client.messages.create(model=MODEL, max_tokens=256, messages=messages, tools=[ANTHROPIC_TOOL])
    assert first.stop_reason == "tool_use"
    (use,) = [b for b in first.content if b.type == "tool_use"]
    jsonschema.validate(use.input, PARAMETERS)
    messages += [
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]},
    ]
    with client.messages.stream(model=MODEL, max_tokens=256, messages=messages, tools=[ANTHROPIC_TOOL]) as stream:
        second = stream.get_final_message()
    assert second.stop_reason == "end_turn"
    assert second.content[0].text == SENTENCE  # type: ignore[union-attr]
    assert second.usage.input_tokens == 3 + 1  # the question and the tool result


def test_anthropic_throttling_is_429_with_bedrocks_type(gateway: Gateway) -> None:
    with pytest.raises(anthropic.RateLimitError) as caught:
        anthropic_client(gateway).messages.create(
            model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "hi"}], extra_headers=THROTTLED
        )
    assert caught.value.status_code == 429
    assert caught.value.response.json() == {
        "type": "error",
        "error": {"type": "ThrottlingException", "message": "testupstream: forced status 429"},
    }


def test_anthropic_mid_stream_exception_is_an_error_event(gateway: Gateway) -> None:
    manager = anthropic_client(gateway).messages.stream(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={STREAM_EXCEPTION_HEADER: "throttlingException"},
    )
    with pytest.raises(anthropic.APIStatusError, match="forced throttlingException mid-stream"), manager as stream:
        for _ in stream:
            pass


def test_anthropic_request_bedrock_cannot_express_is_422_in_anthropic_shape(gateway: Gateway) -> None:
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}
    with pytest.raises(anthropic.UnprocessableEntityError) as caught:
        anthropic_client(gateway).messages.create(
            model=MODEL, max_tokens=8, messages=[{"role": "user", "content": [image]}]
        )
    body = caught.value.response.json()
    assert body["type"] == "error"
    assert "`messages[0].content[0].source`" in body["error"]["message"]
