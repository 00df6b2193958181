"""CEL cost expressions (``llmRequestCosts`` of type CEL): compiled and tried once, evaluated per response.

One module for both sides: the loader compiles each expression so ``tokenvoy validate`` refuses what
extproc would refuse, and extproc (``extproc/costs.py``) evaluates the same compiled program on every
response's usage. It sits in ``config/`` because both import it: the loader may not import extproc.

An expression sees Envoy AI Gateway's variables (``CostVariables``). Compiling also evaluates it on a sample,
so a syntax error, an expression that fails, a non-integer or a negative result is a config error, not a
surprise on the first request. ``celpy`` is imported on first use: a config without CEL never loads it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


class CostConfigError(ValueError):
    """A CEL cost that cannot be compiled, fails on the sample, or gives no non-negative integer."""


@dataclass(frozen=True, slots=True)
class CostVariables:
    """What a CEL cost expression can read, by Envoy AI Gateway's names."""

    model: str  # the model sent to the backend
    backend: str
    route_name: str
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    reasoning_tokens: int = 0


# What the load-time check evaluates each expression on.
_SAMPLE = CostVariables(
    "model",
    "backend",
    "route",
    input_tokens=100,
    cached_input_tokens=10,
    cache_creation_input_tokens=5,
    output_tokens=50,
    total_tokens=150,
    reasoning_tokens=5,
)


class CelCost:
    """One compiled expression; ``evaluate`` never raises (a failure on real usage costs 0, logged)."""

    __slots__ = ("_celtypes", "_program", "expression", "key")

    def __init__(self, key: str, expression: str, program: Any, celtypes: Any) -> None:
        self.key = key
        self.expression = expression
        self._program = program
        self._celtypes = celtypes

    def _activation(self, variables: CostVariables) -> dict[str, object]:
        uint, string = self._celtypes.UintType, self._celtypes.StringType
        return {
            "model": string(variables.model),
            "backend": string(variables.backend),
            "route_name": string(variables.route_name),
            "input_tokens": uint(variables.input_tokens),
            "cached_input_tokens": uint(variables.cached_input_tokens),
            "cache_creation_input_tokens": uint(variables.cache_creation_input_tokens),
            "output_tokens": uint(variables.output_tokens),
            "total_tokens": uint(variables.total_tokens),
            "reasoning_tokens": uint(variables.reasoning_tokens),
        }

    def result(self, variables: CostVariables) -> object:
        """The expression's value (celpy's exception when it fails)."""
        return self._program.evaluate(self._activation(variables))

    def evaluate(self, variables: CostVariables) -> int:
        """The cost as an integer, unbounded above; 0 (with a warning) when the expression fails or gives no
        number on this usage (only reachable on a branch the load-time sample did not take)."""
        try:
            value = self.result(variables)
        except Exception as exc:
            log.warning("llmRequestCosts %s: CEL evaluation failed, cost 0: %s", self.key, _error_text(exc))
            return 0
        if isinstance(value, float) and math.isfinite(value):
            return max(int(value), 0)
        if not self._is_integer(value):
            log.warning("llmRequestCosts %s: CEL expression gave %r, not an integer; cost 0", self.key, value)
            return 0
        return max(int(value), 0)

    def _is_integer(self, value: object) -> bool:
        # celpy's BoolType subclasses int (not bool): `true` must not pass as a cost of 1.
        return isinstance(value, int) and not isinstance(value, bool | self._celtypes.BoolType)


def compile_cel_cost(key: str, expression: str) -> CelCost:
    """Compile ``expression`` (the cost under metadata ``key``) and try it; CostConfigError says why not."""
    import celpy

    environment = celpy.Environment()
    try:
        program = environment.program(environment.compile(expression))
    except Exception as exc:  # celpy raises several parse error types
        raise CostConfigError(
            f"llmRequestCosts {key}: invalid CEL expression {expression!r}: {_error_text(exc)}"
        ) from exc
    cost = CelCost(key, expression, program, celpy.celtypes)
    try:
        result = cost.result(_SAMPLE)
    except Exception as exc:
        raise CostConfigError(
            f"llmRequestCosts {key}: CEL expression {expression!r} fails: {_error_text(exc)}"
        ) from exc
    if not cost._is_integer(result):
        raise CostConfigError(
            f"llmRequestCosts {key}: CEL expression {expression!r} must give an integer, "
            f"gives {_cel_type_name(result, celpy.celtypes)}; use int(...) or uint(...)"
        )
    if result < 0:
        raise CostConfigError(f"llmRequestCosts {key}: CEL expression {expression!r} gives a negative cost")
    return cost


def cel_cost_problem(key: str, expression: str) -> str | None:
    """Why ``expression`` would be refused (the loader's check), or None."""
    try:
        compile_cel_cost(key, expression)
    except CostConfigError as exc:
        return str(exc)
    return None


def _cel_type_name(value: object, celtypes: Any) -> str:
    for cel_type, name in (
        (bool, "a bool"),
        (celtypes.BoolType, "a bool"),
        (float, "a double"),
        (str, "a string"),
        (bytes, "bytes"),
        (list, "a list"),
        (dict, "a map"),
    ):
        if isinstance(value, cel_type):
            return name
    return type(value).__name__


def _error_text(exc: Exception) -> str:
    """celpy errors carry the whole activation in their text; keep the first line of the actual problem."""
    text = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    text = text.split(" (in activation", 1)[0]
    return " ".join(text.split())
