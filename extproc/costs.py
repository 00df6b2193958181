"""``llmRequestCosts``: each metadata key's value computed from usage, compiled once at load.

CEL programs are compiled and test-evaluated at load so that a syntax error, a negative result or a
non-integer result is a config error, not a surprise on the first request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tokenvoy.cel import MAX_COST, CallContext, CostConfigError, compile_cel_cost
from tokenvoy.config.model import CostType, RequestCost
from tokenvoy.extproc.usage import TokenUsage

__all__ = ["MAX_COST", "CallContext", "CompiledCost", "CostConfigError", "compile_costs"]

_DIRECT: dict[CostType, Callable[[TokenUsage], int]] = {
    CostType.INPUT_TOKEN: lambda usage: usage.input,
    CostType.CACHED_INPUT_TOKEN: lambda usage: usage.cached_input,
    CostType.CACHE_CREATION_INPUT_TOKEN: lambda usage: usage.cache_creation_input,
    CostType.OUTPUT_TOKEN: lambda usage: usage.output,
    CostType.TOTAL_TOKEN: lambda usage: usage.total,
    CostType.REASONING_TOKEN: lambda usage: usage.reasoning,
}


@dataclass(frozen=True)
class CompiledCost:
    metadata_key: str
    evaluate: Callable[[TokenUsage, CallContext], int]


def compile_costs(costs: tuple[RequestCost, ...]) -> tuple[CompiledCost, ...]:
    compiled = []
    for cost in costs:
        if cost.type is CostType.CEL:
            compiled.append(CompiledCost(cost.metadata_key, compile_cel_cost(cost.cel or "", cost.metadata_key)))
        else:
            direct = _DIRECT[cost.type]
            compiled.append(CompiledCost(cost.metadata_key, lambda usage, _context, f=direct: f(usage)))
    return tuple(compiled)
