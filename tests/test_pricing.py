"""The price catalog and the USD cost: lookups by every provider's model ids, exact integer arithmetic
rounded up, overrides, the config that turns it on and off, and what extproc writes for a request."""

from __future__ import annotations

import logging
import re
from datetime import date

import pytest

from tokenvoy.config.catalog import BUNDLED_PRICES, CATALOG_SOURCES, CATALOG_VERSION
from tokenvoy.config.defaults import SHOWCASE_MODELS, default_config_yaml
from tokenvoy.config.loader import ConfigError, load_text
from tokenvoy.config.model import CostSettings, ModelPrice
from tokenvoy.extproc.costs import CallContext
from tokenvoy.extproc.pricing import PriceBook, TokenPrice, centicents, cost_pico, micros, usd_text
from tokenvoy.extproc.runtime import Runtime
from tokenvoy.extproc.usage import TokenUsage

CATALOG = PriceBook((), BUNDLED_PRICES)
GATEWAY = default_config_yaml({})


def test_the_catalog_is_dated_sourced_and_has_one_entry_per_model() -> None:
    assert date.fromisoformat(CATALOG_VERSION) <= date.today()
    for provider, url, read in CATALOG_SOURCES:
        assert url.startswith("https://") and date.fromisoformat(read) <= date.fromisoformat(CATALOG_VERSION), provider
    names = [price.model for price in BUNDLED_PRICES]
    assert len(names) == len(set(names))
    for price in BUNDLED_PRICES:
        assert price.input_per_million > 0 and price.output_per_million >= 0, price


@pytest.mark.parametrize(
    ("model", "entry"),
    [
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),  # OpenAI's dated snapshot (the response model)
        ("claude-sonnet-4-6", "claude-sonnet-4-6"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),  # Anthropic's dated id
        ("claude-haiku-4-5@20251001", "claude-haiku-4-5"),  # Vertex AI
        ("anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5"),  # Bedrock
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),  # a Bedrock inference profile
        ("amazon.nova-lite-v1:0", "amazon.nova-lite"),
        ("amazon.titan-embed-text-v2:0", "amazon.titan-embed-text-v2"),
        ("gemini-2.5-flash", "gemini-2.5-flash"),
        ("text-embedding-3-small", "text-embedding-3-small"),
    ],
)
def test_provider_model_ids_find_their_catalog_entry(model: str, entry: str) -> None:
    price = CATALOG.lookup(model)
    assert price is not None and price.model == entry


def test_unknown_models_have_no_price_and_are_not_matched_loosely() -> None:
    for model in ("my-finetune", "gpt-4o-mini-custom", "claude-haiku", "gemini-9"):
        assert CATALOG.lookup(model) is None, model


def test_the_default_configs_models_are_priced_except_those_without_a_token_price() -> None:
    unpriced = [model for model, _, _ in SHOWCASE_MODELS if CATALOG.lookup(model) is None]
    # a deployment name of the fake Azure backend, and Vertex's embeddings (priced per character, not token)
    assert unpriced == ["azure-gpt-4o-mini", "text-embedding-005"]


def test_cost_is_exact_and_rounded_up_to_the_micro_dollar_and_the_centi_cent() -> None:
    price = TokenPrice.of(ModelPrice("m", input_per_million=3, output_per_million=15))
    pico = cost_pico(price, TokenUsage(input=1000, output=200, total=1200))
    assert pico == (1000 * 3 + 200 * 15) * 10**6  # 6000 µ$
    assert (micros(pico), centicents(pico)) == (6000, 60)
    mini = TokenPrice.of(ModelPrice("mini", input_per_million=0.15, output_per_million=0.6))
    tiny = cost_pico(mini, TokenUsage(input=1, output=0, total=1))  # 0.15 µ$
    assert (micros(tiny), centicents(tiny)) == (1, 1)  # never free
    assert (micros(0), centicents(0)) == (0, 0)
    assert usd_text(1) == "0.000001" and usd_text(12_345_678) == "12.345678"
    # prices keep the decimals written: 0.00875 $/M (Nova Micro cache reads) is 8750 pico-dollars per token
    assert TokenPrice.of(ModelPrice("n", 0.035, 0.14, cached_input_per_million=0.00875)).cached_input == 8750


