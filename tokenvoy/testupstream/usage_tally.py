"""What the fake provider reported as token usage, summed per ``x-user-id`` (the test hook
``GET /__testupstream/usage``), so a benchmark can compare what the gateway charged with what the
provider billed.

A request is counted when its answer is made: a stream's whole usage counts even if the client hung up
before its last event (the fake, like a real provider, generated it). Usage is read from the answer's own
documents, whatever the schema: OpenAI's ``usage`` (``prompt_tokens``/``completion_tokens``), Anthropic's
(``message_start`` input, ``message_delta`` cumulative output), Bedrock Converse's
(``inputTokens``/``outputTokens``) and Gemini's ``usageMetadata`` (the last one of a stream).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

USER_HEADER = "x-user-id"


@dataclass(slots=True)
class Totals:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        total = self.input_tokens + self.output_tokens
        return {
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": total,
        }


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def reported_usage(documents: Iterable[Any]) -> tuple[int, int]:
    """``(input, output)`` tokens an answer reports, from its JSON documents in order (a body, or a
    stream's events; Bedrock's ``(event type, payload)`` pairs are read by their payload)."""
    input_tokens = output_tokens = 0
    for document in documents:
        if isinstance(document, tuple) and len(document) == 2:
            document = document[1]
        if not isinstance(document, dict):
            continue
        message = document.get("message")
        usage = document.get("usage")
        if isinstance(message, dict) and isinstance(message.get("usage"), dict):
            usage = message["usage"]  # Anthropic's message_start
        if isinstance(usage, dict):
            if "prompt_tokens" in usage or "completion_tokens" in usage:
                input_tokens, output_tokens = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
            elif "inputTokens" in usage:
                input_tokens, output_tokens = _count(usage.get("inputTokens")), _count(usage.get("outputTokens"))
            else:
                anthropic_input = sum(
                    _count(usage.get(k))
                    for k in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
                )
                input_tokens = anthropic_input or input_tokens  # a message_delta may repeat it, or not
                output_tokens = _count(usage.get("output_tokens")) or output_tokens
        metadata = document.get("usageMetadata")
        if isinstance(metadata, dict):
            input_tokens = _count(metadata.get("promptTokenCount"))
            output_tokens = _count(metadata.get("candidatesTokenCount")) + _count(metadata.get("thoughtsTokenCount"))
    return input_tokens, output_tokens


@dataclass
class UsageTally:
    total: Totals = field(default_factory=Totals)
    by_user: dict[str, Totals] = field(default_factory=dict)

    def record(self, headers: dict[str, str], documents: Iterable[Any]) -> None:
        input_tokens, output_tokens = reported_usage(documents)
        user = headers.get(USER_HEADER, "")
        if user not in self.by_user and len(self.by_user) >= 10_000:
            user = "(other)"  # bounded: a long soak with many users still answers in one page
        for totals in (self.total, self.by_user.setdefault(user, Totals())):
            totals.requests += 1
            totals.input_tokens += input_tokens
            totals.output_tokens += output_tokens

    def as_dict(self) -> dict[str, Any]:
        return {"total": self.total.as_dict(), "by_user": {u: t.as_dict() for u, t in self.by_user.items()}}

    def clear(self) -> None:
        self.total = Totals()
        self.by_user.clear()
