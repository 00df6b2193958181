"""``llmRequestCosts``: each metadata key's value computed from usage, compiled once at load.

CEL expressions are compiled (and tried on a sample) by ``tokenvoy.config.cel``, the module the loader
checks them with, so extproc refuses exactly what ``tokenvoy validate`` reports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tokenvoy.config.cel import CostConfigError, CostVariables, compile_cel_cost
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


# The largest cost written into the metadata: what the rate-limit counters hold (docs/ratelimit.md, 2^40), and
# small enough that Envoy formats it as a plain integer for hits_addend (not 1e+30, read as 1).
MAX_COST = 2**40


@dataclass(frozen=True)
class CallContext:
    model: str  # the model sent to the backend (CEL's `model`)
    backend: str
    route_name: str
    response_model: str = ""  # the model that answered, when known: priced first
    client_model: str = ""  # the model the client named (before a modelNameOverride): priced last


def _variables(usage: TokenUsage, context: CallContext) -> CostVariables:
    return CostVariables(
        model=context.model,
        backend=context.backend,
        route_name=context.route_name,
        input_tokens=usage.input,
        cached_input_tokens=usage.cached_input,
        cache_creation_input_tokens=usage.cache_creation_input,
        output_tokens=usage.output,
        total_tokens=usage.total,
        reasoning_tokens=usage.reasoning,
    )


def _cel_cost(expression: str, key: str) -> Callable[[TokenUsage, CallContext], int]:
    program = compile_cel_cost(key, expression)  # CostConfigError: what the loader reported already

    def evaluate(usage: TokenUsage, context: CallContext) -> int:
        return min(program.evaluate(_variables(usage, context)), MAX_COST)

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
