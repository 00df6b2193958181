"""``POST /anthropic/v1/messages/count_tokens`` through real Envoy and extproc, against the default config's one
model per schema: counted by the providers that can count (Anthropic, Claude on Vertex, Bedrock CountTokens),
a clear error in Anthropic's shape from the others, and never charged to a budget."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import anthropic
import httpx
import pytest

from tests.integration.conftest import Gateway, free_port, gateway_config, start_gateway

BUDGET = 1_000
MESSAGES = [{"role": "user", "content": "count these five words please"}]
COUNTED = [
    ("claude-sonnet-4-6", "fake-anthropic", "/v1/messages/count_tokens"),
    ("claude-haiku-4-5@20251001", "fake-vertex-anthropic", "/publishers/anthropic/models/count-tokens:rawPredict"),
    ("anthropic.claude-haiku-4-5-20251001-v1:0", "fake-bedrock-anthropic", "/count-tokens"),
]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    listener_port, fake_port = free_port(), free_port()
    config = gateway_config(listener_port, fake_port, BUDGET, showcase=True)
    running = start_gateway(tmp_path_factory.mktemp("count"), config_text=config, fake_port=fake_port)
    try:
        yield running
    finally:
        running.stop()


def _client(gateway: Gateway, **headers: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=f"{gateway.url}/anthropic", api_key="unused", max_retries=0, default_headers=headers
    )


@pytest.mark.parametrize(("model", "backend", "path"), COUNTED, ids=[b for _, b, _ in COUNTED])
def test_claude_backends_count_and_the_count_is_not_charged(
    gateway: Gateway, model: str, backend: str, path: str
) -> None:
    user, request_id = f"count-{uuid.uuid4().hex[:8]}", f"count-{uuid.uuid4()}"
    client = _client(gateway, **{"x-user-id": user, "x-request-id": request_id})
    counted = client.messages.count_tokens(model=model, messages=MESSAGES, system="Be brief.")
    assert counted.input_tokens == 7  # the fakes count words: 5 + 2
    received = httpx.get(f"{gateway.fake_url}/__testupstream/requests").json()
    sent = next(r for r in received if r["headers"].get("x-request-id") == request_id)
    assert sent["path"].endswith(path), sent["path"]
    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert (entry["response_code"], entry["genai_backend_name"]) == (200, backend)
    assert not entry["genai_tokens_total"], entry  # nothing generated, nothing charged

    # Counting far more than the budget's worth of tokens, again and again, leaves the budget untouched.
    for _ in range(3):
        client.messages.count_tokens(model=model, messages=[{"role": "user", "content": "word " * (2 * BUDGET)}])
    answer = client.messages.with_raw_response.create(model=model, max_tokens=5, messages=MESSAGES)
    assert answer.http_response.status_code == 200
    assert int(answer.headers["x-ratelimit-remaining"]) == BUDGET


def test_the_beta_query_claude_code_adds_is_accepted(gateway: Gateway) -> None:
    answer = httpx.post(
        f"{gateway.url}/anthropic/v1/messages/count_tokens?beta=true",
        json={"model": "claude-sonnet-4-6", "messages": MESSAGES},
        headers={"anthropic-version": "2023-06-01", "anthropic-beta": "claude-code-20250219"},
    )
    assert answer.status_code == 200 and answer.json() == {"input_tokens": 5}


def test_a_model_bedrock_cannot_count_is_a_clear_400_in_anthropics_shape(gateway: Gateway) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        _client(gateway).messages.count_tokens(model="amazon.nova-lite-v1:0", messages=MESSAGES)
    assert raised.value.body["error"]["message"] == (  # type: ignore[index]
        "ValidationException: The provided model doesn't support counting tokens."
    )


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gemini-2.5-flash", "azure-gpt-4o-mini"])
def test_backends_without_a_count_endpoint_answer_an_anthropic_error_not_a_made_up_count(
    gateway: Gateway, model: str
) -> None:
    answer = httpx.post(
        f"{gateway.url}/anthropic/v1/messages/count_tokens",
        json={"model": model, "messages": MESSAGES},
        headers={"anthropic-version": "2023-06-01"},
    )
    assert answer.status_code == 422
    error = answer.json()
    assert error["type"] == "error" and "/anthropic/v1/messages/count_tokens" in error["error"]["message"]


def test_a_count_request_without_messages_is_anthropics_400(gateway: Gateway) -> None:
    answer = httpx.post(
        f"{gateway.url}/anthropic/v1/messages/count_tokens",
        json={"messages": MESSAGES},
        headers={"anthropic-version": "2023-06-01"},
    )
    assert answer.status_code == 400 and answer.json()["error"]["message"] == "model: Field required"
