"""CEL cost expressions (``llmRequestCosts`` of type CEL), compiled and test-evaluated once.

Shared by the config loader, which reports a bad expression when the config is read (``tokenvoy
validate``), and extproc (``extproc/costs.py``), which evaluates it per request. It sits below both layers
and imports nothing from tokenvoy (docs/architecture.md, "The layers").
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import celpy

log = logging.getLogger(__name__)


class UsageCounts(Protocol):
    """The token counts a CEL cost reads (``extproc.usage.TokenUsage`` has them)."""

    input: int
    cached_input: int
    cache_creation_input: int
    output: int
    reasoning: int
    total: int


@dataclass(frozen=True)
class _Sample:
    input: int
    cached_input: int
    cache_creation_input: int
    output: int
    reasoning: int
    total: int


# The largest cost written into the metadata: what the rate-limit counters hold (docs/ratelimit.md, 2^40), and
# small enough that Envoy formats it as a plain integer for hits_addend (not 1e+30, read as 1).
MAX_COST = 2**40


class CostConfigError(ValueError):
    pass


@dataclass(frozen=True)
class CallContext:
    model: str  # the model sent to the backend (CEL's `model`)
    backend: str
    route_name: str
    response_model: str = ""  # the model that answered, when known: priced first
    client_model: str = ""  # the model the client named (before a modelNameOverride): priced last


def _activation(usage: UsageCounts, context: CallContext) -> dict[str, object]:
    uint = celpy.celtypes.UintType
    string = celpy.celtypes.StringType
    return {
        "model": string(context.model),
        "backend": string(context.backend),
        "route_name": string(context.route_name),
        "input_tokens": uint(usage.input),
        "cached_input_tokens": uint(usage.cached_input),
        "cache_creation_input_tokens": uint(usage.cache_creation_input),
        "output_tokens": uint(usage.output),
        "total_tokens": uint(usage.total),
        "reasoning_tokens": uint(usage.reasoning),
    }


def _cel_type_name(value: object) -> str:
    for cel_type, name in (
        (bool, "a bool"),
        (celpy.celtypes.BoolType, "a bool"),
        (float, "a double"),
        (str, "a string"),
        (bytes, "bytes"),
        (list, "a list"),
        (dict, "a map"),
    ):
        if isinstance(value, cel_type):
            return name
    return type(value).__name__


def _is_integer(value: object) -> bool:
    # celpy's BoolType subclasses int (not bool): `true` must not pass as a cost of 1.
    return isinstance(value, int) and not isinstance(value, bool | celpy.celtypes.BoolType)


def _error_text(exc: Exception) -> str:
    """celpy errors carry the whole activation in their text; keep the first line of the actual problem."""
    text = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    text = text.split(" (in activation", 1)[0]
    return " ".join(text.split())


def compile_cel_cost(expression: str, key: str) -> Callable[[UsageCounts, CallContext], int]:
    """The evaluator of one CEL cost, compiled and test-evaluated now: a bad expression is a config error."""
    environment = celpy.Environment()
    try:
        program = environment.program(environment.compile(expression))
    except Exception as exc:  # celpy raises several parse error types
        raise CostConfigError(
            f"llmRequestCosts {key}: invalid CEL expression {expression!r}: {_error_text(exc)}"
        ) from exc
    sample = _Sample(input=100, cached_input=10, cache_creation_input=5, output=50, reasoning=5, total=150)
    try:
        result = program.evaluate(_activation(sample, CallContext("model", "backend", "route")))
    except Exception as exc:
        raise CostConfigError(
            f"llmRequestCosts {key}: CEL expression {expression!r} fails: {_error_text(exc)}"
        ) from exc
    if not _is_integer(result):
        kind = _cel_type_name(result)
        raise CostConfigError(
            f"llmRequestCosts {key}: CEL expression {expression!r} must give an integer, "
            f"gives {kind}; use int(...) or uint(...)"
        )
    if result < 0:
        raise CostConfigError(f"llmRequestCosts {key}: CEL expression {expression!r} gives a negative cost")

    def evaluate(usage: UsageCounts, context: CallContext) -> int:
        try:
            value = program.evaluate(_activation(usage, context))
        except Exception as exc:
            log.warning("llmRequestCosts %s: CEL evaluation failed, cost 0: %s", key, _error_text(exc))
            return 0
        if isinstance(value, float) and math.isfinite(value):
            return min(max(int(value), 0), MAX_COST)  # only reachable on a branch the load-time check did not take
        if not _is_integer(value):
            log.warning("llmRequestCosts %s: CEL expression gave %r, not an integer; cost 0", key, value)
            return 0
        return min(max(int(value), 0), MAX_COST)

    return evaluate
