"""Provider usage out of range is charged within range (0..10^9 per field) and logged once per kind."""

from __future__ import annotations

import logging

import pytest

from tokenvoy.config.model import CostType, RequestCost
from tokenvoy.extproc import usage as usage_module
from tokenvoy.extproc.costs import MAX_COST, CallContext, compile_costs
from tokenvoy.extproc.translate.anthropic_common import usage_from_anthropic
from tokenvoy.extproc.translate.bedrock_common import usage_from_bedrock
from tokenvoy.extproc.translate.gemini_common import usage_from_gemini
from tokenvoy.extproc.usage import MAX_TOKENS, TokenUsage, token_count


@pytest.fixture(autouse=True)
def _fresh_warnings() -> None:
    usage_module._WARNED.clear()


@pytest.mark.parametrize(
    ("value", "charged"),
    [
        (2**64, MAX_TOKENS),
        (10**30, MAX_TOKENS),
        (MAX_TOKENS, MAX_TOKENS),
        (MAX_TOKENS + 1, MAX_TOKENS),
        (123, 123),
        (0, 0),
        (-5, 0),
        (True, 0),
        (1.5, 0),
        ("7", 0),
        (None, 0),
    ],
)
def test_token_counts_are_clamped(value: object, charged: int) -> None:
    assert token_count(value, "prompt_tokens") == charged


def test_every_schemas_usage_is_clamped() -> None:
    huge = 2**64
    assert TokenUsage.from_openai({"prompt_tokens": huge, "completion_tokens": 10**30}).output == MAX_TOKENS
    assert TokenUsage.from_openai({"prompt_tokens": huge, "completion_tokens": 1}).input == MAX_TOKENS
    assert usage_from_anthropic({"input_tokens": huge, "output_tokens": 3}).input == MAX_TOKENS
    assert usage_from_bedrock({"inputTokens": 1, "outputTokens": huge}).output == MAX_TOKENS
    assert usage_from_gemini({"promptTokenCount": huge, "candidatesTokenCount": 2}).input == MAX_TOKENS


def test_one_warning_per_field_and_kind_not_per_message(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tokenvoy.extproc.usage")
    for _ in range(50):
        TokenUsage.from_openai({"prompt_tokens": 2**64, "completion_tokens": -1})
    records = [r for r in caplog.records if r.name == "tokenvoy.extproc.usage"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.WARNING]
    messages = " ".join(r.getMessage() for r in records)
    assert "prompt_tokens = 18446744073709551616" in messages and "charged 1000000000" in messages
    assert "completion_tokens = -1" in messages and "charged 0" in messages


def test_a_cel_cost_is_capped_at_what_the_counters_hold() -> None:
    (cost,) = compile_costs((RequestCost("usd", CostType.CEL, "input_tokens * 1000000u"),))
    charged = cost.evaluate(TokenUsage(input=MAX_TOKENS, total=MAX_TOKENS), CallContext("m", "b", "r"))
    assert charged == MAX_COST
