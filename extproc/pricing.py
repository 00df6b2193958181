"""USD cost of one request from a price catalog (pure code, no I/O).

Prices are kept as integer pico-dollars per token (USD per million tokens x 10^6), so a request's cost is
exact integer arithmetic: no float drift between the metadata, the access log, the metric and a budget.
The cost is rounded **up**: to the micro-dollar for ``llm_cost_usd_micros`` (metadata, access log, header,
metric) and to the centi-cent (10^-4 USD) for ``llm_cost_usd_centicents``, the unit of USD budgets. A priced
request is never free; rounding up overcharges a budget by less than $0.0001 per request.

Why centi-cents for budgets: the RLS protocol carries limits and remaining hits as uint32
(``RateLimitResponse.RateLimit.requests_per_unit``, ``DescriptorStatus.limit_remaining``), so a budget
counted in micro-dollars ends at 2^32-1 µ$ ≈ $4,294. In centi-cents it ends at ≈ $429,496 per counter and
window, and the ``x-ratelimit-*`` headers stay exact.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

from tokenvoy.config.model import ModelPrice
from tokenvoy.extproc.usage import TokenUsage

PICO_PER_MICRO = 10**6
PICO_PER_CENTICENT = 10**8

_REGION_PREFIX = re.compile(r"^(?:us|eu|apac|global|us-gov|jp|au|ca)\.")
_VENDOR_PREFIX = re.compile(r"^anthropic\.")
_REVISION_SUFFIX = re.compile(r":\d+$")
_VERSION_SUFFIX = re.compile(r"-v\d+$")
_DATE_SUFFIX = re.compile(r"(?:@\d{8}|-\d{8}|-\d{4}-\d{2}-\d{2})$")


def _pico(usd_per_million: float) -> int:
    """USD per million tokens -> pico-dollars per token, exactly (``str`` keeps the decimal the user wrote)."""
    return int((Decimal(str(usd_per_million)) * PICO_PER_MICRO).to_integral_value())


@dataclass(frozen=True, slots=True)
class TokenPrice:
    """One model's prices in pico-dollars per token."""

    model: str
    input: int
    cached_input: int
    cache_creation_input: int
    output: int

    @classmethod
    def of(cls, price: ModelPrice) -> TokenPrice:
        cached = price.input_per_million if price.cached_input_per_million is None else price.cached_input_per_million
        creation = price.cache_creation_input_per_million
        creation = price.input_per_million if creation is None else creation
        return cls(
            price.model, _pico(price.input_per_million), _pico(cached), _pico(creation), _pico(price.output_per_million)
        )


def cost_pico(price: TokenPrice, usage: TokenUsage) -> int:
    """Pico-dollars for ``usage``: uncached input, cached input, cache writes and output at their prices.

    ``usage.input`` includes cached and cache-creation tokens (extproc's normalised usage); reasoning tokens
    are part of ``output``."""
    cached = usage.cached_input
    creation = usage.cache_creation_input
    uncached = max(usage.input - cached - creation, 0)
    return (
        uncached * price.input
        + cached * price.cached_input
        + creation * price.cache_creation_input
        + usage.output * price.output
    )


def ceil_div(value: int, unit: int) -> int:
    return -(-value // unit)


def micros(pico: int) -> int:
    """Micro-dollars, rounded up."""
    return ceil_div(pico, PICO_PER_MICRO)


def centicents(pico: int) -> int:
    """Centi-cents (the unit of USD budgets), rounded up."""
    return ceil_div(pico, PICO_PER_CENTICENT)


def usd_text(micro_usd: int) -> str:
    """``1234`` -> ``"0.001234"``: the header value, exact and without exponent."""
    whole, fraction = divmod(micro_usd, PICO_PER_MICRO)
    return f"{whole}.{fraction:06d}"


def name_candidates(model: str) -> list[str]:
    """The model id, then ever more general forms of it: without a cloud region prefix (``us.``), the
    ``anthropic.`` vendor prefix of Bedrock, a ``:0`` revision, a ``-v1`` version and a dated snapshot."""
    names = [model]
    name = model
    for pattern in (_REGION_PREFIX, _VENDOR_PREFIX, _REVISION_SUFFIX, _VERSION_SUFFIX, _DATE_SUFFIX):
        stripped = pattern.sub("", name)
        if stripped != name and stripped:
            name = stripped
            names.append(name)
    return names


class PriceBook:
    """Overrides first, then the catalog; a model is looked up by its exact id, then its general forms.

    Lookups are memoised (bounded): the hot path pays a dict hit per model name."""

    def __init__(self, overrides: Iterable[ModelPrice], catalog: Iterable[ModelPrice] = ()) -> None:
        self._overrides = {price.model: TokenPrice.of(price) for price in overrides}
        self._catalog = {price.model: TokenPrice.of(price) for price in catalog}
        self.lookup = lru_cache(maxsize=1024)(self._lookup)

    def __bool__(self) -> bool:
        return bool(self._overrides or self._catalog)

    def _lookup(self, model: str) -> TokenPrice | None:
        for table in (self._overrides, self._catalog):
            for name in name_candidates(model):
                price = table.get(name)
                if price is not None:
                    return price
        return None

    def first(self, *models: str | None) -> TokenPrice | None:
        """The price of the first of ``models`` that has one (response model, model sent, client's model)."""
        for model in models:
            if model and (price := self.lookup(model)) is not None:
                return price
        return None
