"""Claude on AWS Bedrock (``AWSAnthropic``) and on Vertex AI (``GCPAnthropic``) through real Envoy + extproc.

One gateway, three backends on the fake provider, picked by model name:

* ``bedrock``: schema ``AWSAnthropic``, no credentials (``/model/{id}/invoke``, event stream answers);
* ``bedrock-signed``: the same with an ``AWSCredentials`` policy, so the fake verifies the SigV4 signature
  over the final path (model id with ``%3A``) and body;
* ``vertex``: schema ``GCPAnthropic`` with ``schema.prefix: /v1/projects/tokenvoy-test/locations/us-east5``.

The official ``openai`` and ``anthropic`` SDKs are the clients: chat, streams, tools, usage and provider
errors (429 throttling kept in each client's shape).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
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
from tokenvoy.testupstream.aws_auth import EXAMPLE_ACCESS_KEY_ID, EXAMPLE_SECRET_ACCESS_KEY
from tokenvoy.testupstream.openai_chat import WORDS

BEDROCK_MODEL = "anthropic.claude-sonnet-4-5-20250929-v1:0"
SIGNED_MODEL = "us.anthropic.claude-haiku-4-5-20251001-v1:0"
VERTEX_MODEL = "claude-sonnet-4-5@20250929"
VERTEX_PREFIX = "/v1/projects/tokenvoy-test/locations/us-east5"
PATHS = {
    BEDROCK_MODEL: ("/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke", "-with-response-stream"),
    VERTEX_MODEL: (f"{VERTEX_PREFIX}/publishers/anthropic/models/{VERTEX_MODEL}:rawPredict", None),
}
VERSIONS = {BEDROCK_MODEL: "bedrock-2023-05-31", VERTEX_MODEL: "vertex-2023-10-16"}
BACKENDS = {BEDROCK_MODEL: "bedrock", VERTEX_MODEL: "vertex"}
MODELS = [pytest.param(BEDROCK_MODEL, id="AWSAnthropic"), pytest.param(VERTEX_MODEL, id="GCPAnthropic")]
SYSTEM = "be brief"
PROMPT = "hello there gateway"
PROMPT_WORDS = 5
WEATHER = {
    "name": "get_weather",
    "description": "Get the weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
        "required": ["city", "days"],
    },
}
OPENAI_WEATHER = {
    "type": "function",
    "function": {"name": WEATHER["name"], "description": WEATHER["description"], "parameters": WEATHER["input_schema"]},
}


def _backend(name: str, schema: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "aigateway.envoyproxy.io/v1alpha1",
        "kind": "AIServiceBackend",
        "metadata": {"name": name},
        "spec": {"schema": schema, "backendRef": {"name": "fake", "kind": "Backend", "group": "gateway.envoyproxy.io"}},
    }


def _rule(model: str, backend: str) -> dict[str, Any]:
    return {
        "matches": [{"headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": model}]}],
        "backendRefs": [{"name": backend}],
    }


def clouds_config(listener_port: int, fake_port: int) -> str:
    documents = list(yaml.safe_load_all(gateway_config(listener_port, fake_port, 10_000_000)))
    for doc in documents:
        if doc["kind"] == "AIGatewayRoute":
            rules = [
                _rule(BEDROCK_MODEL, "bedrock"),
                _rule(SIGNED_MODEL, "bedrock-signed"),
                _rule(VERTEX_MODEL, "vertex"),
            ]
            doc["spec"]["rules"] = rules + doc["spec"]["rules"]
    credentials = (
        f"[default]\naws_access_key_id = {EXAMPLE_ACCESS_KEY_ID}\naws_secret_access_key = {EXAMPLE_SECRET_ACCESS_KEY}\n"
    )
    documents += [
        _backend("bedrock", {"name": "AWSAnthropic"}),
        _backend("bedrock-signed", {"name": "AWSAnthropic"}),
        _backend("vertex", {"name": "GCPAnthropic", "prefix": VERTEX_PREFIX}),
        {
            "apiVersion": "aigateway.envoyproxy.io/v1alpha1",
            "kind": "BackendSecurityPolicy",
            "metadata": {"name": "bedrock-keys"},
            "spec": {
                "type": "AWSCredentials",
                "targetRefs": [
                    {"group": "aigateway.envoyproxy.io", "kind": "AIServiceBackend", "name": "bedrock-signed"}
                ],
                "awsCredentials": {"region": "us-east-1", "credentialsFile": {"secretRef": {"name": "bedrock-keys"}}},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "bedrock-keys"},
            "stringData": {"credentials": credentials},
        },
    ]
    return yaml.safe_dump_all(documents, sort_keys=False)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    listener_port, fake_port = free_port(), free_port()
    running = start_gateway(
        tmp_path_factory.mktemp("anthropic-clouds"),
        config_text=clouds_config(listener_port, fake_port),
        fake_port=fake_port,
    )
    try:
        yield running
    finally:
        running.stop()


def _id(kind: str) -> str:
    return f"clouds-{kind}-{uuid.uuid4()}"


def openai_client(gateway: Gateway, request_id: str | None = None, **headers: str) -> OpenAI:
    extra = {"x-request-id": request_id, **headers} if request_id else headers
    return OpenAI(base_url=f"{gateway.url}/v1", api_key="client-openai-key", default_headers=extra, max_retries=0)


def anthropic_client(gateway: Gateway, request_id: str | None = None, **headers: str) -> Anthropic:
    extra = {"x-request-id": request_id, **headers} if request_id else headers
    return Anthropic(base_url=f"{gateway.url}/anthropic", api_key="client-key", default_headers=extra, max_retries=0)


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


def _expected_path(model: str, stream: bool) -> str:
    path, stream_suffix = PATHS[model]
    if not stream:
        return path
    return path + stream_suffix if stream_suffix else path.replace(":rawPredict", ":streamRawPredict")


# ---- OpenAI SDK ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_openai_chat(gateway: Gateway, model: str) -> None:
    request_id = _id("chat")
    reply = openai_client(gateway, request_id).chat.completions.create(
        model=model, messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}], max_tokens=5
    )
    assert reply.choices[0].message.content == " ".join(WORDS[:5])
    assert reply.choices[0].finish_reason == "length"
    assert reply.model == model
    assert reply.id.startswith("msg_bdrk_" if model == BEDROCK_MODEL else "msg_vrtx_")
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (PROMPT_WORDS, 5)

    sent = sent_to_provider(gateway, request_id)
    assert sent["path"] == _expected_path(model, False)
    assert "authorization" not in sent["headers"]  # the client's OpenAI key stays at the gateway
    assert orjson.loads(sent["body"]) == {
        "anthropic_version": VERSIONS[model],
        "system": [{"type": "text", "text": SYSTEM}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": PROMPT}]}],
        "max_tokens": 5,
    }
    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert entry["response_code"] == 200
    assert entry["genai_backend_name"] == BACKENDS[model]
    assert entry["genai_response_model"] == model
    assert tokens(entry) == (PROMPT_WORDS, 5, PROMPT_WORDS + 5, 0)


@pytest.mark.parametrize("model", MODELS)
def test_openai_stream_with_usage(gateway: Gateway, model: str) -> None:
    request_id = _id("stream")
    cached = {"type": "text", "text": "a long shared preamble", "cache_control": {"type": "ephemeral"}}
    chunks = list(
        openai_client(gateway, request_id).chat.completions.create(
            model=model,
            messages=[{"role": "system", "content": [cached]}, {"role": "user", "content": PROMPT}],  # type: ignore[list-item]
            max_tokens=7,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == " ".join(WORDS[:7])
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (4 + 3, 7)
    assert usage.prompt_tokens_details.cached_tokens == 4
    assert sent_to_provider(gateway, request_id)["path"] == _expected_path(model, True)
    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert tokens(entry) == (7, 7, 14, 4)
    assert entry["genai_response_model"] == model


@pytest.mark.parametrize("model", MODELS)
def test_openai_tools_round_trip_and_streamed_tool_call(gateway: Gateway, model: str) -> None:
    messages: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
    first = openai_client(gateway).chat.completions.create(
        model=model, messages=messages, tools=[OPENAI_WEATHER], tool_choice="required"
    )
    assert first.choices[0].finish_reason == "tool_calls"
    (call,) = first.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    jsonschema.validate(orjson.loads(call.function.arguments), WEATHER["input_schema"])
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 degrees"},
    ]
    second = openai_client(gateway).chat.completions.create(model=model, messages=messages, tools=[OPENAI_WEATHER])
    assert second.choices[0].message.content == " ".join(WORDS)
    assert second.usage.prompt_tokens == 3 + 3

    with openai_client(gateway).chat.completions.stream(
        model=model, messages=messages[:1], tools=[OPENAI_WEATHER], parallel_tool_calls=False
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    (streamed,) = final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason == "tool_calls"
    jsonschema.validate(orjson.loads(streamed.function.arguments), WEATHER["input_schema"])


@pytest.mark.parametrize(
    ("model", "marker"), [(BEDROCK_MODEL, "ThrottlingException"), (VERTEX_MODEL, "RESOURCE_EXHAUSTED")]
)
def test_openai_client_sees_throttling_as_a_429_in_its_shape(gateway: Gateway, model: str, marker: str) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        openai_client(gateway, **{"x-testupstream-status": "429"}).chat.completions.create(
            model=model, messages=[{"role": "user", "content": PROMPT}], stream=True
        )
    assert caught.value.status_code == 429
    assert caught.value.response.json() == {
        "type": "error",
        "error": {"type": "rate_limit_error", "code": "429", "message": f"{marker}: testupstream: forced status 429"},
    }


def test_a_request_claude_cannot_express_is_422(gateway: Gateway) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        openai_client(gateway).chat.completions.create(
            model=BEDROCK_MODEL, messages=[{"role": "user", "content": PROMPT}], n=2
        )
    assert "`n`" in caught.value.response.json()["error"]["message"]


def test_bedrock_throttling_mid_stream_ends_the_openai_stream_with_an_error(gateway: Gateway) -> None:
    stream = openai_client(
        gateway, **{"x-testupstream-stream-exception": "throttlingException"}
    ).chat.completions.create(model=BEDROCK_MODEL, messages=[{"role": "user", "content": PROMPT}], stream=True)
    received = ""
    with pytest.raises(openai.APIError, match="throttlingException"):
        for chunk in stream:
            received += "".join(c.delta.content or "" for c in chunk.choices)
    assert received == WORDS[0]  # the text before the exception still arrived


# ---- Anthropic SDK ------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_messages(gateway: Gateway, model: str) -> None:
    request_id = _id("messages")
    raw = anthropic_client(gateway, request_id).messages.with_raw_response.create(
        model=model, system=SYSTEM, messages=[{"role": "user", "content": PROMPT}], max_tokens=5
    )
    message = raw.parse()
    assert message.content[0].text == " ".join(WORDS[:5])
    assert message.stop_reason == "max_tokens"
    assert message.model == model
    assert (message.usage.input_tokens, message.usage.output_tokens) == (PROMPT_WORDS, 5)

    sent = sent_to_provider(gateway, request_id)
    assert sent["path"] == _expected_path(model, False)
    assert orjson.loads(sent["body"]) == {
        "anthropic_version": VERSIONS[model],
        "max_tokens": 5,
        "messages": [{"role": "user", "content": PROMPT}],
        "system": SYSTEM,
    }
    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert entry["genai_backend_name"] == BACKENDS[model]
    assert entry["genai_response_model"] == model
    assert tokens(entry) == (PROMPT_WORDS, 5, PROMPT_WORDS + 5, 0)


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_stream(gateway: Gateway, model: str) -> None:
    request_id = _id("a-stream")
    with anthropic_client(gateway, request_id).messages.stream(
        model=model, system=SYSTEM, messages=[{"role": "user", "content": PROMPT}], max_tokens=6
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        content_type = stream.response.headers["content-type"]
    assert content_type.startswith("text/event-stream")  # Bedrock's event stream, re-framed as SSE
    assert text == " ".join(WORDS[:6])
    assert (final.usage.input_tokens, final.usage.output_tokens) == (PROMPT_WORDS, 6)
    sent = sent_to_provider(gateway, request_id)
    assert sent["path"] == _expected_path(model, True)
    assert orjson.loads(sent["body"]).get("stream") is (True if model == VERTEX_MODEL else None)
    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert tokens(entry) == (PROMPT_WORDS, 6, PROMPT_WORDS + 6, 0)


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_tool_use_round_trip_streamed(gateway: Gateway, model: str) -> None:
    messages: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
    with anthropic_client(gateway).messages.stream(
        model=model, messages=messages, tools=[WEATHER], tool_choice={"type": "any"}, max_tokens=100
    ) as stream:
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use"
    (call,) = [b for b in first.content if b.type == "tool_use"]
    jsonschema.validate(call.input, WEATHER["input_schema"])
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]},
    ]
    second = anthropic_client(gateway).messages.create(model=model, messages=messages, tools=[WEATHER], max_tokens=100)
    assert second.stop_reason == "end_turn"
    assert second.content[0].text == " ".join(WORDS)


@pytest.mark.parametrize(
    ("model", "marker"), [(BEDROCK_MODEL, "ThrottlingException"), (VERTEX_MODEL, "RESOURCE_EXHAUSTED")]
)
def test_anthropic_client_sees_throttling_as_a_429_in_its_shape(gateway: Gateway, model: str, marker: str) -> None:
    with pytest.raises(anthropic.RateLimitError) as caught:
        anthropic_client(gateway, **{"x-testupstream-status": "429"}).messages.create(
            model=model, messages=[{"role": "user", "content": PROMPT}], max_tokens=5
        )
    assert caught.value.status_code == 429
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": f"{marker}: testupstream: forced status 429"},
    }


def test_bedrock_throttling_mid_stream_reaches_the_anthropic_client_as_an_error_event(gateway: Gateway) -> None:
    client = anthropic_client(gateway, **{"x-testupstream-stream-exception": "throttlingException"})
    with (
        pytest.raises(anthropic.APIStatusError, match="throttlingException"),
        client.messages.stream(
            model=BEDROCK_MODEL, messages=[{"role": "user", "content": PROMPT}], max_tokens=5
        ) as stream,
    ):
        list(stream.text_stream)


# ---- SigV4 --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_signed_bedrock_requests_verify_at_the_provider(gateway: Gateway, stream: bool) -> None:
    """The fake re-signs the request it got (path with %3A, final body) and refuses a mismatch with 403."""
    request_id = _id("signed")
    client = anthropic_client(gateway, request_id, **{"x-testupstream-require-sigv4": "true"})
    if stream:
        with client.messages.stream(
            model=SIGNED_MODEL, messages=[{"role": "user", "content": PROMPT}], max_tokens=3
        ) as reply:
            assert reply.get_final_message().content[0].text == " ".join(WORDS[:3])
    else:
        message = client.messages.create(
            model=SIGNED_MODEL, messages=[{"role": "user", "content": PROMPT}], max_tokens=3
        )
        assert message.content[0].text == " ".join(WORDS[:3])
    sent = sent_to_provider(gateway, request_id)
    assert sent["path"].startswith("/model/us.anthropic.claude-haiku-4-5-20251001-v1%3A0/invoke")
    assert sent["headers"]["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={EXAMPLE_ACCESS_KEY_ID}/")
    assert "x-api-key" not in sent["headers"]  # the client's key is not sent next to the signature
