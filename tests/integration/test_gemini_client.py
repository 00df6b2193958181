"""Google's Gemini API as a client API, through real Envoy, with the official ``google-genai`` SDK.

The SDK's base URL is the gateway (``http_options.base_url``), as gemini-cli's ``GOOGLE_GEMINI_BASE_URL``
does; it calls ``/v1beta/models/{model}:generateContent``, ``:streamGenerateContent?alt=sse`` and
``:countTokens`` with an ``x-goog-api-key``. Each default-config model is one backend schema: Gemini on
Vertex AI gets the request as it came (Vertex's path), every other schema gets it translated, and the
answer comes back as Gemini's, with ``usageMetadata`` and the tokens in the access log.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import orjson
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from tests.integration.conftest import Gateway, free_port, gateway_config, start_gateway
from tokenvoy.config.defaults import SHOWCASE_MODELS
from tokenvoy.testupstream.openai_chat import WORDS

CHAT_BACKENDS = [(model, backend, schema) for model, backend, schema in SHOWCASE_MODELS if "embed" not in model]
FIVE_WORDS = " ".join(WORDS[:5])
WEATHER = types.FunctionDeclaration(
    name="get_weather",
    description="Get the current weather in a given location",
    parameters=types.Schema(
        type=types.Type.OBJECT,
        properties={"location": types.Schema(type=types.Type.STRING, description="The city and state")},
        required=["location"],
    ),
)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    listener_port, fake_port = free_port(), free_port()
    config = gateway_config(listener_port, fake_port, 10_000_000, showcase=True)
    running = start_gateway(tmp_path_factory.mktemp("gemini-client"), config_text=config, fake_port=fake_port)
    try:
        yield running
    finally:
        running.stop()


def _client(gateway: Gateway, user: str) -> genai.Client:
    options = types.HttpOptions(base_url=gateway.url, headers={"x-user-id": user}, timeout=30_000)
    return genai.Client(api_key="unused", http_options=options)


def _fake_requests(gateway: Gateway) -> list[dict]:
    return httpx.get(f"{gateway.fake_url}/__testupstream/requests").json()


@pytest.mark.parametrize(("model", "backend", "schema"), CHAT_BACKENDS, ids=[s for _, _, s in CHAT_BACKENDS])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_generate_content_reaches_every_chat_schema(
    gateway: Gateway, model: str, backend: str, schema: str, stream: bool
) -> None:
    user = f"gemini-{uuid.uuid4().hex[:8]}"
    client = _client(gateway, user)
    config = types.GenerateContentConfig(system_instruction="Answer briefly.", max_output_tokens=5)
    if stream:
        chunks = list(client.models.generate_content_stream(model=model, contents="hello there", config=config))
        text = "".join(chunk.text or "" for chunk in chunks)
        usage = chunks[-1].usage_metadata
        finish = chunks[-1].candidates[0].finish_reason
    else:
        reply = client.models.generate_content(model=model, contents="hello there", config=config)
        text, usage, finish = reply.text, reply.usage_metadata, reply.candidates[0].finish_reason
    assert text == FIVE_WORDS  # every fake cuts its sentence at the limit it was given
    assert finish == types.FinishReason.MAX_TOKENS
    assert usage is not None and usage.prompt_token_count > 0 and usage.candidates_token_count == 5
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count

    entry = gateway.wait_for_log(lambda e: e.get("x-user-id") == user)
    assert entry["response_code"] == 200 and entry["genai_backend_name"] == backend, entry
    assert entry["genai_model_name"] == model
    assert (entry["genai_tokens_input"], entry["genai_tokens_output"]) == (usage.prompt_token_count, 5)
    method = "streamGenerateContent" if stream else "generateContent"
    assert entry["x-envoy-origin-path"].startswith(f"/v1beta/models/{model}:{method}")


@pytest.mark.parametrize(("model", "backend", "schema"), CHAT_BACKENDS, ids=[s for _, _, s in CHAT_BACKENDS])
def test_a_function_call_round_trip_on_every_chat_schema(
    gateway: Gateway, model: str, backend: str, schema: str
) -> None:
    """The fakes call the first function offered; the client answers it and gets text back (the SDK's own
    automatic function calling is off: the loop is written out as gemini-cli runs it)."""
    client = _client(gateway, f"gemini-tools-{uuid.uuid4().hex[:8]}")
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[WEATHER])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        max_output_tokens=5,
    )
    history = [types.Content(role="user", parts=[types.Part.from_text(text="Weather in Paris?")])]
    chunks = list(client.models.generate_content_stream(model=model, contents=history, config=config))
    calls = [call for chunk in chunks for call in chunk.function_calls or ()]
    assert len(calls) == 1 and calls[0].name == "get_weather" and set(calls[0].args) == {"location"}
    model_turn = types.Content(
        role="model", parts=[part for chunk in chunks for part in chunk.candidates[0].content.parts or ()]
    )
    answer = types.Part.from_function_response(name="get_weather", response={"output": "18 degrees and sunny"})
    answer.function_response.id = calls[0].id
    history += [model_turn, types.Content(role="user", parts=[answer])]
    reply = client.models.generate_content(model=model, contents=history, config=config)
    assert reply.text == FIVE_WORDS and not reply.function_calls


def test_vertex_gets_the_request_unchanged_on_its_own_path(gateway: Gateway) -> None:
    client = _client(gateway, f"gemini-vertex-{uuid.uuid4().hex[:8]}")
    client.models.generate_content(
        model="gemini-2.5-flash",
        contents="hello there",
        config=types.GenerateContentConfig(max_output_tokens=5, temperature=0.5),
    )
    sent = _fake_requests(gateway)[-1]
    assert sent["path"] == "/publishers/google/models/gemini-2.5-flash:generateContent"
    assert orjson.loads(sent["body"]) == {
        "contents": [{"parts": [{"text": "hello there"}], "role": "user"}],
        "generationConfig": {"maxOutputTokens": 5, "temperature": 0.5},
    }


def test_count_tokens_is_answered_by_vertex_and_charged_nothing(gateway: Gateway) -> None:
    user = f"gemini-count-{uuid.uuid4().hex[:8]}"
    client = _client(gateway, user)
    counted = client.models.count_tokens(model="gemini-2.5-flash", contents="one two three four")
    assert counted.total_tokens == 4
    assert _fake_requests(gateway)[-1]["path"] == "/publishers/google/models/gemini-2.5-flash:countTokens"
    entry = gateway.wait_for_log(lambda e: e.get("x-user-id") == user)
    assert entry["response_code"] == 200 and entry["genai_tokens_total"] == 0, entry


def test_count_tokens_on_a_backend_that_cannot_count_is_a_422_in_googles_shape(gateway: Gateway) -> None:
    client = _client(gateway, "gemini-count-openai")
    with pytest.raises(genai_errors.ClientError) as raised:
        client.models.count_tokens(model="gpt-4o-mini", contents="one two")
    assert raised.value.code == 422
    assert raised.value.status == "INVALID_ARGUMENT"
    assert "cannot be sent to backend 'fake' (schema OpenAI)" in raised.value.message


def test_errors_are_in_googles_shape(gateway: Gateway) -> None:
    headers = {"content-type": "application/json", "x-goog-api-key": "unused"}
    unknown = httpx.post(f"{gateway.url}/v1beta/models/gemini-2.5-flash:embedContent", content=b"{}", headers=headers)
    assert unknown.status_code == 404
    error = unknown.json()["error"]
    assert (error["code"], error["status"]) == (404, "NOT_FOUND") and "embedContent" in error["message"]

    not_sse = httpx.post(
        f"{gateway.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent", content=b"{}", headers=headers
    )
    assert not_sse.status_code == 400 and "alt=sse" in not_sse.json()["error"]["message"]

    bad_json = httpx.post(f"{gateway.url}/v1beta/models/gpt-4o-mini:generateContent", content=b"{", headers=headers)
    assert bad_json.status_code == 400 and bad_json.json()["error"]["status"] == "INVALID_ARGUMENT"

    # A provider's refusal keeps its status: the fake Vertex refuses an unknown field, as Vertex does.
    refused = httpx.post(
        f"{gateway.url}/v1beta/models/gemini-2.5-flash:generateContent",
        content=orjson.dumps({"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "bogus": 1}),
        headers=headers,
    )
    assert refused.status_code == 400 and refused.json()["error"]["status"] == "INVALID_ARGUMENT"
    # Translated for an OpenAI-schema backend, what it cannot express is a 422 naming the field.
    builtin = httpx.post(
        f"{gateway.url}/v1beta/models/gpt-4o-mini:generateContent",
        content=orjson.dumps({"contents": [{"parts": [{"text": "hi"}]}], "tools": [{"googleSearch": {}}]}),
        headers=headers,
    )
    assert builtin.status_code == 422 and "tools[0].googleSearch" in builtin.json()["error"]["message"]


def test_envoys_own_replies_are_in_googles_shape(gateway: Gateway) -> None:
    """A body over the gateway's limit is refused by Envoy itself, before extproc: Google's shape still."""
    too_big = b'{"contents":"' + b"x" * (51 * 1024 * 1024) + b'"}'
    reply = httpx.post(
        f"{gateway.url}/v1beta/models/gemini-2.5-flash:generateContent",
        content=too_big,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert reply.status_code == 413
    assert reply.json()["error"]["code"] == 413 and reply.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_a_user_over_budget_gets_googles_429(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The budget is Envoy's (the rate-limit filter answers): its 429 is in Google's shape too, and the SDK
    raises it as RESOURCE_EXHAUSTED."""
    listener_port, fake_port = free_port(), free_port()
    config = gateway_config(listener_port, fake_port, 10, showcase=True)
    small = start_gateway(tmp_path_factory.mktemp("gemini-budget"), config_text=config, fake_port=fake_port)
    try:
        client = _client(small, "gemini-over-budget")
        client.models.generate_content(model="gemini-2.5-flash", contents="hello there")  # charged ~30 tokens
        with pytest.raises(genai_errors.ClientError) as raised:
            for _ in range(20):  # the charge lands when the answer has finished: it may take a moment
                client.models.generate_content(model="gemini-2.5-flash", contents="hello there")
        assert (raised.value.code, raised.value.status) == (429, "RESOURCE_EXHAUSTED")
        assert "budget exceeded" in raised.value.message
    finally:
        small.stop()


