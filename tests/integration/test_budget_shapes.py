"""The documented budget shapes (examples/budget-shapes.yaml) enforced through real Envoy."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import yaml
from openai import OpenAI

from tests.integration.conftest import Gateway, start_gateway
from tests.ports import free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "budget-shapes.yaml"
GPT4O_TOKENS = 20  # per user per hour for gpt-4o (rule 1)
MICRO_USD = 300  # per user per day (rule 3)
MESSAGES = [{"role": "user", "content": "hello there gateway"}]  # 3 prompt tokens at the fake


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The example as shipped, with small limits on the two rules under test and free ports."""
    fake_port = free_port()
    documents = list(yaml.safe_load_all(EXAMPLE.read_text()))
    for doc in documents:
        if doc["kind"] == "Backend":
            doc["spec"]["endpoints"][0]["ip"]["port"] = fake_port
        if doc["kind"] == "BackendTrafficPolicy":
            rules = doc["spec"]["rateLimit"]["global"]["rules"]
            rules[1]["limit"]["requests"] = GPT4O_TOKENS
            rules[3]["limit"]["requests"] = MICRO_USD
    running = start_gateway(
        tmp_path_factory.mktemp("shapes"), config_text=yaml.safe_dump_all(documents), fake_port=fake_port
    )
    try:
        yield running
    finally:
        running.stop()


def _spend_until_429(client: OpenAI, model: str, max_tokens: int, limit: int = 10) -> tuple[int, openai.RateLimitError]:
    """Send requests until one is refused; returns how many were served and the refusal."""
    for served in range(limit):
        try:
            client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=max_tokens)
        except openai.RateLimitError as refused:
            return served, refused
    raise AssertionError(f"no 429 after {limit} requests for {model}")


def _client(gateway: Gateway, **headers: str) -> OpenAI:
    return OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", default_headers=headers, max_retries=0)


# The charge lands when a response ends, after the client has its answer: the next request's check can
# run before it, so each count below may be one higher (envoyproxy/ratelimit semantics, documented).


def test_per_model_limit_stops_one_model_and_not_the_other(gateway: Gateway) -> None:
    user = _client(gateway, **{"x-user-id": f"model-{uuid.uuid4()}"})
    # gpt-4o, 1 output token: 4 tokens (24 micro-dollars) a request; 6 * 4 = 24 > 20 tokens -> 7th refused
    served, refused = _spend_until_429(user, "gpt-4o", max_tokens=1, limit=20)
    assert served in (6, 7)
    assert refused.response.headers["x-ratelimit-remaining"] == "0"
    assert f"{GPT4O_TOKENS};w=3600" in refused.response.headers["x-ratelimit-limit"]
    # the same user's other model is not limited by the gpt-4o rule (and 7 * 24 micro-dollars < 300)
    reply = user.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=1)
    assert reply.choices[0].message.content


def test_a_dollar_budget_is_charged_from_the_cel_cost(gateway: Gateway) -> None:
    user = _client(gateway, **{"x-user-id": f"usd-{uuid.uuid4()}"})
    # gpt-4o-mini has no token rule of its own; 3*3 + 16*15 = 249 micro-dollars a request of 300:
    # the first is served, the second too (249 <= 300 at its check), the third is refused (498 > 300)
    served, refused = _spend_until_429(user, "gpt-4o-mini", max_tokens=16)
    assert served in (2, 3)
    assert f"{MICRO_USD};w=86400" in refused.response.headers["x-ratelimit-limit"]
