"""``llmRequestCosts``: each metadata key's value computed from usage, compiled once at load.

CEL programs are compiled and test-evaluated at load so that a syntax error, a negative result or a
non-integer result is a config error, not a surprise on the first request.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import celpy

from tokenvoy.config.model import CostType, RequestCost
from tokenvoy.extproc.usage import TokenUsage

log = logging.getLogger(__name__)

_DIRECT: dict[CostType, Callable[[TokenUsage], int]] = {
    CostType.INPUT_TOKEN: lambda usage: usage.input,
    CostType.CACHED_INPUT_TOKEN: lambda usage: usage.cached_input,
    CostType.CACHE_CREATION_INPUT_TOKEN: lambda usage: usage.cache_creation_input,
    CostType.OUTPUT_TOKEN: lambda usage: usage.output,
    CostType.TOTAL_TOKEN: lambda usage: usage.total,
    CostType.REASONING_TOKEN: lambda usage: usage.reasoning,
}


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


def _activation(usage: TokenUsage, context: CallContext) -> dict[str, object]:
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


def _cel_cost(expression: str, key: str) -> Callable[[TokenUsage, CallContext], int]:
    environment = celpy.Environment()
    try:
        program = environment.program(environment.compile(expression))
    except Exception as exc:  # celpy raises several parse error types
        raise CostConfigError(
            f"llmRequestCosts {key}: invalid CEL expression {expression!r}: {_error_text(exc)}"
        ) from exc
    sample = TokenUsage(input=100, cached_input=10, cache_creation_input=5, output=50, reasoning=5, total=150)
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

    def evaluate(usage: TokenUsage, context: CallContext) -> int:
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


@dataclass(frozen=True)
class CompiledCost:
    metadata_key: str
    evaluate: Callable[[TokenUsage, CallContext], int]


def compile_costs(costs: tuple[RequestCost, ...]) -> tuple[CompiledCost, ...]:
    compiled = []
    for cost in costs:
        if cost.type is CostType.CEL:
            compiled.append(CompiledCost(cost.metadata_key, _cel_cost(cost.cel or "", cost.metadata_key)))
        else:
            direct = _DIRECT[cost.type]
            compiled.append(CompiledCost(cost.metadata_key, lambda usage, _context, f=direct: f(usage)))
    return tuple(compiled)
