"""The ``TokenvoyConfig`` resource: metric labels from request headers, their cap, and the price table."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenvoy.config.defaults import default_config_yaml
from tokenvoy.config.loader import RESERVED_METRIC_LABELS, ConfigError, load_config, load_text
from tokenvoy.config.model import MetricsSettings, ModelPrice
from tokenvoy.extproc import metrics

GATEWAY = default_config_yaml({})
FULL = """\
---
apiVersion: tokenvoy.io/v1alpha1
kind: TokenvoyConfig
metadata:
  name: tokenvoy
spec:
  metrics:
    requestHeaderLabels:
      X-User-Id: user
      x-team: team
    maxLabelValues: 50
    clientFromUserAgent: true
  pricing:
    - model: gpt-4o-mini
      inputPerMillion: 0.15
      cachedInputPerMillion: 0.075
      outputPerMillion: 0.6
    - model: claude-sonnet-4
      inputPerMillion: 3
      cachedInputPerMillion: 0.3
      cacheCreationInputPerMillion: 3.75
      outputPerMillion: 15
    - model: free
      inputPerMillion: 0
      outputPerMillion: 0
"""


def _tokenvoy(spec: str, name: str = "tokenvoy", api_version: str = "tokenvoy.io/v1alpha1") -> str:
    return f"---\napiVersion: {api_version}\nkind: TokenvoyConfig\nmetadata:\n  name: {name}\nspec:\n{spec}"


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as excinfo:
        load_text(GATEWAY + text, "gw.yaml")
    return excinfo.value.problems


def test_without_a_tokenvoy_config_metrics_have_no_extra_labels_and_nothing_is_priced() -> None:
    config = load_text(GATEWAY)
    assert config.metrics == MetricsSettings(
        request_header_labels=(), max_label_values=100, client_from_user_agent=False
    )
    assert config.pricing == ()


def test_a_full_tokenvoy_config_is_read_into_the_model() -> None:
    config = load_text(GATEWAY + FULL)
    assert config.metrics == MetricsSettings(
        request_header_labels=(("x-user-id", "user"), ("x-team", "team")),  # header names lower-cased, order kept
        max_label_values=50,
        client_from_user_agent=True,
    )
    assert config.pricing == (
        ModelPrice("gpt-4o-mini", 0.15, 0.6, cached_input_per_million=0.075),
        ModelPrice("claude-sonnet-4", 3.0, 15.0, cached_input_per_million=0.3, cache_creation_input_per_million=3.75),
        ModelPrice("free", 0.0, 0.0),
    )


def test_load_config_from_files_keeps_the_tokenvoy_settings(tmp_path: Path) -> None:
    gateway, settings = tmp_path / "gateway.yaml", tmp_path / "tokenvoy.yaml"
    gateway.write_text(GATEWAY)
    settings.write_text(FULL)
    config = load_config([gateway, settings])
    assert config.metrics.request_header_labels == (("x-user-id", "user"), ("x-team", "team"))
    assert [price.model for price in config.pricing] == ["gpt-4o-mini", "claude-sonnet-4", "free"]


def test_unknown_fields_are_errors_with_file_resource_and_path() -> None:
    problems = _problems(
        _tokenvoy(
            "  metrics:\n    maxLabelValue: 3\n  prices: []\n"
            "  pricing:\n    - model: m\n      inputPerMillion: 1\n      outputPerMillion: 1\n      perRequest: 1\n"
        )
    )
    assert problems == [  # every problem at once
        "gw.yaml: TokenvoyConfig/tokenvoy: spec.prices: unknown field "
        "(known: anthropicBetas, cost, metrics, modelAccess, pricing, tracing)",
        "gw.yaml: TokenvoyConfig/tokenvoy: spec.metrics.maxLabelValue: unknown field "
        "(known: clientFromUserAgent, maxLabelValues, requestHeaderLabels)",
        "gw.yaml: TokenvoyConfig/tokenvoy: spec.pricing[0].perRequest: unknown field (known: "
        "cacheCreationInputPerMillion, cachedInputPerMillion, inputPerMillion, model, outputPerMillion)",
    ]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "  metrics:\n    requestHeaderLabels:\n      x-user-id: user-name\n",
            "spec.metrics.requestHeaderLabels.x-user-id: 'user-name' is not a Prometheus label name",
        ),
        (
            "  metrics:\n    requestHeaderLabels:\n      x-user-id: __user\n",
            "spec.metrics.requestHeaderLabels.x-user-id: '__user' is not a Prometheus label name",
        ),
        (
            "  metrics:\n    requestHeaderLabels:\n      x-model: gen_ai_request_model\n",
            "spec.metrics.requestHeaderLabels.x-model: label 'gen_ai_request_model' is already used",
        ),
        (
            "  metrics:\n    requestHeaderLabels:\n      x-a: who\n      x-b: who\n",
            "spec.metrics.requestHeaderLabels.x-b: label 'who' is already used",
        ),
        (
            "  metrics:\n    clientFromUserAgent: true\n    requestHeaderLabels:\n      x-app: client\n",
            "spec.metrics.requestHeaderLabels.x-app: label 'client' is already used",
        ),
        ("  metrics:\n    requestHeaderLabels: [x-user-id]\n", "spec.metrics.requestHeaderLabels: must be a mapping"),
        ("  metrics:\n    maxLabelValues: 0\n", "spec.metrics.maxLabelValues: must be an integer >= 1, got 0"),
        ("  metrics:\n    maxLabelValues: many\n", "spec.metrics.maxLabelValues: must be an integer >= 1"),
        (
            "  metrics:\n    clientFromUserAgent: yes-please\n",
            "spec.metrics.clientFromUserAgent: must be true or false",
        ),
        ("  metrics: []\n", "spec.metrics: must be a mapping, got list"),
        ("  pricing: {}\n", "spec.pricing: must be a list, got dict"),
        ("  pricing:\n    - inputPerMillion: 1\n      outputPerMillion: 1\n", "spec.pricing[0].model: required"),
        ("  pricing:\n    - model: m\n      outputPerMillion: 1\n", "spec.pricing[0].inputPerMillion: required"),
        (
            "  pricing:\n    - model: m\n      inputPerMillion: -1\n      outputPerMillion: 1\n",
            "spec.pricing[0].inputPerMillion: must be a number >= 0 (USD per million tokens), got -1",
        ),
        (
            "  pricing:\n    - model: m\n      inputPerMillion: '1'\n      outputPerMillion: 1\n",
            "spec.pricing[0].inputPerMillion: must be a number >= 0",
        ),
        (
            "  pricing:\n    - model: m\n      inputPerMillion: 1\n      outputPerMillion: .inf\n",
            "spec.pricing[0].outputPerMillion: must be a number >= 0",
        ),
        (
            "  pricing:\n    - model: m\n      inputPerMillion: 1\n      outputPerMillion: 1\n"
            "      cachedInputPerMillion: true\n",
            "spec.pricing[0].cachedInputPerMillion: must be a number >= 0",
        ),
        (
            "  pricing:\n    - {model: m, inputPerMillion: 1, outputPerMillion: 1}\n"
            "    - {model: m, inputPerMillion: 2, outputPerMillion: 2}\n",
            "spec.pricing[1].model: 'm' is priced twice",
        ),
    ],
)
def test_invalid_values_are_reported_with_their_path(spec: str, expected: str) -> None:
    problems = _problems(_tokenvoy(spec))
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"gw.yaml: TokenvoyConfig/tokenvoy: {expected}"), problems


def test_the_api_version_is_checked() -> None:
    problems = _problems(_tokenvoy("  metrics: {}\n", api_version="aigateway.envoyproxy.io/v1alpha1"))
    assert problems == [
        "gw.yaml: TokenvoyConfig/tokenvoy: apiVersion: "
        "must be tokenvoy.io/v1alpha1, got 'aigateway.envoyproxy.io/v1alpha1'"
    ]


def test_only_one_tokenvoy_config_is_allowed() -> None:
    problems = _problems(_tokenvoy("  metrics: {}\n", "first") + _tokenvoy("  metrics: {}\n", "second"))
    assert problems == [
        "gw.yaml: TokenvoyConfig/second: "
        "only one TokenvoyConfig is allowed, also defined: TokenvoyConfig/first (gw.yaml)"
    ]


def test_the_reserved_label_names_cover_every_label_tokenvoys_metrics_use() -> None:
    observer = metrics.PrometheusObserver()
    used = {
        name
        for family in (
            observer.token_usage,
            observer.request_duration,
            observer.time_to_first_token,
            observer.time_per_output_token,
            observer.cost,
            observer.gateway_overhead,
        )
        for name in family._labelnames
    }
    assert used <= RESERVED_METRIC_LABELS


def test_anthropic_betas_set_the_allowlist_of_every_backend_of_that_schema() -> None:
    spec = (
        "  anthropicBetas:\n    AWSAnthropic: [claude-code-20250219, ' effort-2025-11-24']\n    GCPAnthropic: ['*']\n"
    )
    config = load_text(GATEWAY + _tokenvoy(spec))
    betas = {name: backend.anthropic_betas for name, backend in config.backends.items()}
    assert betas["fake-bedrock-anthropic"] == frozenset({"claude-code-20250219", "effort-2025-11-24"})
    assert betas["fake-vertex-anthropic"] == frozenset({"*"})
    assert betas["fake-bedrock"] is None and betas["fake"] is None  # the schema's default (AWS's documented list)


def test_bad_anthropic_betas_are_errors_naming_the_path() -> None:
    spec = "  anthropicBetas:\n    OpenAI: [x]\n    AWSBedrock: 'a,b'\n    GCPAnthropic: ['a,b']\n"
    assert _problems(_tokenvoy(spec)) == [
        "gw.yaml: TokenvoyConfig/tokenvoy: spec.anthropicBetas.OpenAI: unknown field "
        "(known: AWSAnthropic, AWSBedrock, Anthropic, GCPAnthropic)",
        "gw.yaml: TokenvoyConfig/tokenvoy: spec.anthropicBetas.AWSBedrock: must be a list, got str",
        "gw.yaml: TokenvoyConfig/tokenvoy: spec.anthropicBetas.GCPAnthropic: each entry must be one beta flag "
        "(no commas), got 'a,b'",
    ]
