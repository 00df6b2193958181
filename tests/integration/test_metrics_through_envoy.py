"""extproc's /metrics through real Envoy: the token counts Prometheus would scrape are the usage clients saw."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from fractions import Fraction

import httpx
import pytest
import yaml
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import Gateway, free_port, gateway_config, start_gateway

MESSAGES = [{"role": "user", "content": "hello there gateway"}]
PRICE = {"model": "gpt-4o-mini", "inputPerMillion": 0.15, "cachedInputPerMillion": 0.075, "outputPerMillion": 0.6}
TOKENVOY_CONFIG = {
    "apiVersion": "tokenvoy.io/v1alpha1",
    "kind": "TokenvoyConfig",
    "metadata": {"name": "tokenvoy"},
    "spec": {
        "metrics": {"requestHeaderLabels": {"x-user-id": "user"}, "maxLabelValues": 10, "clientFromUserAgent": True},
        "pricing": [PRICE],
    },
}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    documents = [*yaml.safe_load_all(gateway_config(free_port(), fake_port := free_port(), 100_000)), TOKENVOY_CONFIG]
    running = start_gateway(
        tmp_path_factory.mktemp("metrics"), config_text=yaml.safe_dump_all(documents), fake_port=fake_port
    )
    try:
        yield running
    finally:
        running.stop()


def client(gateway: Gateway, user: str) -> OpenAI:
    return OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", default_headers={"x-user-id": user}, max_retries=0)


def scrape(gateway: Gateway) -> Samples:
    reply = httpx.get(f"{gateway.metrics_url}/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def wait_for(gateway: Gateway, ready: Callable[[Samples], bool], timeout: float = 10.0) -> Samples:
    """extproc records a request when Envoy closes its stream, a moment after the client has the answer."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(gateway)
        if ready(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def labels(user: str, **extra: str) -> frozenset[tuple[str, str]]:
    return frozenset(
        {
            "gen_ai_operation_name": "chat",
            "gen_ai_provider_name": "openai",
            "gen_ai_original_model": "gpt-4o-mini",
            "gen_ai_request_model": "gpt-4o-mini",
            "gen_ai_response_model": "gpt-4o-mini",
            "user": user,
            "client": "openai-python",
            **extra,
        }.items()
    )


def test_healthz_answers_200(gateway: Gateway) -> None:
    reply = httpx.get(f"{gateway.metrics_url}/healthz")
    assert (reply.status_code, reply.text) == (200, "ok\n")


def test_token_usage_per_user_equals_what_the_clients_saw(gateway: Gateway) -> None:
    alice, bob = client(gateway, "metrics-alice"), client(gateway, "metrics-bob")
    plain = [
        alice.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=5).usage,
        alice.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=2).usage,
    ]
    chunks = list(
        bob.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            max_tokens=7,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = chunks[-1].usage
    assert streamed is not None

    def token(user: str, kind: str, suffix: str, **extra: str) -> tuple[str, frozenset[tuple[str, str]]]:
        return (f"gen_ai_client_token_usage_{suffix}", labels(user, gen_ai_token_type=kind, **extra))

    def all_recorded(samples: Samples) -> bool:
        alice_done = samples.get(token("metrics-alice", "output", "count")) == 2
        return alice_done and samples.get(token("metrics-bob", "output", "count")) == 1

    samples = wait_for(gateway, all_recorded)
    assert samples[token("metrics-alice", "input", "sum")] == sum(u.prompt_tokens for u in plain)
    assert samples[token("metrics-alice", "output", "sum")] == sum(u.completion_tokens for u in plain)
    assert samples[token("metrics-alice", "input", "count")] == 2
    assert samples[token("metrics-alice", "output", "count")] == 2
    assert samples[token("metrics-bob", "input", "sum")] == streamed.prompt_tokens
    assert samples[token("metrics-bob", "output", "sum")] == streamed.completion_tokens
    assert samples[token("metrics-bob", "output", "count")] == 1
    # alice's 2 and 5 output tokens fall in the (1, 4] and (4, 16] buckets
    assert samples[token("metrics-alice", "output", "bucket", le="1.0")] == 0
    assert samples[token("metrics-alice", "output", "bucket", le="4.0")] == 1
    assert samples[token("metrics-alice", "output", "bucket", le="16.0")] == 2

    duration = "gen_ai_server_request_duration_seconds_count"
    assert samples[(duration, labels("metrics-alice", error_type=""))] == 2
    assert samples[(duration, labels("metrics-bob", error_type=""))] == 1
    # only the stream has a time to first token and a time per output token
    assert samples[("gen_ai_server_time_to_first_token_seconds_count", labels("metrics-bob"))] == 1
    assert samples[("gen_ai_server_time_per_output_token_seconds_count", labels("metrics-bob"))] == 1
    assert ("gen_ai_server_time_to_first_token_seconds_count", labels("metrics-alice")) not in samples

    # each request's cost is rounded up to the micro-dollar (extproc/pricing.py), then summed
    expected_micros = sum(
        math.ceil(
            Fraction(u.prompt_tokens) * Fraction(str(PRICE["inputPerMillion"]))
            + Fraction(u.completion_tokens) * Fraction(str(PRICE["outputPerMillion"]))
        )
        for u in plain
    )
    expected_cost = expected_micros / 1e6
    assert samples[("tokenvoy_cost_usd_total", labels("metrics-alice"))] == pytest.approx(expected_cost, rel=1e-9)

    overhead = {key: value for key, value in samples.items() if key[0] == "tokenvoy_gateway_overhead_seconds_count"}
    ok = frozenset({"gen_ai_operation_name": "chat", "gen_ai_provider_name": "openai", "error_type": ""}.items())
    assert overhead[("tokenvoy_gateway_overhead_seconds_count", ok)] >= 3
    assert samples[("tokenvoy_gateway_overhead_seconds_sum", ok)] > 0


def test_a_rejected_request_is_counted_with_its_error_type(gateway: Gateway) -> None:
    reply = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json", "x-user-id": "metrics-carol", "user-agent": "curl/8.5.0"},
    )
    assert reply.status_code == 400
    key = (
        "gen_ai_server_request_duration_seconds_count",
        frozenset(
            {
                "gen_ai_operation_name": "chat",
                "gen_ai_provider_name": "unknown",
                "gen_ai_original_model": "unknown",
                "gen_ai_request_model": "unknown",
                "gen_ai_response_model": "unknown",
                "error_type": "invalid_request_error",
                "user": "metrics-carol",
                "client": "curl",
            }.items()
        ),
    )
    assert wait_for(gateway, lambda s: key in s).get(key) == 1


