"""GenAI metrics: exact Prometheus names, labels and bucket counts for each kind of request, the label cap,
the cost arithmetic, and the admin HTTP port that serves them."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client import generate_latest

from tests.ports import free_port
from tokenvoy.admin import AdminServer, parse_admin_listen
from tokenvoy.config.model import (
    MODEL_HEADER,
    BackendRef,
    GatewayConfig,
    HeaderMatch,
    HeaderMatchType,
    MetricsSettings,
    ModelPrice,
    Route,
    Rule,
)
from tokenvoy.extproc import server
from tokenvoy.extproc.metrics import (
    GATEWAY_OVERHEAD_BUCKETS,
    REQUEST_DURATION_BUCKETS,
    TIME_PER_OUTPUT_TOKEN_BUCKETS,
    TIME_TO_FIRST_TOKEN_BUCKETS,
    TOKEN_BUCKETS,
    PrometheusObserver,
    classify_client,
)
from tokenvoy.extproc.observe import CompletedRequest
from tokenvoy.extproc.pricing import TokenPrice, cost_pico, micros
from tokenvoy.extproc.translate.base import ClientAPI
from tokenvoy.extproc.usage import TokenUsage
from tokenvoy.pb.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from tokenvoy.pb.envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc

BASE = (
    'gen_ai_operation_name="chat",gen_ai_original_model="gpt-4o-mini",gen_ai_provider_name="openai",'
    'gen_ai_request_model="gpt-4o-mini",gen_ai_response_model="gpt-4o-mini-2024-07-18"'
)


def completed(**changes: object) -> CompletedRequest:
    request = CompletedRequest(
        api=ClientAPI.OPENAI_CHAT,
        route="default",
        backend="openai",
        schema="OpenAI",
        original_model="gpt-4o-mini",
        request_model="gpt-4o-mini",
        response_model="gpt-4o-mini-2024-07-18",
        status=200,
        stream=False,
        usage=TokenUsage(input=3, output=5, total=8),
        started=100.0,
        finished=100.5,
        first_chunk_at=100.5,
        gateway_seconds=0.0007,
        error_type=None,
        request_headers={":path": "/v1/chat/completions", "x-user-id": "alice", "user-agent": "OpenAI/Python 1.99.0"},
        named_models=frozenset({"gpt-4o-mini"}),
    )
    return dataclasses.replace(request, **changes)


def exposition(observer: PrometheusObserver) -> list[str]:
    return generate_latest(observer.registry).decode().splitlines()


def samples(observer: PrometheusObserver, prefix: str) -> list[str]:
    return [line for line in exposition(observer) if line.startswith(prefix)]


def test_the_families_are_named_and_typed_as_the_genai_conventions_exported_to_prometheus() -> None:
    types = [line for line in exposition(PrometheusObserver()) if line.startswith("# TYPE")]
    assert types == [
        "# TYPE gen_ai_client_token_usage histogram",
        "# TYPE gen_ai_server_request_duration_seconds histogram",
        "# TYPE gen_ai_server_time_to_first_token_seconds histogram",
        "# TYPE gen_ai_server_time_per_output_token_seconds histogram",
        "# TYPE tokenvoy_cost_usd_total counter",
        "# TYPE tokenvoy_unpriced_requests_total counter",
        "# TYPE tokenvoy_gateway_overhead_seconds histogram",
        "# TYPE tokenvoy_extproc_messages_total counter",
    ]


def test_bucket_boundaries_are_the_semantic_conventions_ones() -> None:
    assert TOKEN_BUCKETS == (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
    assert REQUEST_DURATION_BUCKETS == (
        0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92
    )  # fmt: skip
    assert TIME_TO_FIRST_TOKEN_BUCKETS == (
        0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
        15.0, 20.0, 30.0, 45.0, 60.0,
    )  # fmt: skip
    assert TIME_PER_OUTPUT_TOKEN_BUCKETS == (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
    observer = PrometheusObserver()
    observer.request_completed(completed())
    les = [line.split('le="')[1].split('"')[0] for line in samples(observer, "gen_ai_client_token_usage_bucket")]
    assert les[:15] == [
        "1.0", "4.0", "16.0", "64.0", "256.0", "1024.0", "4096.0", "16384.0", "65536.0", "262144.0",
        "1.048576e+06", "4.194304e+06", "1.6777216e+07", "6.7108864e+07", "+Inf",
    ]  # fmt: skip


def test_a_plain_chat_request_records_tokens_duration_and_overhead_but_no_streaming_latencies() -> None:
    observer = PrometheusObserver()
    observer.request_completed(completed())
    tokens = samples(observer, "gen_ai_client_token_usage")
    assert f'gen_ai_client_token_usage_bucket{{{BASE},gen_ai_token_type="input",le="1.0"}} 0.0' in tokens
    assert f'gen_ai_client_token_usage_bucket{{{BASE},gen_ai_token_type="input",le="4.0"}} 1.0' in tokens
    assert f'gen_ai_client_token_usage_bucket{{{BASE},gen_ai_token_type="output",le="4.0"}} 0.0' in tokens
    assert f'gen_ai_client_token_usage_bucket{{{BASE},gen_ai_token_type="output",le="16.0"}} 1.0' in tokens
    assert [line for line in tokens if "_bucket" not in line] == [
        f'gen_ai_client_token_usage_count{{{BASE},gen_ai_token_type="input"}} 1.0',
        f'gen_ai_client_token_usage_sum{{{BASE},gen_ai_token_type="input"}} 3.0',
        f'gen_ai_client_token_usage_count{{{BASE},gen_ai_token_type="output"}} 1.0',
        f'gen_ai_client_token_usage_sum{{{BASE},gen_ai_token_type="output"}} 5.0',
    ]
    duration = samples(observer, "gen_ai_server_request_duration_seconds")
    assert f'gen_ai_server_request_duration_seconds_bucket{{error_type="",{BASE},le="0.32"}} 0.0' in duration
    assert f'gen_ai_server_request_duration_seconds_bucket{{error_type="",{BASE},le="0.64"}} 1.0' in duration
    assert duration[-2:] == [
        f'gen_ai_server_request_duration_seconds_count{{error_type="",{BASE}}} 1.0',
        f'gen_ai_server_request_duration_seconds_sum{{error_type="",{BASE}}} 0.5',
    ]
    overhead = samples(observer, "tokenvoy_gateway_overhead_seconds")
    labels = 'error_type="",gen_ai_operation_name="chat",gen_ai_provider_name="openai"'
    assert f'tokenvoy_gateway_overhead_seconds_bucket{{{labels},le="0.0005"}} 0.0' in overhead
    assert f'tokenvoy_gateway_overhead_seconds_bucket{{{labels},le="0.001"}} 1.0' in overhead
    assert overhead[-2:] == [
        f"tokenvoy_gateway_overhead_seconds_count{{{labels}}} 1.0",
        f"tokenvoy_gateway_overhead_seconds_sum{{{labels}}} 0.0007",
    ]
    assert len(overhead) == len(GATEWAY_OVERHEAD_BUCKETS) + 3
    assert samples(observer, "gen_ai_server_time_to_first_token") == []
    assert samples(observer, "gen_ai_server_time_per_output_token") == []
    assert samples(observer, "tokenvoy_cost") == []  # no cost computed: unpriced, counted as such
    unpriced = 'gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_request_model="gpt-4o-mini"'
    assert samples(observer, "tokenvoy_unpriced_requests_total") == [
        f"tokenvoy_unpriced_requests_total{{{unpriced}}} 1.0"
    ]


def test_a_streamed_request_records_time_to_first_token_and_time_per_output_token() -> None:
    observer = PrometheusObserver()
    observer.request_completed(
        completed(stream=True, started=100.0, first_chunk_at=100.25, finished=101.25, usage=TokenUsage(3, output=5))
    )
    ttft = samples(observer, "gen_ai_server_time_to_first_token_seconds")
    assert f'gen_ai_server_time_to_first_token_seconds_bucket{{{BASE},le="0.1"}} 0.0' in ttft
    assert f'gen_ai_server_time_to_first_token_seconds_bucket{{{BASE},le="0.25"}} 1.0' in ttft
    assert ttft[-2:] == [
        f"gen_ai_server_time_to_first_token_seconds_count{{{BASE}}} 1.0",
        f"gen_ai_server_time_to_first_token_seconds_sum{{{BASE}}} 0.25",
    ]
    # (request duration - time to first token) / (output tokens - 1) = 1.0 / 4
    tpot = samples(observer, "gen_ai_server_time_per_output_token_seconds")
    assert f'gen_ai_server_time_per_output_token_seconds_bucket{{{BASE},le="0.2"}} 0.0' in tpot
    assert f'gen_ai_server_time_per_output_token_seconds_bucket{{{BASE},le="0.3"}} 1.0' in tpot
    assert tpot[-1] == f"gen_ai_server_time_per_output_token_seconds_sum{{{BASE}}} 0.25"


def test_a_stream_with_one_output_token_or_no_usage_has_no_time_per_output_token() -> None:
    observer = PrometheusObserver()
    observer.request_completed(completed(stream=True, usage=TokenUsage(3, output=1)))
    observer.request_completed(completed(stream=True, usage=None))
    assert samples(observer, "gen_ai_server_time_to_first_token_seconds_count") == [
        f"gen_ai_server_time_to_first_token_seconds_count{{{BASE}}} 2.0"
    ]
    assert samples(observer, "gen_ai_server_time_per_output_token") == []


def test_cached_cache_creation_and_reasoning_tokens_are_recorded_only_when_present() -> None:
    observer = PrometheusObserver()
    observer.request_completed(completed(usage=TokenUsage(input=100, cached_input=60, output=20, reasoning=12)))
    observer.request_completed(completed(usage=TokenUsage(input=50, cache_creation_input=40, output=7)))
    sums = [line for line in samples(observer, "gen_ai_client_token_usage") if "_bucket" not in line]
    assert sums == [
        f'gen_ai_client_token_usage_count{{{BASE},gen_ai_token_type="input"}} 2.0',
        f'gen_ai_client_token_usage_sum{{{BASE},gen_ai_token_type="input"}} 150.0',
        f'gen_ai_client_token_usage_count{{{BASE},gen_ai_token_type="output"}} 2.0',
        f'gen_ai_client_token_usage_sum{{{BASE},gen_ai_token_type="output"}} 27.0',
        f'gen_ai_client_token_usage_count{{{BASE},gen_ai_token_type="cached_input"}} 1.0',
        f'gen_ai_client_token_usage_sum{{{BASE},gen_ai_token_type="cached_input"}} 60.0',
        f'gen_ai_client_token_usage_count{{{BASE},gen_ai_token_type="reasoning"}} 1.0',
        f'gen_ai_client_token_usage_sum{{{BASE},gen_ai_token_type="reasoning"}} 12.0',
        f'gen_ai_client_token_usage_count{{{BASE},gen_ai_token_type="cache_creation_input"}} 1.0',
        f'gen_ai_client_token_usage_sum{{{BASE},gen_ai_token_type="cache_creation_input"}} 40.0',
    ]


def test_a_provider_error_carries_error_type_and_has_no_token_or_streaming_series() -> None:
    observer = PrometheusObserver()
    observer.request_completed(
        completed(status=503, error_type="503", usage=None, response_model=None, stream=True, first_chunk_at=100.1)
    )
    labels = (
        'error_type="503",gen_ai_operation_name="chat",gen_ai_original_model="gpt-4o-mini",'
        'gen_ai_provider_name="openai",gen_ai_request_model="gpt-4o-mini",gen_ai_response_model="unknown"'
    )
    assert samples(observer, "gen_ai_server_request_duration_seconds_count") == [
        f"gen_ai_server_request_duration_seconds_count{{{labels}}} 1.0"
    ]
    assert samples(observer, "gen_ai_client_token_usage") == []
    assert samples(observer, "gen_ai_server_time_to_first_token") == []


def test_a_request_rejected_before_routing_has_unknown_model_and_provider_labels() -> None:
    observer = PrometheusObserver()
    rejected = completed(
        status=404,
        error_type="model_not_found",
        route=None,
        backend=None,
        schema=None,
        original_model=None,
        request_model=None,
        response_model=None,
        usage=None,
    )
    observer.request_completed(rejected)
    assert samples(observer, "gen_ai_server_request_duration_seconds_count") == [
        'gen_ai_server_request_duration_seconds_count{error_type="model_not_found",gen_ai_operation_name="chat",'
        'gen_ai_original_model="unknown",gen_ai_provider_name="unknown",gen_ai_request_model="unknown",'
        'gen_ai_response_model="unknown"} 1.0'
    ]
    assert samples(observer, "tokenvoy_gateway_overhead_seconds_count") == [
        'tokenvoy_gateway_overhead_seconds_count{error_type="model_not_found",gen_ai_operation_name="chat",'
        'gen_ai_provider_name="unknown"} 1.0'
    ]


def test_an_unknown_path_is_not_a_genai_operation_and_only_counts_as_overhead() -> None:
    observer = PrometheusObserver()
    observer.request_completed(completed(api=None, status=404, error_type="not_found_error", usage=None, schema=None))
    assert [line for line in exposition(observer) if not line.startswith("#") and "_count" in line] == [
        'tokenvoy_gateway_overhead_seconds_count{error_type="not_found_error",gen_ai_operation_name="",'
        'gen_ai_provider_name="unknown"} 1.0'
    ]


@pytest.mark.parametrize(
    ("schema", "provider"),
    [
        ("OpenAI", "openai"),
        ("AzureOpenAI", "azure.openai"),
        ("Anthropic", "anthropic"),
        ("AWSBedrock", "aws.bedrock"),
        ("AWSAnthropic", "aws.anthropic"),
        ("GCPVertexAI", "gcp.vertex_ai"),
        ("GCPAnthropic", "gcp.anthropic"),
        ("Cohere", "cohere"),
        ("SomethingNew", "somethingnew"),
    ],
)
def test_provider_name_is_envoy_ai_gateways_value_for_the_backend_schema(schema: str, provider: str) -> None:
    observer = PrometheusObserver()
    observer.request_completed(completed(schema=schema))
    (line,) = samples(observer, "tokenvoy_gateway_overhead_seconds_count")
    assert f'gen_ai_provider_name="{provider}"' in line


@pytest.mark.parametrize(
    ("api", "operation"),
    [
        (ClientAPI.OPENAI_CHAT, "chat"),
        (ClientAPI.ANTHROPIC_MESSAGES, "messages"),
        (ClientAPI.OPENAI_COMPLETIONS, "completion"),
        (ClientAPI.OPENAI_EMBEDDINGS, "embeddings"),
        (ClientAPI.OPENAI_RESPONSES, "responses"),
        (ClientAPI.OPENAI_RESPONSES_INPUT_TOKENS, "responses_input_tokens"),
    ],
)
def test_operation_name_is_envoy_ai_gateways_value_for_the_endpoint(api: ClientAPI, operation: str) -> None:
    observer = PrometheusObserver()
    observer.request_completed(completed(api=api))
    (line,) = samples(observer, "gen_ai_server_request_duration_seconds_count")
    assert f'gen_ai_operation_name="{operation}"' in line


def test_configured_request_headers_become_labels_and_their_values_are_capped() -> None:
    settings = MetricsSettings(request_header_labels=(("x-user-id", "user"), ("x-team", "team")), max_label_values=2)
    observer = PrometheusObserver(settings)
    for user in ["alice", "bob", "carol", "alice", "dave", None]:
        headers = {"x-team": "search"} if user is None else {"x-user-id": user, "x-team": "search"}
        observer.request_completed(completed(request_headers=headers))
    counts = samples(observer, "gen_ai_server_request_duration_seconds_count")
    assert counts == [
        f'gen_ai_server_request_duration_seconds_count{{error_type="",{BASE},team="search",user="alice"}} 2.0',
        f'gen_ai_server_request_duration_seconds_count{{error_type="",{BASE},team="search",user="bob"}} 1.0',
        f'gen_ai_server_request_duration_seconds_count{{error_type="",{BASE},team="search",user="other"}} 2.0',
        f'gen_ai_server_request_duration_seconds_count{{error_type="",{BASE},team="search",user=""}} 1.0',
    ]
    token_labels = samples(observer, "gen_ai_client_token_usage_count")[0].split("{")[1].split("}")[0]
    assert [pair.split("=")[0] for pair in token_labels.split(",")] == [
        "gen_ai_operation_name",
        "gen_ai_original_model",
        "gen_ai_provider_name",
        "gen_ai_request_model",
        "gen_ai_response_model",
        "gen_ai_token_type",
        "team",
        "user",
    ]
    # the overhead is about tokenvoy, not about users: it never carries header labels
    assert samples(observer, "tokenvoy_gateway_overhead_seconds_count") == [
        'tokenvoy_gateway_overhead_seconds_count{error_type="",gen_ai_operation_name="chat",'
        'gen_ai_provider_name="openai"} 6.0'
    ]


def model_labels(observer: PrometheusObserver) -> list[tuple[str, str, str, str]]:
    """(original, request, response model, count) of every request duration series."""
    out = []
    for line in samples(observer, "gen_ai_server_request_duration_seconds_count"):
        labels = dict(pair.split("=", 1) for pair in line.split("{")[1].split("}")[0].split(","))
        original, sent, answered = (
            labels[f"gen_ai_{kind}_model"].strip('"') for kind in ("original", "request", "response")
        )
        out.append((original, sent, answered, line.rsplit(" ", 1)[1]))
    return out


def test_a_model_the_config_does_not_name_is_other_so_junk_names_cannot_fill_the_cap() -> None:
    """A catch-all rule accepts any model: made-up names are one `other` series, and the model the config
    names keeps its own label however many junk names came first (the cap is never reached by them)."""
    observer = PrometheusObserver(MetricsSettings(max_label_values=2))
    for junk in [f"junk-{n}" for n in range(50)]:
        observer.request_completed(completed(original_model=junk, request_model=junk, response_model=junk))
    observer.request_completed(completed())
    assert model_labels(observer) == [
        ("other", "other", "other", "50.0"),
        ("gpt-4o-mini", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", "1.0"),
    ]


def test_the_config_names_exact_rule_models_overrides_and_priced_models_but_no_pattern() -> None:
    exact = Rule("exact", ((HeaderMatch(MODEL_HEADER, "gpt-4o-mini"),),), (BackendRef("a"),))
    pattern = HeaderMatch(MODEL_HEADER, "claude-.*", HeaderMatchType.REGULAR_EXPRESSION)
    override = Rule("override", ((pattern,),), (BackendRef("b", model_name_override="claude-3-5-haiku@20241022"),))
    catch_all = Rule("catch-all", (), (BackendRef("c"),))
    config = GatewayConfig(
        routes=(Route("r", (exact, override, catch_all)),),
        pricing=(ModelPrice("gpt-4.1", input_per_million=2, output_per_million=8),),
    )
    assert config.named_models() == {"gpt-4o-mini", "claude-3-5-haiku@20241022", "gpt-4.1"}


def test_a_backend_model_override_is_the_request_model_and_the_clients_name_the_original_model() -> None:
    named = frozenset({"my-alias", "claude-3-5-haiku@20241022"})
    observer = PrometheusObserver()
    observer.request_completed(
        completed(
            original_model="my-alias",
            request_model="claude-3-5-haiku@20241022",
            response_model="claude-3-5-haiku-20241022",
            named_models=named,
        )
    )
    assert model_labels(observer) == [("my-alias", "claude-3-5-haiku@20241022", "claude-3-5-haiku-20241022", "1.0")]


def test_response_models_the_provider_chose_are_capped() -> None:
    """A provider names its own (dated) models: kept up to maxLabelValues, then `other`."""
    observer = PrometheusObserver(MetricsSettings(max_label_values=2))
    for dated in ["gpt-4o-mini-a", "gpt-4o-mini-b", "gpt-4o-mini-c", "gpt-4o-mini-a"]:
        observer.request_completed(completed(response_model=dated))
    assert model_labels(observer) == [
        ("gpt-4o-mini", "gpt-4o-mini", "gpt-4o-mini-a", "2.0"),
        ("gpt-4o-mini", "gpt-4o-mini", "gpt-4o-mini-b", "1.0"),
        ("gpt-4o-mini", "gpt-4o-mini", "other", "1.0"),
    ]


def test_a_long_header_value_is_truncated() -> None:
    observer = PrometheusObserver(MetricsSettings(request_header_labels=(("x-user-id", "user"),)))
    observer.request_completed(completed(request_headers={"x-user-id": "u" * 1000}))
    (line,) = samples(observer, "gen_ai_server_request_duration_seconds_count")
    assert f'user="{"u" * 128}"' in line


@pytest.mark.parametrize(
    ("user_agent", "title", "client"),
    [
        ("claude-cli/2.0.69 (external, cli)", "", "claude-code"),
        ("OpenAI/JS 4.104.0", "Cline", "cline"),
        ("Cline/4.1.16 ai-sdk/openai-compatible/3.0.30", "", "cline"),
        ("codex_cli_rs/0.30.0 (Mac OS 15.5.0; arm64)", "", "codex"),
        ("OpenAI/Python 1.99.0", "", "openai-python"),
        ("OpenAI/JS 4.104.0", "", "openai-node"),
        ("Anthropic/Python 0.64.0", "", "anthropic-python"),
        ("Anthropic/JS 0.60.0", "", "anthropic-node"),
        ("curl/8.5.0", "", "curl"),
        ("python-httpx/0.28.1", "", "python-httpx"),
        ("python-requests/2.32.3", "", "python-requests"),
        ("Mozilla/5.0 (X11; Linux x86_64)", "", "browser"),
        ("my-own-tool/1.0", "", "other"),
        ("", "", "other"),
    ],
)
def test_user_agents_are_classified_into_a_few_client_families(user_agent: str, title: str, client: str) -> None:
    assert classify_client(user_agent, title) == client


def test_the_client_label_comes_from_the_user_agent_when_enabled() -> None:
    observer = PrometheusObserver(MetricsSettings(client_from_user_agent=True))
    observer.request_completed(completed(request_headers={"user-agent": "claude-cli/2.0.69 (external, cli)"}))
    observer.request_completed(completed(request_headers={"user-agent": "curl/8.5.0"}))
    observer.request_completed(completed(request_headers={}))
    assert samples(observer, "gen_ai_client_token_usage_count") == [
        f'gen_ai_client_token_usage_count{{client="claude-code",{BASE},gen_ai_token_type="input"}} 1.0',
        f'gen_ai_client_token_usage_count{{client="claude-code",{BASE},gen_ai_token_type="output"}} 1.0',
        f'gen_ai_client_token_usage_count{{client="curl",{BASE},gen_ai_token_type="input"}} 1.0',
        f'gen_ai_client_token_usage_count{{client="curl",{BASE},gen_ai_token_type="output"}} 1.0',
        f'gen_ai_client_token_usage_count{{client="other",{BASE},gen_ai_token_type="input"}} 1.0',
        f'gen_ai_client_token_usage_count{{client="other",{BASE},gen_ai_token_type="output"}} 1.0',
    ]


GPT_4O_MINI = ModelPrice("gpt-4o-mini", input_per_million=0.15, output_per_million=0.6, cached_input_per_million=0.075)


def _micros(price: ModelPrice, usage: TokenUsage) -> int:
    return micros(cost_pico(TokenPrice.of(price), usage))


def test_cost_is_uncached_input_plus_cached_input_plus_output_at_their_prices() -> None:
    # 600 uncached * 0.15 + 400 cached * 0.075 + 500 output * 0.6 = 420 micro-USD, exactly
    usage = TokenUsage(input=1000, cached_input=400, output=500, total=1500)
    assert _micros(GPT_4O_MINI, usage) == 420
    # without a cached price, cached input costs the input price
    no_cache_price = ModelPrice("m", input_per_million=0.15, output_per_million=0.6)
    assert _micros(no_cache_price, usage) == 1000 * 0.15 + 500 * 0.6
    # Anthropic-style: input includes cache reads and cache writes, each at its own price
    claude = ModelPrice("claude", 3.0, 15.0, cached_input_per_million=0.3, cache_creation_input_per_million=3.75)
    usage = TokenUsage(input=10_000, cached_input=6_000, cache_creation_input=3_000, output=200)
    assert _micros(claude, usage) == 1_000 * 3 + 6_000 * 0.3 + 3_000 * 3.75 + 200 * 15
    # rounded up, never free: one gpt-4o-mini input token is 0.15 µ$
    assert _micros(GPT_4O_MINI, TokenUsage(input=1, total=1)) == 1


def test_the_cost_counter_adds_the_cost_extproc_computed_and_counts_unpriced_requests() -> None:
    observer = PrometheusObserver(MetricsSettings())
    observer.request_completed(completed(cost_usd_micros=420))
    observer.request_completed(completed(cost_usd_micros=420))
    observer.request_completed(completed(request_model="unpriced", cost_usd_micros=None))
    assert samples(observer, "tokenvoy_cost_usd_total") == [f"tokenvoy_cost_usd_total{{{BASE}}} 0.00084"]
    (line,) = samples(observer, "tokenvoy_unpriced_requests_total")
    assert 'gen_ai_request_model="other"' in line and line.endswith(" 1.0")  # an unnamed model is `other`


# ---- the admin port ---------------------------------------------------------------------------------------


async def _get(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *header_lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    return status, headers, body


async def test_the_admin_port_serves_metrics_and_healthz() -> None:
    observer = PrometheusObserver()
    observer.request_completed(completed())
    admin = AdminServer(observer.registry, "127.0.0.1:0")
    await admin.start()
    try:
        status, headers, body = await _get(admin.port, b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        assert status == "HTTP/1.1 200 OK"
        assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert int(headers["content-length"]) == len(body)
        assert body == generate_latest(observer.registry)

        accept = b"accept: application/openmetrics-text; version=1.0.0\r\n"
        status, headers, body = await _get(admin.port, b"GET /metrics HTTP/1.1\r\n" + accept + b"\r\n")
        assert headers["content-type"].startswith("application/openmetrics-text")
        assert b"# TYPE gen_ai_client_token_usage histogram" in body
        assert body.endswith(b"# EOF\n")

        assert await _get(admin.port, b"GET /healthz HTTP/1.1\r\n\r\n") == (
            "HTTP/1.1 200 OK",
            {"content-type": "text/plain; charset=utf-8", "content-length": "3", "connection": "close"},
            b"ok\n",
        )
        status, headers, body = await _get(admin.port, b"HEAD /healthz HTTP/1.1\r\n\r\n")
        assert (status, headers["content-length"], body) == ("HTTP/1.1 200 OK", "3", b"")
        assert (await _get(admin.port, b"GET /nope HTTP/1.1\r\n\r\n"))[0] == "HTTP/1.1 404 Not Found"
        status, headers, _ = await _get(admin.port, b"POST /metrics HTTP/1.1\r\ncontent-length: 0\r\n\r\n")
        assert (status, headers["allow"]) == ("HTTP/1.1 405 Method Not Allowed", "GET, HEAD")
        assert (await _get(admin.port, b"garbage\r\n\r\n"))[0] == "HTTP/1.1 400 Bad Request"
        admin.start_draining()
        status, _, body = await _get(admin.port, b"GET /healthz HTTP/1.1\r\n\r\n")
        assert (status, body) == ("HTTP/1.1 503 Service Unavailable", b"stopping: draining in-flight requests\n")
        assert (await _get(admin.port, b"GET /metrics HTTP/1.1\r\n\r\n"))[0] == "HTTP/1.1 200 OK"  # still scraped
    finally:
        await admin.close()


async def test_healthcheck_answers_as_envoyproxy_ratelimits_does() -> None:
    # EG's probes of its ratelimit Deployment: GET /healthcheck, "OK" or 500
    admin = AdminServer(PrometheusObserver().registry, "127.0.0.1:0")
    await admin.start()
    try:
        status, headers, body = await _get(admin.port, b"GET /healthcheck HTTP/1.1\r\n\r\n")
        assert (status, headers["content-length"], body) == ("HTTP/1.1 200 OK", "2", b"OK")
        reason: list[str | None] = ["no rate limit configuration loaded yet"]
        admin.not_ready = lambda: reason[0]
        status, _, body = await _get(admin.port, b"GET /healthcheck HTTP/1.1\r\n\r\n")
        assert (status, body) == ("HTTP/1.1 500 Internal Server Error", b"no rate limit configuration loaded yet\n")
        reason[0] = None
        assert (await _get(admin.port, b"GET /healthcheck HTTP/1.1\r\n\r\n"))[2] == b"OK"
        admin.start_draining()
        status, _, body = await _get(admin.port, b"GET /healthcheck HTTP/1.1\r\n\r\n")
        assert (status, body) == ("HTTP/1.1 500 Internal Server Error", b"stopping: draining in-flight requests\n")
    finally:
        await admin.close()


async def test_a_busy_admin_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        admin = AdminServer(PrometheusObserver().registry, f"127.0.0.1:{port}")
        with pytest.raises(ValueError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            await admin.start()


def test_listen_addresses() -> None:
    assert parse_admin_listen("127.0.0.1:1064") == ("127.0.0.1", 1064)
    assert parse_admin_listen("[::1]:9000") == ("::1", 9000)
    assert parse_admin_listen("0.0.0.0:0") == ("0.0.0.0", 0)
    for bad in ["1064", ":1064", "host:", "host:http", "host:70000"]:
        with pytest.raises(ValueError, match="must be HOST:PORT"):
            parse_admin_listen(bad)


def test_extproc_flags() -> None:
    defaults = server.parse_args([])
    assert (defaults.listen, defaults.admin_listen, defaults.no_admin) == ("127.0.0.1:1063", "127.0.0.1:1064", False)
    chosen = server.parse_args(["--admin-listen", "0.0.0.0:9464", "--no-admin"])
    assert (chosen.admin_listen, chosen.no_admin) == ("0.0.0.0:9464", True)


def test_tokenvoy_extproc_serves_healthz_and_refuses_a_busy_admin_port(tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "tokenvoy", "extproc", "--listen", f"unix:{tmp_path / 'x.sock'}"]
    process = subprocess.Popen([*argv, "--admin-listen", f"127.0.0.1:{port}"], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            try:
                status, _, body = asyncio.run(_get(port, b"GET /healthz HTTP/1.1\r\n\r\n"))
                break
            except OSError:
                assert time.monotonic() < deadline, "extproc did not start"
                time.sleep(0.05)
        assert (status, body) == ("HTTP/1.1 200 OK", b"ok\n")
        # a second extproc on the same admin port stops at once and says why
        second = subprocess.run(
            [*argv[:-1], f"unix:{tmp_path / 'y.sock'}", "--admin-listen", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 2
        assert f"tokenvoy extproc: cannot serve metrics on 127.0.0.1:{port}" in second.stderr
        # Stopping: while an open ext_proc stream holds the grace period, /healthz says 503 so no new work comes.
        release = threading.Event()

        def requests() -> Iterator[ep.ProcessingRequest]:
            release.wait(20)
            return
            yield

        with grpc.insecure_channel(f"unix:{tmp_path / 'x.sock'}") as channel:
            call = ep_grpc.ExternalProcessorStub(channel).Process(requests())
            time.sleep(0.5)  # the stream is open on the server
            process.terminate()
            deadline = time.monotonic() + 5
            while (status := asyncio.run(_get(port, b"GET /healthz HTTP/1.1\r\n\r\n"))[0]) == "HTTP/1.1 200 OK":
                assert time.monotonic() < deadline, "healthz still 200 after SIGTERM"
                time.sleep(0.05)
            assert status == "HTTP/1.1 503 Service Unavailable"
            assert process.poll() is None, "in-flight streams keep the process up while it drains"
            release.set()
            list(call)
        assert process.wait(15) == 0
    finally:
        process.terminate()
        process.wait(15)


def test_the_router_streams_messages_are_counted_by_phase() -> None:
    observer = PrometheusObserver()
    phases = {"request_headers": 1, "request_body": 1, "response_headers": 1, "response_body": 3}
    observer.request_completed(completed(messages=phases))
    observer.request_completed(completed(messages={"request_headers": 1, "request_body": 1, "response_headers": 1}))
    assert sorted(samples(observer, "tokenvoy_extproc_messages_total")) == [
        'tokenvoy_extproc_messages_total{phase="request_body"} 2.0',
        'tokenvoy_extproc_messages_total{phase="request_headers"} 2.0',
        'tokenvoy_extproc_messages_total{phase="response_body"} 3.0',
        'tokenvoy_extproc_messages_total{phase="response_headers"} 2.0',
    ]
