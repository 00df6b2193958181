"""Token usage in one provider-neutral shape."""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

# The most tokens one usage field is charged: far above any context window (~10^6 today), far below what
# Envoy turns into a wrong hits_addend (a count of 2^64 reached the budget as 0, 10^30 as 1).
MAX_TOKENS = 10**9
_WARNED: set[tuple[str, str]] = set()  # (field, kind) already logged: one warning per kind, not per message


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
        prompt = token_count(usage.get("prompt_tokens"), "prompt_tokens")
        completion = token_count(usage.get("completion_tokens"), "completion_tokens")
        prompt_details = _mapping(usage.get("prompt_tokens_details"))
        completion_details = _mapping(usage.get("completion_tokens_details"))
        total = token_count(usage.get("total_tokens"), "total_tokens") or prompt + completion
        return cls(
            input=prompt,
            cached_input=token_count(prompt_details.get("cached_tokens"), "cached_tokens"),
            output=completion,
            reasoning=token_count(completion_details.get("reasoning_tokens"), "reasoning_tokens"),
            total=total,
        )


def _mapping(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def token_count(value: object, field: str) -> int:
    """A provider's token count as charged: a positive integer, clamped to ``MAX_TOKENS``; anything else 0.

    A count out of range (negative, above the cap) is a provider bug or a hostile upstream: it is logged
    once per field and kind, as a warning, and charged within range rather than wrapped by Envoy."""
    if not isinstance(value, int) or isinstance(value, bool):
        return 0
    if value > MAX_TOKENS:
        _warn_once(field, "above", value)
        return MAX_TOKENS
    if value < 0:
        _warn_once(field, "negative", value)
        return 0
    return value


def _warn_once(field: str, kind: str, value: int) -> None:
    if (field, kind) in _WARNED:
        return
    _WARNED.add((field, kind))
    shown = str(value) if len(str(value)) <= 40 else f"~10^{len(str(abs(value))) - 1}"
    charged = MAX_TOKENS if kind == "above" else 0
    log.warning(
        "provider usage %s = %s is out of range (0..%d): charged %d; further such values are not logged",
        field,
        shown,
        MAX_TOKENS,
        charged,
    )
