"""Tracing's answer text (``answer.text``) from the Anthropic-client translators: kept only when asked."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tokenvoy.config.model import Backend, Endpoint
from tokenvoy.extproc.translate.anthropic_to_anthropic import AnthropicToAnthropic
from tokenvoy.extproc.translate.anthropic_to_openai import AnthropicToOpenAI
from tokenvoy.extproc.translate.base import ClientAPI, ClientRequest

BACKEND = Backend("b", "OpenAI", None, "/v1", Endpoint("127.0.0.1", 1))


def _request(stream: bool, capture: bool) -> ClientRequest:
    body: dict[str, Any] = {
        "model": "m",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
    }
    return ClientRequest(
        api=ClientAPI.ANTHROPIC_MESSAGES,
        path="/anthropic/v1/messages",
        raw=orjson.dumps(body),
        body=body,
        model="m",
        stream=stream,
        needs_usage=True,
        capture_output=capture,
    )


def _sse(*events: tuple[str | None, dict[str, Any]]) -> bytes:
    out = b""
    for name, payload in events:
        out += (f"event: {name}\n".encode() if name else b"") + b"data: " + orjson.dumps(payload) + b"\n\n"
    return out


ANTHROPIC_MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude",
    "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}],
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 3, "output_tokens": 2},
}
ANTHROPIC_STREAM = _sse(
    ("message_start", {"type": "message_start", "message": {**ANTHROPIC_MESSAGE, "content": []}}),
    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello "}},
    ),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "there"}},
    ),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}),
    ("message_stop", {"type": "message_stop"}),
)
OPENAI_COMPLETION = {
    "id": "c1",
    "object": "chat.completion",
    "model": "gpt",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
}


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "gpt",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


OPENAI_STREAM = (
    _sse(
        (None, _chunk({"role": "assistant", "content": "Hello "})),
        (None, _chunk({"content": "there"})),
        (None, _chunk({}, "stop")),
        (
            None,
            {
                "id": "c1",
                "object": "chat.completion.chunk",
                "model": "gpt",
                "choices": [],
                "usage": OPENAI_COMPLETION["usage"],
            },
        ),
    )
    + b"data: [DONE]\n\n"
)

CASES = [
    (AnthropicToAnthropic, False, orjson.dumps(ANTHROPIC_MESSAGE)),
    (AnthropicToAnthropic, True, ANTHROPIC_STREAM),
    (AnthropicToOpenAI, False, orjson.dumps(OPENAI_COMPLETION)),
    (AnthropicToOpenAI, True, OPENAI_STREAM),
]


@pytest.mark.parametrize(("translator", "stream", "answer"), CASES, ids=["a2a", "a2a-stream", "a2o", "a2o-stream"])
def test_answer_text_is_kept_when_tracing_asks(translator: type, stream: bool, answer: bytes) -> None:
    kept = translator()
    kept.translate_request(_request(stream, capture=True), BACKEND, "m")
    # fed in small pieces, as Envoy may deliver it
    for start in range(0, len(answer), 7):
        kept.translate_response_body(answer[start : start + 7], start + 7 >= len(answer))
    assert kept.answer.text == "Hello there"
    assert kept.usage is not None and kept.usage.output == 2

    not_kept = translator()
    not_kept.translate_request(_request(stream, capture=False), BACKEND, "m")
    not_kept.translate_response_body(answer, True)
    assert not_kept.answer.text is None
