"""OpenAI Responses API facts every Responses translator shares: its usage object and its stream's events.

The Responses API (``POST /v1/responses``) reports usage as ``input_tokens`` (cached tokens included, their
count in ``input_tokens_details.cached_tokens``), ``output_tokens`` (reasoning included, in
``output_tokens_details.reasoning_tokens``) and ``total_tokens``. A stream carries it in the ``response``
object of its terminal event (``response.completed``, or ``response.incomplete`` / ``response.failed``).
"""

from __future__ import annotations

from typing import Any

import orjson

from tokenvoy.extproc.usage import TokenUsage

RESPONSES_PATH = "/responses"
# The events whose ``response`` object is final and carries ``usage`` (OpenAI's stream ends with one of them).
TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _details(usage: dict[str, Any], key: str) -> dict[str, Any]:
    value = usage.get(key)
    return value if isinstance(value, dict) else {}


def responses_usage(usage: dict[str, Any]) -> TokenUsage:
    """The gateway's usage from a Responses ``usage`` object (``input`` already counts cached tokens)."""
    input_tokens = _count(usage.get("input_tokens"))
    output_tokens = _count(usage.get("output_tokens"))
    return TokenUsage(
        input=input_tokens,
        cached_input=_count(_details(usage, "input_tokens_details").get("cached_tokens")),
        output=output_tokens,
        reasoning=_count(_details(usage, "output_tokens_details").get("reasoning_tokens")),
        total=_count(usage.get("total_tokens")) or input_tokens + output_tokens,
    )


def usage_object(usage: TokenUsage) -> dict[str, Any]:
    """The Responses ``usage`` object for the gateway's usage (what a translated answer reports)."""
    return {
        "input_tokens": usage.input,
        "input_tokens_details": {"cached_tokens": usage.cached_input},
        "output_tokens": usage.output,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning},
        "total_tokens": usage.total or usage.input + usage.output,
    }


def output_text(response: dict[str, Any]) -> str:
    """The concatenated ``output_text`` parts of a Response's message items (the SDK's ``output_text``)."""
    texts = []
    output = response.get("output")
    for item in output if isinstance(output, list) else ():
        if not isinstance(item, dict) or item.get("type") != "message":
            continue
        content = item.get("content")
        for part in content if isinstance(content, list) else ():
            if isinstance(part, dict) and part.get("type") == "output_text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
    return "".join(texts)


def sse_event(payload: dict[str, Any]) -> bytes:
    """One Responses stream event as OpenAI frames it: ``event: <type>`` then its JSON ``data``."""
    return b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
