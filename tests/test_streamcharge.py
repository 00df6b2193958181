"""The running charge of a stream cut short: the arithmetic, and what the meter reads of each client API."""

from __future__ import annotations

import orjson
import pytest

from tokenvoy.extproc.streamcharge import (
    HEADROOM_TOKENS,
    StreamMeter,
    output_estimate,
    precharged_output,
    running_charge,
)
from tokenvoy.extproc.translate.base import ClientAPI
from tokenvoy.extproc.usage import TokenUsage


def test_without_any_provider_usage_the_prompt_estimate_and_the_streamed_output_are_charged() -> None:
    charge = running_charge(None, prompt_estimate=20_000, output_tokens=3)
    assert (charge.input, charge.output, charge.total) == (20_000, 3, 20_003)


def test_the_providers_input_count_replaces_the_estimate_once_it_is_known() -> None:
    reported = TokenUsage(input=1200, cached_input=1000, output=1, total=1201)  # Anthropic's message_start
    charge = running_charge(reported, prompt_estimate=900, output_tokens=40)
    assert (charge.input, charge.cached_input, charge.output, charge.total) == (1200, 1000, 40, 1240)


def test_a_provider_output_count_above_the_text_estimate_wins() -> None:
    reported = TokenUsage(input=10, output=75, reasoning=60, total=85)  # Gemini: thoughts are not streamed text
    charge = running_charge(reported, prompt_estimate=99, output_tokens=16)
    assert (charge.input, charge.output, charge.reasoning, charge.total) == (10, 75, 60, 85)


@pytest.mark.parametrize(("text_bytes", "tokens"), [(0, 0), (1, 1), (4, 1), (5, 2), (400, 100)])
def test_output_is_estimated_at_four_bytes_per_token_rounded_up(text_bytes: int, tokens: int) -> None:
    assert output_estimate(text_bytes) == tokens


@pytest.mark.parametrize(("streamed", "precharged"), [(0, 16), (1, 16), (15, 16), (16, 32), (17, 32), (100, 112)])
def test_the_precharge_stays_strictly_ahead_of_the_stream(streamed: int, precharged: int) -> None:
    assert precharged_output(streamed) == precharged
    assert streamed < precharged <= streamed + HEADROOM_TOKENS


def _sse(*payloads: object, event: str | None = None) -> bytes:
    out = b""
    for payload in payloads:
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        out += (f"event: {event}\n".encode() if event else b"") + b"data: " + data + b"\n\n"
    return out


def test_openai_chunks_count_content_reasoning_and_tool_arguments_until_done() -> None:
    meter = StreamMeter(ClientAPI.OPENAI_CHAT)
    chunk = {"choices": [{"index": 0, "delta": {"content": "héllo"}}], "usage": None}  # é is two bytes
    reasoning = {"choices": [{"delta": {"reasoning_content": "abcd"}}]}
    tool = {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": '{"a":1}'}}]}}]}
    stream = _sse(chunk, reasoning, tool)
    meter.feed(stream[:7])  # split anywhere
    meter.feed(stream[7:])
    assert meter.text_bytes == 6 + 4 + 1 + 7
    assert not meter.complete
    meter.feed(_sse(b"[DONE]"))
    assert meter.complete


def test_an_openai_usage_chunk_completes_the_stream() -> None:
    meter = StreamMeter(ClientAPI.OPENAI_CHAT)
    meter.feed(_sse({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}))
    assert meter.complete


def test_legacy_completions_count_choice_text() -> None:
    meter = StreamMeter(ClientAPI.OPENAI_COMPLETIONS)
    meter.feed(_sse({"choices": [{"text": "12345678"}]}))
    assert (meter.text_bytes, meter.output_tokens) == (8, 2)


def test_anthropic_events_count_text_thinking_and_tool_json_until_message_delta() -> None:
    meter = StreamMeter(ClientAPI.ANTHROPIC_MESSAGES)
    meter.feed(_sse({"type": "message_start", "message": {"usage": {"input_tokens": 5}}}, event="message_start"))
    meter.feed(_sse({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "abc"}}))
    meter.feed(_sse({"type": "content_block_delta", "delta": {"type": "thinking_delta", "thinking": "de"}}))
    meter.feed(_sse({"type": "content_block_delta", "delta": {"type": "input_json_delta", "partial_json": "{}"}}))
    assert (meter.text_bytes, meter.complete) == (7, False)
    meter.feed(_sse({"type": "message_delta", "usage": {"output_tokens": 9}}, event="message_delta"))
    assert meter.complete


def test_an_error_event_or_garbage_neither_counts_nor_completes() -> None:
    meter = StreamMeter(ClientAPI.OPENAI_CHAT)
    meter.feed(_sse({"error": {"message": "boom"}}, b"not json"), end_of_stream=True)
    assert (meter.text_bytes, meter.complete) == (0, False)


def test_responses_events_count_text_and_call_arguments_until_response_completed() -> None:
    meter = StreamMeter(ClientAPI.OPENAI_RESPONSES)
    meter.feed(_sse({"type": "response.created", "response": {"id": "resp_1"}}, event="response.created"))
    meter.feed(_sse({"type": "response.output_text.delta", "delta": "abcd"}, event="response.output_text.delta"))
    meter.feed(
        _sse(
            {"type": "response.function_call_arguments.delta", "delta": '{"a":1}'},
            event="response.function_call_arguments.delta",
        )
    )
    meter.feed(_sse({"type": "response.output_text.done", "text": "abcd"}))  # a recap, not more output
    assert (meter.text_bytes, meter.complete) == (4 + 7, False)
    meter.feed(_sse({"type": "response.completed", "response": {"usage": {"input_tokens": 3}}}))
    assert meter.complete


def test_gemini_chunks_count_text_and_function_calls_until_the_finish_reason_with_usage() -> None:
    meter = StreamMeter(ClientAPI.GEMINI_GENERATE)
    text = {"candidates": [{"content": {"role": "model", "parts": [{"text": "hello"}]}}]}
    call = {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": {"a": 1}}}]}}]}
    meter.feed(_sse(text, call))
    assert (meter.text_bytes, meter.complete) == (5 + 1 + 7, False)
    end = {"candidates": [{"content": {"parts": [{"text": ""}]}, "finishReason": "STOP"}], "usageMetadata": {}}
    meter.feed(_sse(end))
    assert meter.complete
