"""A client that hangs up mid-stream still pays: through real Envoy, for every backend schema, in both modes.

OpenAI, Azure and Bedrock Converse report a stream's usage only in its last event; before this rule, ten
20k-token prompts cut at the first content event left the budget untouched (and reservation mode refunded
the estimate). Now a cut stream is charged its input tokens (the provider's count once its stream gave one,
else the gateway's estimate) plus its output so far, pre-charged up to 16 tokens ahead (docs/budgets.md).
The charge is read from the ratelimit process's own counters; what the fake provider reported, from its
``/__testupstream/usage`` hook.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import orjson
import pytest
import yaml

from tests.integration.conftest import Gateway, free_port, start_gateway
from tokenvoy.config.defaults import default_config_yaml
from tokenvoy.extproc.estimate import prompt_tokens
from tokenvoy.extproc.streamcharge import HEADROOM_TOKENS

BUDGET = 10_000_000
PROMPT = "tokens " * 20_000  # 20k words: the fake counts 20k prompt tokens, the gateway estimates 35k
MAX_TOKENS = 40
PACED = {"x-testupstream-chunk-delay-ms": "300"}  # 40 words at 0.3 s each: the cut comes long before the usage
OPENAI_CLIENT_MODELS = {
    "OpenAI": "gpt-4o-mini",
    "AzureOpenAI": "azure-gpt-4o-mini",
    "Anthropic": "claude-sonnet-4-6",
    "AWSAnthropic": "anthropic.claude-haiku-4-5-20251001-v1:0",
    "AWSBedrock": "amazon.nova-lite-v1:0",
    "GCPVertexAI": "gemini-2.5-flash",
}
ANTHROPIC_CLIENT_MODELS = {
    schema: OPENAI_CLIENT_MODELS[schema] for schema in ("Anthropic", "AWSAnthropic", "AWSBedrock", "OpenAI")
}
# Schemas whose stream reports the input count before any content (Anthropic's message_start, Gemini's
# usageMetadata on every chunk): the provider's count is charged; for the others, the gateway's estimate.
EARLY_INPUT = {"Anthropic", "AWSAnthropic", "GCPVertexAI"}


def _config(listener_port: int, fake_port: int, mode: str) -> str:
    documents = list(yaml.safe_load_all(default_config_yaml({}, showcase=True)))
    for doc in documents:
        if doc["kind"] == "Gateway":
            doc["spec"]["listeners"][0]["port"] = listener_port
        elif doc["kind"] == "Backend":
            doc["spec"]["endpoints"][0]["ip"]["port"] = fake_port
        elif doc["kind"] == "BackendTrafficPolicy":
            doc["spec"]["rateLimit"]["global"]["rules"][0]["limit"]["requests"] = BUDGET
            if mode == "reservation":
                doc["metadata"]["annotations"] = {"tokenvoy.io/budget-mode": "reservation"}
    return yaml.safe_dump_all(documents, sort_keys=False)


@pytest.fixture(scope="module", params=["check", "reservation"])
def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    fake_port = free_port()
    config = _config(free_port(), fake_port, request.param)
    running = start_gateway(tmp_path_factory.mktemp(f"cut-{request.param}"), config_text=config, fake_port=fake_port)
    try:
        yield running
    finally:
        running.stop()


def _counters(gateway: Gateway) -> tuple[float, float]:
    """(hits, refunded hits) over every budget rule, from the ratelimit process's /metrics."""
    hits = refunded = 0.0
    for line in httpx.get(f"{gateway.ratelimit_metrics_url}/metrics").text.splitlines():
        if line.startswith("tokenvoy_ratelimit_hits_total{"):
            hits += float(line.rsplit(" ", 1)[1])
        elif line.startswith("tokenvoy_ratelimit_refunded_hits_total{"):
            refunded += float(line.rsplit(" ", 1)[1])
    return hits, refunded


def _charged_since(gateway: Gateway, before: tuple[float, float], reservation: bool) -> int:
    """What the request(s) since ``before`` were charged, once the stream-done call has arrived (it is
    fire-and-forget): hits minus refunds, stable over three reads (and the refund seen, in reservation mode)."""
    deadline = time.monotonic() + 15
    seen: list[float] = []
    while time.monotonic() < deadline:
        hits, refunded = _counters(gateway)
        settled = refunded > before[1] if reservation else hits > before[0]
        seen = [*seen[-2:], hits - refunded] if settled else []
        if len(seen) == 3 and len(set(seen)) == 1:
            return int(seen[0] - (before[0] - before[1]))
        time.sleep(0.3)
    hits, refunded = _counters(gateway)
    return int(hits - refunded - (before[0] - before[1]))


def _reservation(gateway: Gateway) -> bool:
    return "budget-mode: reservation" in (gateway.run_dir.parent / "gateway.yaml").read_text()


def _reported(gateway: Gateway, user: str) -> dict[str, int]:
    return httpx.get(f"{gateway.fake_url}/__testupstream/usage").json()["by_user"][user]