def test_the_v1_api_version_is_served_too(gateway: Gateway) -> None:
    """``google-genai`` with ``api_version="v1"`` calls ``/v1/models/{model}:generateContent``."""
    options = types.HttpOptions(base_url=gateway.url, api_version="v1", timeout=30_000)
    client = genai.Client(api_key="unused", http_options=options)
    reply = client.models.generate_content(
        model="gpt-4o-mini", contents="hello there", config=types.GenerateContentConfig(max_output_tokens=5)
    )
    assert reply.text == FIVE_WORDS
    assert _fake_requests(gateway)[-1]["path"] == "/v1/chat/completions"


def test_models_list_gives_the_configured_models_in_googles_shape(gateway: Gateway) -> None:
    """``client.models.list()`` (gemini-cli's model picker reads the same list) calls ``GET /v1beta/models``."""
    client = _client(gateway, "lister")  # held: the pager reads through the client's connection
    listed = list(client.models.list())
    served = [entry["id"] for entry in httpx.get(f"{gateway.url}/v1/models").json()["data"]]
    assert [model.name for model in listed] == [f"models/{name}" for name in served]
    assert {model for model, _, _ in SHOWCASE_MODELS} <= set(served)
    assert listed[0].supported_actions == ["generateContent", "streamGenerateContent", "countTokens"]
    refused = httpx.post(f"{gateway.url}/v1beta/models", json={})
    assert refused.status_code == 405 and refused.json()["error"]["status"]  # Google's error shape


def test_models_get_gives_one_served_model_or_googles_404(gateway: Gateway) -> None:
    client = _client(gateway, "lister")
    model = client.models.get(model="gemini-2.5-flash")
    assert (model.name, model.display_name) == ("models/gemini-2.5-flash", "gemini-2.5-flash")
    assert client.models.get(model="models/claude-haiku-4-5@20251001").name == "models/claude-haiku-4-5@20251001"
    with pytest.raises(genai_errors.ClientError) as missing:
        client.models.get(model="gemini-0-unknown")
    assert missing.value.code == 404 and missing.value.status == "NOT_FOUND"
    assert "'gemini-0-unknown' is not served" in (missing.value.message or "")
