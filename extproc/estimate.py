"""Reservation mode: the cost a request may at most consume, estimated before it is sent (pure code).

A budget in reservation mode (``tokenvoy.io/budget-mode: reservation``) reserves this estimate at request
time and, at stream done, refunds it and charges the actual (docs/ratelimit.md, docs/budgets.md). The
estimate is in the budget's own unit: the route's ``llmRequestCosts`` entry that the budget is charged
from is evaluated on an estimated usage:

* input: the UTF-8 bytes of the prompt text divided by 4, rounded up, plus 4 per message (a tokenizer-free
  rule of thumb; English averages ~4 bytes per token, code and other scripts fewer, so this can be low);
* output: ``max_completion_tokens``, else ``max_tokens``, else ``max_output_tokens`` (times ``n``), else the
  Gemini API's ``generationConfig.maxOutputTokens`` (times ``candidateCount``), else
  the budget's ``tokenvoy.io/default-max-tokens`` (4096 by default); 0 for embeddings, which have none.

Token-array inputs (``input``/``prompt`` of embeddings and legacy completions) count one token per id.

The output cap is exact (a provider never returns more); the prompt part is a guess, so the bound
"admitted ≤ B + C" holds for requests whose real prompt tokens do not exceed the guess.

What extproc needs per route is computed once per configuration (:func:`route_reservations`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tokenvoy.config.model import GatewayConfig
from tokenvoy.extproc.costs import CallContext
from tokenvoy.extproc.usage import TokenUsage

BYTES_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
_OUTPUT_CAP_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


@dataclass(frozen=True)
class Reservation:
    """What to reserve on one route: ``(reserved metadata key, cost key charged at stream done)`` pairs."""

    keys: tuple[tuple[str, str], ...]
    default_max_tokens: int


def route_reservations(config: GatewayConfig) -> dict[str, Reservation]:
    """Route name → its reservation, for routes that some reservation-mode budget applies to.

    Computed once per config, by ``Runtime``."""
    plans: dict[str, Reservation] = {}
    for route in config.routes:
        keys: dict[str, str] = {}
        default_max_tokens = 0
        for budget in config.budgets:
            reserved = budget.reserved_metadata_key
            if (
                reserved is None
                or budget.response_cost_key is None
                or (budget.routes and route.name not in budget.routes)
            ):
                continue
            keys[reserved] = budget.response_cost_key
            default_max_tokens = max(default_max_tokens, budget.default_max_tokens)
        if keys:
            plans[route.name] = Reservation(tuple(sorted(keys.items())), default_max_tokens)
    return plans


def _texts(value: Any) -> Iterable[str]:
    """Text of a message ``content`` / ``system`` / ``input``: a string, or the text of its parts."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for part in value:
            if isinstance(part, str):
                yield part
            elif isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    yield text
                content = part.get("content")  # Responses API input items, Anthropic tool results
                if content is not None:
                    yield from _texts(content)


def prompt_tokens(body: dict[str, Any]) -> int:
    """Estimated input tokens: bytes of the prompt text / 4 (rounded up) + 4 per message."""
    size = 0
    messages = body.get("messages")
    count = 0
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                count += 1
                for text in _texts(message.get("content")):
                    size += len(text.encode())
    contents = body.get("contents")  # the Gemini API's turns: Content objects with text parts
    if isinstance(contents, list):
        for content in contents:
            if isinstance(content, dict):
                count += 1
                for text in _texts(content.get("parts")):
                    size += len(text.encode())
    system = body.get("systemInstruction", body.get("system_instruction"))
    if isinstance(system, dict):
        for text in _texts(system.get("parts")):
            size += len(text.encode())
    token_ids = 0
    for field in ("system", "input", "prompt", "instructions"):
        value = body.get(field)
        for text in _texts(value):
            size += len(text.encode())
        if field in ("input", "prompt"):
            token_ids += _token_ids(value)
    return math.ceil(size / BYTES_PER_TOKEN) + TOKENS_PER_MESSAGE * count + token_ids


def _token_ids(value: Any) -> int:
    """Token ids in a token array (``[1, 2]``) or a list of them (``[[1, 2], [3]]``)."""
    if not isinstance(value, list):
        return 0
    count = 0
    for item in value:
        if isinstance(item, list):
            count += len(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            count += 1
    return count


def output_tokens(body: dict[str, Any], default: int) -> int:
    """The output cap the request names (times ``n`` choices), else ``default``."""
    for field in _OUTPUT_CAP_FIELDS:
        value = body.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            n = body.get("n")
            choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
            return value * choices
    config = body.get("generationConfig", body.get("generation_config"))  # the Gemini API's
    if isinstance(config, dict):
        value = config.get("maxOutputTokens", config.get("max_output_tokens"))
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            n = config.get("candidateCount", config.get("candidate_count"))
            return value * (n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1)
    return default


def estimated_usage(body: dict[str, Any], default_max_tokens: int, generates: bool = True) -> TokenUsage:
    """``generates``: False for embeddings, which consume input tokens only."""
    prompt = prompt_tokens(body)
    output = output_tokens(body, default_max_tokens) if generates else 0
    return TokenUsage(input=prompt, output=output, total=prompt + output)


def reservation_values(
    body: dict[str, Any],
    reservation: Reservation,
    evaluate: Callable[[TokenUsage, CallContext], Mapping[str, int | float]],
    call: CallContext,
    generates: bool = True,
) -> dict[str, int]:
    """The metadata to write at request time: each reserved key with the estimate of the cost it stands for.

    ``evaluate`` gives the route's costs for a usage (``RuleRuntime.cost_values``: ``llmRequestCosts`` and
    the USD cost). A budget charged from a key that is not among them reserves the total-token estimate.
    """
    usage = estimated_usage(body, reservation.default_max_tokens, generates)
    costs = evaluate(usage, call)
    values = {}
    for reserved, cost_key in reservation.keys:
        value = costs.get(cost_key)
        values[reserved] = int(value) if value is not None else usage.total
    return values