def _cut_openai(gateway: Gateway, model: str, user: str) -> str:
    """Stream a chat completion and hang up at the first content chunk; returns the content seen."""
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": MAX_TOKENS, "stream": True}
    headers = {"x-user-id": user, **PACED}
    with (
        httpx.Client(base_url=gateway.url, timeout=30) as http,
        http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as reply,
    ):
        assert reply.status_code == 200, reply.read()
        for line in reply.iter_lines():
            if line.startswith("data: {"):
                chunk = orjson.loads(line[6:])
                content = chunk["choices"][0]["delta"].get("content") if chunk.get("choices") else None
                assert chunk.get("usage") is None, "the stream must be cut before its usage"
                if content:
                    return content  # leaving the block closes the connection mid-stream
    raise AssertionError("the stream ended without content")


def _cut_anthropic(gateway: Gateway, model: str, user: str) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": MAX_TOKENS, "stream": True}
    headers = {"x-user-id": user, "anthropic-version": "2023-06-01", **PACED}
    with (
        httpx.Client(base_url=gateway.url, timeout=30) as http,
        http.stream("POST", "/anthropic/v1/messages", json=body, headers=headers) as reply,
    ):
        assert reply.status_code == 200, reply.read()
        for line in reply.iter_lines():
            if line.startswith("data: {"):
                event = orjson.loads(line[6:])
                assert event.get("type") != "message_delta", "the stream must be cut before its usage"
                if event.get("type") == "content_block_delta" and event["delta"].get("text"):
                    return event["delta"]["text"]
    raise AssertionError("the stream ended without content")


def _expected_input(gateway: Gateway, user: str, schema: str) -> int:
    if schema in EARLY_INPUT:
        return _reported(gateway, user)["input_tokens"]
    return prompt_tokens({"messages": [{"role": "user", "content": PROMPT}]})


@pytest.mark.parametrize("schema", list(OPENAI_CLIENT_MODELS))
def test_an_openai_client_that_hangs_up_mid_stream_pays_its_prompt_and_output_so_far(
    gateway: Gateway, schema: str
) -> None:
    user = f"cut-{schema}-{uuid.uuid4()}"
    before = _counters(gateway)
    _cut_openai(gateway, OPENAI_CLIENT_MODELS[schema], user)
    charged = _charged_since(gateway, before, _reservation(gateway))
    expected_input = _expected_input(gateway, user, schema)
    assert expected_input + 1 <= charged <= expected_input + HEADROOM_TOKENS, (
        f"{schema}: charged {charged}, input {expected_input}"
    )


@pytest.mark.parametrize("schema", list(ANTHROPIC_CLIENT_MODELS))
def test_an_anthropic_client_that_hangs_up_mid_stream_pays_its_prompt_and_output_so_far(
    gateway: Gateway, schema: str
) -> None:
    user = f"cut-anthropic-{schema}-{uuid.uuid4()}"
    before = _counters(gateway)
    _cut_anthropic(gateway, ANTHROPIC_CLIENT_MODELS[schema], user)
    charged = _charged_since(gateway, before, _reservation(gateway))
    expected_input = _expected_input(gateway, user, schema)
    assert expected_input + 1 <= charged <= expected_input + HEADROOM_TOKENS, (
        f"{schema}: charged {charged}, input {expected_input}"
    )


def test_ten_big_prompts_cut_at_the_first_content_event_are_all_charged(gateway: Gateway) -> None:
    """The issue's reproduction: ten 20k-word prompts to an OpenAI-schema backend, each cut early."""
    user = f"cut-ten-{uuid.uuid4()}"
    before = _counters(gateway)
    for _ in range(10):
        _cut_openai(gateway, "gpt-4o-mini", user)
    charged = _charged_since(gateway, before, _reservation(gateway))
    estimate = prompt_tokens({"messages": [{"role": "user", "content": PROMPT}]})
    assert 10 * (estimate + 1) <= charged <= 10 * (estimate + HEADROOM_TOKENS)


@pytest.mark.parametrize("schema", list(OPENAI_CLIENT_MODELS))
def test_a_stream_read_to_its_end_is_charged_exactly_the_providers_usage(gateway: Gateway, schema: str) -> None:
    """The running charge must give way to the provider's usage: no estimate left behind."""
    user = f"whole-{schema}-{uuid.uuid4()}"
    before = _counters(gateway)
    body = {
        "model": OPENAI_CLIENT_MODELS[schema],
        "messages": [{"role": "user", "content": "hello there, " * 50}],
        "max_tokens": MAX_TOKENS,
        "stream": True,
    }
    with (
        httpx.Client(base_url=gateway.url, timeout=30) as http,
        http.stream("POST", "/v1/chat/completions", json=body, headers={"x-user-id": user}) as reply,
    ):
        assert reply.status_code == 200
        lines = list(reply.iter_lines())
    assert "data: [DONE]" in lines
    charged = _charged_since(gateway, before, _reservation(gateway))
    assert charged == _reported(gateway, user)["total_tokens"], schema
