"""The official ``openai`` SDK's Responses API (``client.responses``) → real Envoy + extproc → each backend.

The default showcase config (one model per backend schema, all on the fake provider): ``gpt-4o-mini`` on the
OpenAI-schema fake and ``azure-gpt-4o-mini`` on the Azure one get the Responses API passed through; every
answer's usage reaches the access log and the user's budget as for chat.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
import yaml
from openai import OpenAI

from tests.integration.conftest import Gateway, free_port, gateway_config, start_gateway
from tokenvoy.testupstream.openai_chat import WORDS, completion_text

SENTENCE = " ".join(WORDS)
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather of a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
        "required": ["city", "days"],
    },
}
BUDGET_TOKENS = 150  # per user and hour: each test's user spends far less, except the budget test's
CHAT_ONLY_MODEL = "local-llama"
RESPONSES_API = "tokenvoy.io/responses-api"
# Every backend schema the Responses API reaches translated to Chat Completions (then by that schema's chat
# translator): (model, AIServiceBackend, the provider path).
TRANSLATED = [
    (CHAT_ONLY_MODEL, "fake-chat-only", "/v1/chat/completions"),
    ("claude-sonnet-4-6", "fake-anthropic", "/v1/messages"),
    ("amazon.nova-lite-v1:0", "fake-bedrock", "/converse"),
    ("anthropic.claude-haiku-4-5-20251001-v1:0", "fake-bedrock-anthropic", "/invoke"),
    ("gemini-2.5-flash", "fake-vertex", ":generateContent"),
    ("claude-haiku-4-5@20251001", "fake-vertex-anthropic", ":rawPredict"),
]
TRANSLATED_IDS = ["OpenAI-chat-only", "Anthropic", "AWSBedrock", "AWSAnthropic", "GCPVertexAI", "GCPAnthropic"]
PASS_THROUGH = [("gpt-4o-mini", "fake", "/v1/responses"), ("azure-gpt-4o-mini", "fake-azure", "/openai/v1/responses")]
IDS = ["OpenAI", "AzureOpenAI"]


def _rule(model: str, ref: dict[str, Any]) -> dict[str, Any]:
    return {
        "matches": [{"headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": model}]}],
        "backendRefs": [ref],
    }


def responses_config(listener_port: int, fake_port: int) -> str:
    """The showcase config plus a rule whose backendRef overrides the model name (Azure's deployment), and an
    OpenAI-compatible backend marked as serving no Responses API (``tokenvoy.io/responses-api``)."""
    documents = list(yaml.safe_load_all(gateway_config(listener_port, fake_port, BUDGET_TOKENS, showcase=True)))
    chat_only = None
    for doc in documents:
        if doc["kind"] == "AIGatewayRoute":
            doc["spec"]["rules"][:0] = [
                _rule("responses-prod", {"name": "fake-azure", "modelNameOverride": "gpt-4o-prod"}),
                _rule(CHAT_ONLY_MODEL, {"name": "fake-chat-only"}),
            ]
        elif doc["kind"] == "AIServiceBackend" and doc["metadata"]["name"] == "fake":
            chat_only = {
                **doc,
                "metadata": {"name": "fake-chat-only", "annotations": {RESPONSES_API: "chat-completions"}},
            }
    assert chat_only is not None
    return yaml.safe_dump_all([*documents, chat_only], sort_keys=False)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    listener_port, fake_port = free_port(), free_port()
    config = responses_config(listener_port, fake_port)
    running = start_gateway(tmp_path_factory.mktemp("responses"), config_text=config, fake_port=fake_port)
    try:
        yield running
    finally:
        running.stop()


def _client(gateway: Gateway, user: str, **headers: str) -> OpenAI:
    return OpenAI(
        base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, default_headers={"x-user-id": user, **headers}
    )


def _user() -> str:
    return f"responses-{uuid.uuid4().hex[:8]}"


def _upstream_requests(gateway: Gateway) -> list[dict[str, Any]]:
    return httpx.get(f"{gateway.fake_url}/__testupstream/requests").json()


def _metered(gateway: Gateway, user: str, backend: str, usage: Any) -> dict[str, Any]:
    entry = gateway.wait_for_log(lambda e: e.get("x-user-id") == user)
    assert entry["response_code"] == 200, entry
    assert entry["genai_backend_name"] == backend
    assert entry["x-envoy-origin-path"] == "/v1/responses"
    assert (entry["genai_tokens_input"], entry["genai_tokens_output"], entry["genai_tokens_total"]) == (
        usage.input_tokens,
        usage.output_tokens,
        usage.total_tokens,
    )
    return entry


@pytest.mark.parametrize(("model", "backend", "path"), PASS_THROUGH, ids=IDS)
def test_a_response_passes_through_with_its_usage_metered(
    gateway: Gateway, model: str, backend: str, path: str
) -> None:
    user = _user()
    response = _client(gateway, user).responses.create(
        model=model, instructions="be brief", input="hello from the responses api", max_output_tokens=20
    )
    assert response.output_text == completion_text(20)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (7, 20)
    entry = _metered(gateway, user, backend, response.usage)
    assert entry["upstream_path"] == path


@pytest.mark.parametrize(("model", "backend", "path"), PASS_THROUGH, ids=IDS)
def test_a_streamed_response_passes_through_with_its_usage_from_response_completed(
    gateway: Gateway, model: str, backend: str, path: str
) -> None:
    user = _user()
    client = _client(gateway, user)
    with client.responses.stream(model=model, input=[{"role": "user", "content": "count for me"}]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert final.output_text == completion_text(16)
    assert (final.usage.input_tokens, final.usage.output_tokens) == (3, 16)
    _metered(gateway, user, backend, final.usage)


def test_store_and_previous_response_id_reach_the_provider(gateway: Gateway) -> None:
    """Stateful conversations keep working: the provider resolves ``previous_response_id`` itself."""
    client = _client(gateway, _user())
    first = client.responses.create(model="gpt-4o-mini", input="remember the fox", store=True)
    second = client.responses.create(model="gpt-4o-mini", input="what did I say?", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    sent = [r for r in _upstream_requests(gateway) if r["path"] == "/v1/responses"][-1]
    assert '"previous_response_id":"' + first.id + '"' in sent["body"].replace(" ", "")
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="gpt-4o-mini", input="hi", previous_response_id="resp_unknown")
    assert "Previous response with id 'resp_unknown' not found." in str(refused.value)


def test_a_function_call_round_trip_through_the_openai_backend(gateway: Gateway) -> None:
    client = _client(gateway, _user())
    first = client.responses.create(model="gpt-4o-mini", input="weather in Paris?", tools=[WEATHER])
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.arguments == '{"city":"fox","days":1}'
    second = client.responses.create(
        model="gpt-4o-mini",
        tools=[WEATHER],
        input=[
            {"role": "user", "content": "weather in Paris?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
    )
    assert second.output_text == SENTENCE


def test_the_model_name_override_reaches_the_provider(gateway: Gateway) -> None:
    """Azure routes on the body's ``model`` for the Responses API (the deployment): the override is written
    into it, and the access log has both names."""
    user = _user()
    response = _client(gateway, user).responses.create(model="responses-prod", input="hi")
    assert response.model == "gpt-4o-prod"
    sent = [r for r in _upstream_requests(gateway) if r["path"] == "/openai/v1/responses"][-1]
    assert orjson.loads(sent["body"])["model"] == "gpt-4o-prod"
    entry = _metered(gateway, user, "fake-azure", response.usage)
    assert (entry["genai_model_name"], entry["genai_model_name_override"]) == ("responses-prod", "gpt-4o-prod")
    assert entry["genai_response_model"] == "gpt-4o-prod"


def test_gateway_errors_are_in_openai_shape(gateway: Gateway) -> None:
    answer = httpx.post(f"{gateway.url}/v1/responses", json={"input": "hi"})
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == "missing required field `model` (a non-empty string)"
    answer = httpx.post(f"{gateway.url}/v1/responses", json={"model": "gpt-4o-mini", "input": "hi", "stream": "yes"})
    assert answer.status_code == 400
    assert "Invalid type for 'stream'" in answer.json()["error"]["message"]


# -- translated to Chat Completions, then to each backend schema -----------------------------------------


@pytest.mark.parametrize(("model", "backend", "path"), TRANSLATED, ids=TRANSLATED_IDS)
def test_a_translated_response_with_usage_metered(gateway: Gateway, model: str, backend: str, path: str) -> None:
    user = _user()
    response = _client(gateway, user).responses.create(
        model=model,
        instructions="be brief",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
    )
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.output_text and SENTENCE.startswith(response.output_text), response.output_text
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    entry = _metered(gateway, user, backend, response.usage)
    assert path in entry["upstream_path"], entry["upstream_path"]


@pytest.mark.parametrize(("model", "backend", "path"), TRANSLATED, ids=TRANSLATED_IDS)
def test_a_translated_stream_has_the_responses_event_sequence(
    gateway: Gateway, model: str, backend: str, path: str
) -> None:
    user = _user()
    client = _client(gateway, user)
    with client.responses.stream(model=model, input="count for me") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas == final.output_text and SENTENCE.startswith(deltas)
    assert [event.sequence_number for event in events] == list(range(len(events)))
    _metered(gateway, user, backend, final.usage)


@pytest.mark.parametrize(("model", "backend", "path"), TRANSLATED, ids=TRANSLATED_IDS)
@pytest.mark.parametrize("streamed", [False, True], ids=["buffered", "streamed"])
def test_a_translated_function_call_round_trip(
    gateway: Gateway, model: str, backend: str, path: str, streamed: bool
) -> None:
    client = _client(gateway, _user())
    question = [{"role": "user", "content": "weather in Paris?"}]
    if streamed:
        with client.responses.stream(model=model, input=question, tools=[WEATHER]) as stream:
            kinds = [event.type for event in stream]
            first = stream.get_final_response()
        assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
    else:
        first = client.responses.create(model=model, input=question, tools=[WEATHER])
    (call,) = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and orjson.loads(call.arguments)["city"]
    second = client.responses.create(
        model=model,
        tools=[WEATHER],
        input=[
            *question,
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
    )
    assert second.output_text and SENTENCE.startswith(second.output_text)


def test_previous_response_id_to_a_translated_backend_is_a_clear_400(gateway: Gateway) -> None:
    client = _client(gateway, _user())
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="claude-sonnet-4-6", input="and then?", previous_response_id="resp_1")
    message = str(refused.value)
    assert "`previous_response_id` cannot be resolved by backend 'fake-anthropic'" in message
    assert "send the whole conversation in `input`" in message


def test_built_in_tools_to_a_translated_backend_are_a_422_naming_them(gateway: Gateway) -> None:
    client = _client(gateway, _user())
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.responses.create(
            model=CHAT_ONLY_MODEL, input="search", tools=[WEATHER, {"type": "web_search"}, {"type": "file_search"}]
        )
    message = str(refused.value)
    assert "tools[1] ('web_search'), tools[2] ('file_search') cannot be sent to backend 'fake-chat-only'" in message


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-sonnet-4-6"], ids=["OpenAI", "Anthropic"])
def test_streamed_responses_are_charged_to_the_budget_until_a_429(gateway: Gateway, model: str) -> None:
    """The usage of ``response.completed`` (passed through, or made by the translation) is what the budget is
    charged: the user is refused, in OpenAI's error shape, once it is spent."""
    client = _client(gateway, _user())
    spent = 0
    rejected: openai.RateLimitError | None = None
    for _ in range(BUDGET_TOKENS // 10 + 3):  # every answer has well over 10 tokens
        try:
            with client.responses.stream(model=model, input="spend") as stream:
                for _event in stream:
                    pass
                final = stream.get_final_response()
        except openai.RateLimitError as error:
            rejected = error
            break
        spent += final.usage.total_tokens
    assert rejected is not None, f"spent {spent} tokens of a {BUDGET_TOKENS} budget without a 429"
    assert spent > BUDGET_TOKENS
    assert rejected.response.headers["x-ratelimit-remaining"] == "0"
    assert rejected.response.json()["error"]["code"] == "429"


# -- POST /v1/responses/input_tokens ------------------------------------------------------------------------


def test_input_tokens_are_counted_by_an_openai_backend_and_not_charged(gateway: Gateway) -> None:
    user = _user()
    client = _client(gateway, user)
    count = client.responses.input_tokens.count(model="gpt-4o-mini", instructions="be brief", input="count these words")
    assert (count.object, count.input_tokens) == ("response.input_tokens", 5)
    entry = gateway.wait_for_log(lambda e: e.get("x-user-id") == user)
    assert entry["response_code"] == 200 and entry["upstream_path"] == "/v1/responses/input_tokens"
    assert entry["genai_tokens_total"] == 0  # a count generates nothing: the budget is not charged
    with pytest.raises(openai.BadRequestError) as refused:  # the provider's own refusal, passed on
        client.responses.input_tokens.count(model="gpt-4o-mini", input="x", extra_body={"stream": True})
    assert "Unknown parameter: 'stream'." in str(refused.value)


@pytest.mark.parametrize("model", [CHAT_ONLY_MODEL, "claude-sonnet-4-6"], ids=["OpenAI-chat-only", "Anthropic"])
def test_input_tokens_on_a_backend_that_cannot_count_is_a_422(gateway: Gateway, model: str) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        _client(gateway, _user()).responses.input_tokens.count(model=model, input="x")
    assert "/v1/responses/input_tokens requests cannot be sent to backend" in str(refused.value)
