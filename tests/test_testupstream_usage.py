"""The fake provider's usage tally (``GET /__testupstream/usage``): what each schema's answers reported."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tokenvoy.testupstream.server import BackgroundServer, run_in_thread
from tokenvoy.testupstream.usage_tally import reported_usage


@pytest.fixture(scope="module")
def fake() -> Iterator[BackgroundServer]:
    with run_in_thread() as server:
        yield server


def test_openai_plain_and_streamed_answers_are_summed_per_user(fake: BackgroundServer) -> None:
    httpx.delete(f"{fake.url}/__testupstream/usage")
    body = {"model": "m", "messages": [{"role": "user", "content": "one two three"}], "max_tokens": 5}
    plain = httpx.post(f"{fake.url}/v1/chat/completions", json=body, headers={"x-user-id": "ann"}).json()
    stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
    httpx.post(f"{fake.url}/v1/chat/completions", json=stream, headers={"x-user-id": "bob"})
    httpx.post(f"{fake.url}/v1/chat/completions", json=body, headers={"x-testupstream-status": "503"})
    tally = httpx.get(f"{fake.url}/__testupstream/usage").json()
    assert tally["by_user"]["ann"] == {
        "requests": 1,
        "input_tokens": plain["usage"]["prompt_tokens"],
        "output_tokens": plain["usage"]["completion_tokens"],
        "total_tokens": plain["usage"]["total_tokens"],
    }
    assert tally["by_user"]["bob"]["total_tokens"] == plain["usage"]["total_tokens"]
    assert tally["total"]["requests"] == 2, "a forced error reports no usage"


def test_anthropic_streams_take_input_from_message_start_and_the_last_output() -> None:
    events = [
        {"type": "message_start", "message": {"usage": {"input_tokens": 7, "cache_read_input_tokens": 3}}},
        {"type": "content_block_delta", "delta": {"text": "hi"}},
        {"type": "message_delta", "usage": {"output_tokens": 5}},
    ]
    assert reported_usage(events) == (10, 5)


def test_bedrock_and_gemini_shapes_are_read() -> None:
    bedrock = [("messageStart", {"role": "assistant"}), ("metadata", {"usage": {"inputTokens": 4, "outputTokens": 2}})]
    assert reported_usage(bedrock) == (4, 2)
    gemini = [
        {"usageMetadata": {"promptTokenCount": 6, "candidatesTokenCount": 1}},
        {"usageMetadata": {"promptTokenCount": 6, "candidatesTokenCount": 3, "thoughtsTokenCount": 2}},
    ]
    assert reported_usage(gemini) == (6, 5)
