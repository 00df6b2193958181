"""What a streamed answer is charged before (or without) its provider's final usage (pure code).

OpenAI, Azure and Bedrock Converse report a stream's usage only in its last event, so a client that hangs
up mid-stream would otherwise be charged nothing, though the provider bills the prompt and every token it
generated. Envoy's rate-limit filter charges at stream end whatever dynamic metadata holds then, and
metadata can only be written while the ext_proc stream is open, so the router writes a *running charge*
as the answer streams (docs/budgets.md, "Streams cut short"):

* input: the provider's input count once it is known (Anthropic's ``message_start``, Gemini's
  ``usageMetadata``), else the request's prompt estimate (``estimate.prompt_tokens``);
* output: the provider's output count or the streamed text's estimate (UTF-8 bytes / 4, rounded up),
  whichever is larger, pre-charged up to the next multiple of :data:`HEADROOM_TOKENS` so the metadata is
  rewritten about once per 16 tokens instead of on every chunk.

Once the client-facing stream is complete (OpenAI's ``[DONE]`` or usage chunk, Anthropic's
``message_delta``/``message_stop``), the provider's own usage replaces the running charge.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from tokenvoy.extproc.estimate import BYTES_PER_TOKEN
from tokenvoy.extproc.sse import SSEParser
from tokenvoy.extproc.translate.base import ClientAPI
from tokenvoy.extproc.usage import TokenUsage

HEADROOM_TOKENS = 16


def output_estimate(text_bytes: int) -> int:
    """Output tokens for ``text_bytes`` UTF-8 bytes of streamed text (the prompt estimate's rule of thumb)."""
    return math.ceil(text_bytes / BYTES_PER_TOKEN)


def precharged_output(streamed_tokens: int, headroom: int = HEADROOM_TOKENS) -> int:
    """The output tokens to charge now: the next multiple of ``headroom`` strictly above what streamed, so
    the charge stays ahead of the stream until it has grown by that much."""
    return (streamed_tokens // headroom + 1) * headroom


def running_charge(reported: TokenUsage | None, prompt_estimate: int, output_tokens: int) -> TokenUsage:
    """The usage a stream is charged while its final usage is unknown: the provider's counts where it gave
    them, the estimates where they are larger (output) or the provider is silent (input)."""
    reported = reported or TokenUsage()
    charged_input = reported.input or prompt_estimate
    output = max(reported.output, output_tokens)
    return TokenUsage(
        input=charged_input,
        cached_input=min(reported.cached_input, charged_input),
        cache_creation_input=min(reported.cache_creation_input, charged_input),
        output=output,
        reasoning=min(reported.reasoning, output),
        total=charged_input + output,
    )


# Responses API events that end a stream with its usage (response.completed, or cut short by a limit/failure)
_RESPONSES_ENDS = frozenset({"response.completed", "response.incomplete", "response.failed"})


class StreamMeter:
    """Reads the client-facing stream (any backend's answer, once translated): the generated text's bytes
    (content, reasoning, tool-call arguments) and whether the stream reached its end with the usage."""

    __slots__ = ("_anthropic", "_gemini", "_parser", "_responses", "complete", "text_bytes")

    def __init__(self, api: ClientAPI) -> None:
        self._anthropic = api is ClientAPI.ANTHROPIC_MESSAGES
        self._responses = api is ClientAPI.OPENAI_RESPONSES
        self._gemini = api is ClientAPI.GEMINI_GENERATE
        self._parser = SSEParser()
        self.text_bytes = 0
        self.complete = False

    @property
    def output_tokens(self) -> int:
        return output_estimate(self.text_bytes)

    def feed(self, chunk: bytes, end_of_stream: bool = False) -> None:
        events = self._parser.feed(chunk)
        if end_of_stream:
            events.extend(self._parser.flush())
        for event in events:
            data = event.data
            if not data:
                continue
            if data == "[DONE]":
                self.complete = True
                continue
            try:
                payload = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            if isinstance(payload, dict):
                if self._anthropic:
                    self._anthropic_event(payload)
                elif self._responses:
                    self._responses_event(payload)
                elif self._gemini:
                    self._gemini_chunk(payload)
                else:
                    self._openai_chunk(payload)

    def _openai_chunk(self, chunk: dict[str, Any]) -> None:
        if isinstance(chunk.get("usage"), dict):
            self.complete = True
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            self._count(choice.get("text"))  # legacy completions
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                continue
            for key in ("content", "reasoning_content", "refusal"):
                self._count(delta.get(key))
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for call in calls:
                    function = call.get("function") if isinstance(call, dict) else None
                    if isinstance(function, dict):
                        self._count(function.get("name"))
                        self._count(function.get("arguments"))

    def _anthropic_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta")
            if isinstance(delta, dict):
                for key in ("text", "thinking", "partial_json"):
                    self._count(delta.get(key))
        elif kind == "content_block_start":
            block = event.get("content_block")
            if isinstance(block, dict):
                self._count(block.get("text"))
                self._count(block.get("name"))
        elif kind in ("message_delta", "message_stop"):
            self.complete = True

    def _responses_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if not isinstance(kind, str):
            return
        if kind.endswith(".delta"):  # output_text, refusal, function_call_arguments, reasoning summary text
            self._count(event.get("delta"))
        elif kind in _RESPONSES_ENDS:
            self.complete = True

    def _gemini_chunk(self, chunk: dict[str, Any]) -> None:
        candidates = chunk.get("candidates")
        if not isinstance(candidates, list):
            return
        for candidate in candidates:
            if not isinstance(candidate, dict):
                continue
            content = candidate.get("content")
            parts = content.get("parts") if isinstance(content, dict) else None
            for part in parts if isinstance(parts, list) else ():
                if not isinstance(part, dict):
                    continue
                self._count(part.get("text"))
                call = part.get("functionCall")
                if isinstance(call, dict):
                    self._count(call.get("name"))
                    args = call.get("args")
                    if args is not None:
                        self._count(orjson.dumps(args).decode())
            # Gemini sends its usage with the chunk that carries the finish reason
            if candidate.get("finishReason") and isinstance(chunk.get("usageMetadata"), dict):
                self.complete = True

    def _count(self, value: object) -> None:
        if isinstance(value, str) and value:
            self.text_bytes += len(value) if value.isascii() else len(value.encode())
