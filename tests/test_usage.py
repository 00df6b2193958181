"""OpenAI ``usage`` objects normalised into the counts every cost and metric is computed from."""

from __future__ import annotations

import pytest

from tokenvoy.extproc.usage import TokenUsage


def test_openai_usage_with_cached_and_reasoning_details():
    # As returned by the Chat Completions API for a reasoning model with a prompt-cache hit.
    usage = {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 192,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    assert TokenUsage.from_openai(usage) == TokenUsage(
        input=2006,  # prompt_tokens already include the cached tokens: not added again
        cached_input=1920,
        cache_creation_input=0,
        output=300,  # reasoning tokens are part of completion_tokens
        reasoning=192,
        total=2306,
    )


def test_plain_usage_without_details():
    usage = {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}
    assert TokenUsage.from_openai(usage) == TokenUsage(input=9, output=12, total=21)


def test_missing_total_is_computed():
    assert TokenUsage.from_openai({"prompt_tokens": 9, "completion_tokens": 12}).total == 21


def test_zero_total_with_tokens_is_computed():
    assert TokenUsage.from_openai({"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 0}).total == 21


def test_embeddings_style_usage_without_completion():
    assert TokenUsage.from_openai({"prompt_tokens": 8, "total_tokens": 8}) == TokenUsage(input=8, total=8)


@pytest.mark.parametrize(
    "usage",
    [
        {},
        {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None},
        {"prompt_tokens_details": None, "completion_tokens_details": None},
        {"prompt_tokens_details": {"cached_tokens": None}, "completion_tokens_details": {}},
        # Seen from OpenAI-compatible servers: wrong types must not break the response.
        {"prompt_tokens": "12", "completion_tokens": True, "total_tokens": -3},
        {"prompt_tokens_details": [], "completion_tokens_details": "n/a"},
    ],
)
def test_missing_or_malformed_fields_count_as_zero(usage):
    assert TokenUsage.from_openai(usage) == TokenUsage()


def test_malformed_details_do_not_hide_the_main_counts():
    usage = {"prompt_tokens": 5, "completion_tokens": 6, "prompt_tokens_details": "x", "completion_tokens_details": 1}
    assert TokenUsage.from_openai(usage) == TokenUsage(input=5, output=6, total=11)
