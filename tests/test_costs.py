"""``llmRequestCosts``: the numbers written to metadata (and charged to budgets) for one response."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tokenvoy.config.defaults import default_config_yaml
from tokenvoy.config.loader import ConfigError, load_text
from tokenvoy.config.model import CostType, RequestCost
from tokenvoy.extproc.costs import CallContext, CostConfigError, compile_costs
from tokenvoy.extproc.usage import TokenUsage

USAGE = TokenUsage(input=1000, cached_input=300, cache_creation_input=40, output=250, reasoning=64, total=1250)
CONTEXT = CallContext(model="gpt-4o", backend="openai", route_name="default")


def _cost(cost_type: CostType, cel: str | None = None, key: str = "llm_cost") -> int:
    (compiled,) = compile_costs((RequestCost(key, cost_type, cel),))
    assert compiled.metadata_key == key
    return compiled.evaluate(USAGE, CONTEXT)


@pytest.mark.parametrize(
    ("cost_type", "expected"),
    [
        (CostType.INPUT_TOKEN, 1000),
        (CostType.CACHED_INPUT_TOKEN, 300),
        (CostType.CACHE_CREATION_INPUT_TOKEN, 40),
        (CostType.OUTPUT_TOKEN, 250),
        (CostType.TOTAL_TOKEN, 1250),
        (CostType.REASONING_TOKEN, 64),
    ],
)
def test_direct_cost_types(cost_type, expected):
    assert _cost(cost_type) == expected


def test_every_direct_type_is_covered():
    direct = {t for t in CostType if t is not CostType.CEL}
    keys = tuple(RequestCost(f"k_{t.value}", t) for t in direct)
    values = {c.metadata_key: c.evaluate(USAGE, CONTEXT) for c in compile_costs(keys)}
    assert len(values) == len(direct)


def test_several_costs_keep_their_order_and_keys():
    costs = compile_costs(
        (
            RequestCost("llm_input_token", CostType.INPUT_TOKEN),
            RequestCost("llm_output_token", CostType.OUTPUT_TOKEN),
            RequestCost("weighted", CostType.CEL, "input_tokens + output_tokens * uint(4)"),
        )
    )
    assert [(c.metadata_key, c.evaluate(USAGE, CONTEXT)) for c in costs] == [
        ("llm_input_token", 1000),
        ("llm_output_token", 250),
        ("weighted", 2000),
    ]


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("input_tokens * uint(3) + output_tokens * uint(15)", 1000 * 3 + 250 * 15),
        ('model == "gpt-4o" ? total_tokens * uint(2) : total_tokens', 2500),
        ('model == "gpt-4o-mini" ? total_tokens * uint(2) : total_tokens', 1250),
        ('backend == "openai" && route_name == "default" ? uint(7) : uint(0)', 7),
        ("cached_input_tokens + cache_creation_input_tokens + reasoning_tokens", 300 + 40 + 64),
        # Envoy AI Gateway's own example mixes uint variables with int literals.
        ("input_tokens == uint(1000) ? 100000000 : 0", 100000000),
        ("int(input_tokens - cached_input_tokens) + int(cached_input_tokens) / 10", 700 + 30),
    ],
)
def test_cel_over_all_variables(expression, expected):
    assert _cost(CostType.CEL, expression) == expected


def test_cel_sees_the_call_it_is_evaluated_for():
    (compiled,) = compile_costs(
        (RequestCost("k", CostType.CEL, 'model == "gpt-4o" ? total_tokens * uint(2) : total_tokens'),)
    )
    assert compiled.evaluate(USAGE, CONTEXT) == 2500
    assert compiled.evaluate(USAGE, CallContext("claude", "anthropic", "default")) == 1250


BAD_EXPRESSIONS = [
    ("input_tokens +", "invalid CEL expression"),
    ("input_tokens * (", "invalid CEL expression"),
    ("double(input_tokens) * 1.5", "must give an integer, gives a double"),
    ("1.5", "must give an integer, gives a double"),
    ('"ten"', "must give an integer, gives a string"),
    ("input_tokens > uint(1)", "must give an integer, gives a bool"),
    ("int(input_tokens) - int(output_tokens) * 3", "negative"),
    ("-1", "negative"),
    ("unknown_variable * uint(2)", "unknown_variable"),
]


@pytest.mark.parametrize(("expression", "problem"), BAD_EXPRESSIONS)
def test_cel_config_errors_name_the_metadata_key(expression, problem):
    with pytest.raises(CostConfigError) as excinfo:
        compile_costs((RequestCost("llm_weighted_token", CostType.CEL, expression),))
    message = str(excinfo.value)
    assert "llm_weighted_token" in message
    assert problem in message
    assert len(message) < 400  # one readable line, not celpy's dump of the whole activation


def test_a_cel_error_at_request_time_costs_zero_instead_of_failing_the_request():
    # uint underflow happens only for this call's numbers; the load-time check could not see it.
    (compiled,) = compile_costs((RequestCost("k", CostType.CEL, "input_tokens - output_tokens"),))
    assert compiled.evaluate(USAGE, CONTEXT) == 750
    assert compiled.evaluate(TokenUsage(input=3, output=7, total=10), CONTEXT) == 0


def test_a_non_integer_on_a_branch_not_taken_at_load_costs_zero():
    (compiled,) = compile_costs((RequestCost("k", CostType.CEL, 'model == "odd" ? "text" : uint(1)'),))
    assert compiled.evaluate(USAGE, CONTEXT) == 1
    assert compiled.evaluate(USAGE, CallContext("odd", "b", "r")) == 0


@pytest.mark.parametrize(("expression", "problem"), BAD_EXPRESSIONS)
def test_tokenvoy_validate_refuses_a_cel_cost_with_extprocs_own_message(expression, problem):
    # One compiler for both: what `tokenvoy validate` reports is what extproc would refuse to start with.
    with pytest.raises(CostConfigError) as refused:
        compile_costs((RequestCost("llm_weighted_token", CostType.CEL, expression),))
    cost = f"    - metadataKey: llm_weighted_token\n      type: CEL\n      cel: {expression!r}\n"
    text = default_config_yaml({}, showcase=False).replace("  llmRequestCosts:\n", "  llmRequestCosts:\n" + cost)
    with pytest.raises(ConfigError) as reported:
        load_text(text)
    (line,) = [p for p in reported.value.problems if "llm_weighted_token" in p]
    assert line.endswith(f"spec.llmRequestCosts[0].cel: {refused.value}")
    assert problem in line


def test_the_loader_checks_cel_without_importing_extproc():
    # config/ sits below extproc/: `tokenvoy validate` compiles CEL costs with the module extproc uses, not via it.
    script = (
        "import sys\n"
        "from tokenvoy.config.defaults import default_config_yaml\n"
        "from tokenvoy.config.loader import load_text\n"
        "cost = '    - metadataKey: llm_weighted\\n      type: CEL\\n      cel: input_tokens + output_tokens * 3u\\n'\n"
        "head = '  llmRequestCosts:\\n'\n"
        "text = default_config_yaml({}, showcase=False).replace(head, head + cost)\n"
        "assert any(c.cel for r in load_text(text).routes for c in r.costs)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('tokenvoy.extproc', 'tokenvoy.render'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
