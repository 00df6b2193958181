"""The bundled price catalog: USD per million tokens for the current models of every supported provider.

Versioned by the date the prices were read. ``TokenvoyConfig`` ``spec.pricing`` entries override it model by
model, and ``spec.cost.catalog: none`` turns it off. Where a provider prices a model in tiers (Gemini 2.5 Pro
above 200k prompt tokens, Anthropic's 1-hour cache writes, Bedrock's regional-endpoint premium), the catalog
has the base tier; a team paying another rate overrides the model.

Names are the providers' API model ids without a dated snapshot suffix: ``extproc/pricing.py`` also matches
``claude-haiku-4-5-20251001``, ``claude-haiku-4-5@20251001``, ``anthropic.claude-haiku-4-5-20251001-v1:0``,
``us.anthropic.…`` and ``gpt-4o-mini-2024-07-18`` to these entries.
"""

from __future__ import annotations

from tokenvoy.config.model import ModelPrice

CATALOG_VERSION = "2026-12-03"

# The provider's pricing page each price is published on, and the date it was read. Anthropic's numbers were
# read on that page; OpenAI's, Gemini's and Bedrock's from pages quoting those pages on the date given, not yet
# checked against the pages themselves: override any of them with `spec.pricing` (docs/budgets.md).
CATALOG_SOURCES: tuple[tuple[str, str, str], ...] = (
    ("OpenAI", "https://developers.openai.com/api/docs/pricing", "2026-11-05"),
    ("Anthropic", "https://platform.claude.com/docs/en/about-claude/pricing", "2026-12-03"),
    ("Google Gemini (Gemini API and Vertex AI)", "https://ai.google.dev/gemini-api/docs/pricing", "2026-12-03"),
    ("Amazon Bedrock (Nova, Titan)", "https://aws.amazon.com/bedrock/pricing/", "2026-09-01"),
)


def _p(model: str, inp: float, out: float, cached: float | None = None, write: float | None = None) -> ModelPrice:
    return ModelPrice(model, inp, out, cached_input_per_million=cached, cache_creation_input_per_million=write)


BUNDLED_PRICES: tuple[ModelPrice, ...] = (
    # OpenAI (standard tier; Azure OpenAI global deployments list the same prices)
    _p("gpt-5.5", 5.0, 30.0, 0.5),
    _p("gpt-5.4", 2.5, 15.0, 0.25),
    _p("gpt-5.4-mini", 0.75, 4.5, 0.075),
    _p("gpt-5.4-nano", 0.2, 1.25, 0.02),
    _p("gpt-5", 1.25, 10.0, 0.125),
    _p("gpt-5-mini", 0.25, 2.0, 0.025),
    _p("gpt-5-nano", 0.05, 0.4, 0.005),
    _p("gpt-4.1", 2.0, 8.0, 0.5),
    _p("gpt-4.1-mini", 0.4, 1.6, 0.1),
    _p("gpt-4.1-nano", 0.1, 0.4, 0.025),
    _p("gpt-4o", 2.5, 10.0, 1.25),
    _p("gpt-4o-mini", 0.15, 0.6, 0.075),
    _p("o4-mini", 1.1, 4.4, 0.275),
    _p("text-embedding-3-small", 0.02, 0.0),
    _p("text-embedding-3-large", 0.13, 0.0),
    # Anthropic (cache writes: the 5-minute rate, 1.25x input; cache hits 0.1x). Claude on Bedrock and on
    # Vertex AI is priced the same on their global endpoints.
    _p("claude-opus-4-8", 5.0, 25.0, 0.5, 6.25),
    _p("claude-opus-4-7", 5.0, 25.0, 0.5, 6.25),
    _p("claude-opus-4-6", 5.0, 25.0, 0.5, 6.25),
    _p("claude-opus-4-5", 5.0, 25.0, 0.5, 6.25),
    _p("claude-opus-4-1", 15.0, 75.0, 1.5, 18.75),
    _p("claude-opus-4", 15.0, 75.0, 1.5, 18.75),
    _p("claude-sonnet-4-6", 3.0, 15.0, 0.3, 3.75),
    _p("claude-sonnet-4-5", 3.0, 15.0, 0.3, 3.75),
    _p("claude-sonnet-4", 3.0, 15.0, 0.3, 3.75),
    _p("claude-haiku-4-5", 1.0, 5.0, 0.1, 1.25),
    _p("claude-3-5-haiku", 0.8, 4.0, 0.08, 1.0),
    # Google Gemini (paid tier, prompts up to 200k tokens; cached input 10% of input)
    _p("gemini-2.5-pro", 1.25, 10.0, 0.125),
    _p("gemini-2.5-flash", 0.3, 2.5, 0.03),
    _p("gemini-2.5-flash-lite", 0.1, 0.4, 0.01),
    # Amazon Bedrock, us-east-1 on-demand (Nova cache reads 75% off input)
    _p("amazon.nova-pro", 0.8, 3.2, 0.2),
    _p("amazon.nova-lite", 0.06, 0.24, 0.015),
    _p("amazon.nova-micro", 0.035, 0.14, 0.00875),
    _p("amazon.titan-embed-text-v2", 0.02, 0.0),
)
