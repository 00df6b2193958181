"""Token usage in one provider-neutral shape (DESIGN.md §4 normalisation)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class TokenUsage:
    """``input`` already includes cached and cache-creation tokens; ``total`` = input + output."""

    input: int = 0
    cached_input: int = 0
    cache_creation_input: int = 0
    output: int = 0
    reasoning: int = 0
    total: int = 0

    @classmethod
    def from_openai(cls, usage: dict) -> TokenUsage:
        """OpenAI's ``prompt_tokens`` already count cached tokens; reasoning is part of completion."""
        prompt = _int(usage.get("prompt_tokens"))
        completion = _int(usage.get("completion_tokens"))
        prompt_details = _mapping(usage.get("prompt_tokens_details"))
        completion_details = _mapping(usage.get("completion_tokens_details"))
        total = _int(usage.get("total_tokens")) or prompt + completion
        return cls(
            input=prompt,
            cached_input=_int(prompt_details.get("cached_tokens")),
            output=completion,
            reasoning=_int(completion_details.get("reasoning_tokens")),
            total=total,
        )


def _mapping(value: object) -> dict:
    return value if isinstance(value, dict) else {}


# A bound on any one token count read from a provider: far beyond any real answer, and sums of such counts
# still encode as JSON (orjson refuses integers beyond 64 bits, which a hostile count would otherwise reach).
MAX_TOKEN_COUNT = 2**53


def token_count(value: object) -> int:
    """A provider's token count: a positive integer (at most ``MAX_TOKEN_COUNT``), else 0."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return min(value, MAX_TOKEN_COUNT)
    return 0


_int = token_count
