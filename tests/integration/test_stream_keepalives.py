"""Keep-alives and the early input estimate, through real Envoy: what keeps an agent waiting on long thinking.

Anthropic sends ``ping`` events while a model thinks; an OpenAI-shaped client (chat completions, the
Responses API) must hear them too, as SSE comments its SDK skips, or its read timeout ends the stream. An
Anthropic client on a backend that reports usage only at the end (Azure, Gemini) gets the gateway's estimate
of the prompt in ``message_start``, which Claude Code reads to size its context.
"""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from tests.integration.conftest import Gateway, free_port, gateway_config, start_gateway
from tokenvoy.testupstream.openai_chat import WORDS

PROMPT = "Summarise this log. " + "GET /v1/models 200 0.4ms\n" * 100


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    listener_port, fake_port = free_port(), free_port()
    config = gateway_config(listener_port, fake_port, 10_000_000, showcase=True)
    running = start_gateway(tmp_path_factory.mktemp("keepalives"), config_text=config, fake_port=fake_port)
    try:
        yield running
    finally:
        running.stop()


def _raw_stream(gateway: Gateway, path: str, body: dict) -> bytes:
    headers = {"authorization": "Bearer unused", "x-user-id": "keepalive"}
    with httpx.stream("POST", f"{gateway.url}{path}", json=body, headers=headers, timeout=30) as reply:
        assert reply.status_code == 200, reply.read()
        return reply.read()


@pytest.mark.parametrize("model", ["claude-sonnet-4-6", "anthropic.claude-haiku-4-5-20251001-v1:0"])
def test_anthropic_pings_reach_a_chat_completions_client_as_comments(gateway: Gateway, model: str) -> None:
    body = {"model": model, "stream": True, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    raw = _raw_stream(gateway, "/v1/chat/completions", body)
    assert b"\n\n: ping\n\n" in raw or raw.startswith(b": ping\n\n")  # the ping the provider sent, as a comment
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", default_headers={"x-user-id": "ka"})
    text = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(**body)
        if chunk.choices  # the SDK skips the comments: only chunks come out
    )
    assert text and " ".join(WORDS).startswith(text)


def test_anthropic_pings_reach_a_responses_client_as_comments(gateway: Gateway) -> None:
    body = {"model": "claude-sonnet-4-6", "stream": True, "max_output_tokens": 20, "input": "hi"}
    raw = _raw_stream(gateway, "/v1/responses", body)
    assert b"\n\n: ping\n\n" in raw or raw.startswith(b": ping\n\n")
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", default_headers={"x-user-id": "ka"})
    kinds = [event.type for event in client.responses.create(**body)]
    assert kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete")


@pytest.mark.parametrize("model", ["azure-gpt-4o-mini", "gemini-2.5-flash"])
def test_an_anthropic_client_gets_the_input_estimate_in_message_start(gateway: Gateway, model: str) -> None:
    client = anthropic.Anthropic(base_url=f"{gateway.url}/anthropic", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": PROMPT}]
    with client.messages.stream(model=model, max_tokens=20, messages=messages) as stream:
        events = list(stream)
        final = stream.get_final_message()
    start = events[0]
    assert start.type == "message_start"
    estimate = start.message.usage.input_tokens
    assert estimate >= len(PROMPT.encode()) // 4  # bytes / 4, as for budget reservations
    assert final.usage.input_tokens > 0  # the provider's own count, from message_delta
    assert final.content[0].text