def test_spec_pricing_overrides_the_catalog_and_catalog_none_leaves_only_overrides() -> None:
    override = """
---
apiVersion: tokenvoy.io/v1alpha1
kind: TokenvoyConfig
metadata: {name: tokenvoy}
spec:
  pricing:
    - {model: gpt-4o-mini, inputPerMillion: 1, outputPerMillion: 2}
  cost: {responseHeader: true}
"""
    config = load_text(GATEWAY + override)
    assert config.cost == CostSettings(catalog=True, response_header=True)
    runtime = Runtime(config)
    assert runtime.prices.lookup("gpt-4o-mini-2024-07-18").output == 2 * 10**6  # the override, also for snapshots
    assert runtime.prices.lookup("claude-sonnet-4-6") is not None  # the catalog still prices the rest
    config = load_text(GATEWAY + override.replace("responseHeader: true", "catalog: none"))
    assert config.cost == CostSettings(catalog=False, response_header=False)
    runtime = Runtime(config)
    assert runtime.prices.lookup("gpt-4o-mini") is not None and runtime.prices.lookup("claude-sonnet-4-6") is None


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("  cost: {catalog: latest}\n", "spec.cost.catalog: must be bundled or none, got 'latest'"),
        ("  cost: {responseHeader: yes-please}\n", "spec.cost.responseHeader: must be true or false"),
        ("  cost: {header: true}\n", "spec.cost.header: unknown field (known: catalog, responseHeader)"),
    ],
)
def test_bad_cost_settings_are_config_errors(spec: str, problem: str) -> None:
    text = f"---\napiVersion: tokenvoy.io/v1alpha1\nkind: TokenvoyConfig\nmetadata:\n  name: t\nspec:\n{spec}"
    with pytest.raises(ConfigError) as excinfo:
        load_text(GATEWAY + text, "gw.yaml")
    assert any(problem in line for line in excinfo.value.problems), excinfo.value.problems


def test_extproc_writes_micros_centicents_and_usd_once_priced_by_the_response_model_first() -> None:
    rule = Runtime(load_text(GATEWAY)).rules[0]
    usage = TokenUsage(input=1000, cached_input=400, output=500, total=1500)
    call = CallContext("gpt-4o-mini", "fake", "default", response_model="gpt-4o-mini-2024-07-18")
    values = rule.cost_values(usage, call)
    # 600 x 0.15 + 400 x 0.075 + 500 x 0.6 = 420 µ$ (gpt-4o-mini's catalog prices)
    assert values["llm_cost_usd_micros"] == 420
    assert values["llm_cost_usd_centicents"] == 5  # 4.2 rounded up
    assert values["llm_cost_usd"] == 0.00042
    assert values["llm_total_token"] == 1500  # the route's llmRequestCosts are still there
    unpriced = rule.cost_values(usage, CallContext("my-finetune", "fake", "default"))
    assert "llm_cost_usd_micros" not in unpriced  # unknown, not free
    assert set(rule.cost_keys) >= {"llm_cost_usd_micros", "llm_cost_usd_centicents"}  # zeros on failures


def test_unpriced_models_are_warned_about_at_load(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tokenvoy.extproc.runtime"):
        runtime = Runtime(load_text(GATEWAY))
    assert runtime.unpriced == ["azure-gpt-4o-mini", "text-embedding-005"]
    (message,) = [r.getMessage() for r in caplog.records if "no price" in r.getMessage()]
    assert re.search(r"no price for models azure-gpt-4o-mini, text-embedding-005", message)