def test_made_up_model_names_through_the_catch_all_rule_are_one_other_series(gateway: Gateway) -> None:
    """The catch-all rule answers any model; only gpt-4o-mini (priced, so named by the config) gets its own
    label, even after more made-up names than maxLabelValues (10)."""
    dave = client(gateway, "metrics-dave")
    for n in range(12):
        dave.chat.completions.create(model=f"made-up-{n}", messages=MESSAGES, max_tokens=1)
    dave.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=1)
    duration = "gen_ai_server_request_duration_seconds_count"
    other = labels(
        "metrics-dave",
        error_type="",
        gen_ai_original_model="other",
        gen_ai_request_model="other",
        gen_ai_response_model="other",
    )
    named = labels("metrics-dave", error_type="")
    samples = wait_for(gateway, lambda s: s.get((duration, other)) == 12 and s.get((duration, named)) == 1)
    assert samples.get((duration, other)) == 12
    assert samples.get((duration, named)) == 1
    models = {dict(key[1]).get("gen_ai_original_model") for key in samples if key[0] == duration}
    assert not any(model.startswith("made-up") for model in models if model), models


def test_the_metrics_port_is_per_run(gateway: Gateway) -> None:
    """``tokenvoy run --metrics-port`` is what the tests use to avoid the default 1064."""
    assert gateway.metrics_url != "http://127.0.0.1:1064"
    assert f"Prometheus metrics: {gateway.metrics_url}/metrics" in gateway.stderr()
