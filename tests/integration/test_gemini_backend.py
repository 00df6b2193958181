"""OpenAI SDK → real Envoy + extproc → a GCPVertexAI-schema backend (the fake Gemini on Vertex AI).

The gateway is the default config with the backend's schema switched to ``GCPVertexAI`` and the
``/v1/projects/{project}/locations/{region}`` prefix written out, as GCP credentials would set it (the
credentials themselves are tested in ``test_credentials_through_envoy.py``).
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
from tokenvoy.testupstream.gemini import THINKING_TEXT, THOUGHT_SIGNATURE
from tokenvoy.testupstream.openai_chat import WORDS

MODEL = "gemini-2.5-flash"
PREFIX = "/v1/projects/tokenvoy-test/locations/us-central1"
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
            "additionalProperties": False,
        },
    },
}


def gemini_config(listener_port: int, fake_port: int) -> str:
    documents = list(yaml.safe_load_all(gateway_config(listener_port, fake_port, 1_000_000)))
    for doc in documents:
        if doc["kind"] == "AIServiceBackend":
            doc["spec"]["schema"] = {"name": "GCPVertexAI", "prefix": PREFIX}
    return yaml.safe_dump_all(documents, sort_keys=False)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    directory: Path = tmp_path_factory.mktemp("gemini")
    listener_port, fake_port = free_port(), free_port()
    running = start_gateway(directory, config_text=gemini_config(listener_port, fake_port), fake_port=fake_port)
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


def tokens(entry: dict[str, Any]) -> tuple[int, int, int]:
    return entry["genai_tokens_input"], entry["genai_tokens_output"], entry["genai_tokens_total"]


def test_chat_is_translated_both_ways_and_logged(gateway: Gateway) -> None:
    request_id = f"gemini-chat-{uuid.uuid4()}"
    reply = client(gateway, request_id).chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    assert reply.choices[0].message.content == " ".join(WORDS[:5])
    assert reply.choices[0].finish_reason == "length"
    assert reply.model == MODEL  # Gemini's modelVersion
    assert reply.id.startswith("gemini-response-")  # Gemini's responseId
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (
        PROMPT_WORDS,
        5,
        PROMPT_WORDS + 5,
    )

    sent = sent_to_provider(gateway, request_id)
    assert sent["path"] == f"{PREFIX}/publishers/google/models/{MODEL}:generateContent"
    assert orjson.loads(sent["body"]) == {
        "contents": [{"role": "user", "parts": [{"text": "hello there gateway"}]}],
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "generationConfig": {"maxOutputTokens": 5},
    }

    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert entry["response_code"] == 200
    assert entry["genai_backend_name"] == "fake"
    assert entry["genai_response_model"] == MODEL
    assert tokens(entry) == (PROMPT_WORDS, 5, PROMPT_WORDS + 5)


@pytest.mark.parametrize("include_usage", [True, False])
def test_streamed_chat(gateway: Gateway, include_usage: bool) -> None:
    request_id = f"gemini-stream-{uuid.uuid4()}"
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(
        client(gateway, request_id).chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=7, stream=True, **options
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
    assert sent_to_provider(gateway, request_id)["path"].endswith(f"/{MODEL}:streamGenerateContent?alt=sse")
    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert tokens(entry) == (PROMPT_WORDS, 7, PROMPT_WORDS + 7)  # read from Gemini's chunks either way
    assert entry["genai_response_model"] == MODEL


def test_reasoning_effort_shows_thoughts_and_counts_them_as_completion(gateway: Gateway) -> None:
    reply = client(gateway).chat.completions.create(
        model=MODEL, messages=MESSAGES, max_completion_tokens=9, reasoning_effort="low"
    )
    message = reply.choices[0].message
    assert message.model_extra["reasoning_content"] == THINKING_TEXT
    assert message.content == " ".join(WORDS[:3])  # the thought's 6 words count against the 9
    assert reply.usage.completion_tokens == 9
    assert reply.usage.completion_tokens_details.reasoning_tokens == 6


def test_tool_call_and_tool_result_round_trip(gateway: Gateway) -> None:
    messages: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
    first = client(gateway).chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER_TOOL], tool_choice="required"
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    jsonschema.validate(orjson.loads(call.function.arguments), WEATHER_TOOL["function"]["parameters"])

    request_id = f"gemini-tool-result-{uuid.uuid4()}"
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 degrees"},
    ]
    second = client(gateway, request_id).chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == " ".join(WORDS)
    assert second.usage.prompt_tokens == 3 + 3  # the question and the tool result

    contents = orjson.loads(sent_to_provider(gateway, request_id)["body"])["contents"]
    assert contents[1]["parts"][0]["thoughtSignature"] == THOUGHT_SIGNATURE  # kept through the client's history
    assert contents[2] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"output": "sunny, 21 degrees"}}}],
    }


def test_streamed_tool_call(gateway: Gateway) -> None:
    stream = client(gateway).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "weather in Paris?"}], tools=[WEATHER_TOOL], stream=True
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
    assert calls[0]["id"].startswith("call_")
    assert calls[0]["name"] == "get_weather"
    jsonschema.validate(orjson.loads(calls[0]["arguments"]), WEATHER_TOOL["function"]["parameters"])


@pytest.mark.parametrize("stream", [False, True])
def test_a_google_429_stays_429_in_the_openai_shape(gateway: Gateway, stream: bool) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        client(gateway).chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=stream, extra_headers={"x-testupstream-status": "429"}
        )
    assert caught.value.status_code == 429
    assert caught.value.response.json() == {
        "type": "error",
        "error": {"type": "rate_limit_error", "code": "429", "message": "testupstream: forced status 429"},
    }


def test_a_request_gemini_cannot_express_is_422(gateway: Gateway) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client(gateway).chat.completions.create(model=MODEL, messages=MESSAGES, logit_bias={"50256": -100})
    assert "`logit_bias`" in caught.value.response.json()["error"]["message"]
