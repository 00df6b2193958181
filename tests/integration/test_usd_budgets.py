"""USD budgets through real Envoy with the official SDKs: the cost in the access log and header equals the
price catalog's arithmetic; a per-key USD budget ends in a 429 with x-ratelimit-* headers; counters are per
route unless `shared: true`; the fail-open leak of reservation mode (an injected RLS delay) is closed; an
agent's in-flight requests are capped."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import anthropic
import grpc
import httpx
import openai
import pytest
import yaml

from tests.integration.conftest import Gateway, free_port, start_gateway
from tests.integration.rls_proxy import RlsProxy
from tokenvoy.config.catalog import BUNDLED_PRICES
from tokenvoy.config.defaults import default_config_yaml
from tokenvoy.pb.envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from tokenvoy.pb.envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

KEY_LIMIT = 40  # centi-cents a day per key: $0.004
TEAM_LIMIT = 40  # centi-cents a month per team, one counter for both routes
KEY_BUDGET = "per-key-daily-usd/rule/0"
COST_KEY = {"namespace": "io.envoy.ai_gateway", "key": "llm_cost_usd_centicents"}
PRICES = {price.model: price for price in BUNDLED_PRICES}


def _policy(name: str, header: str, limit: int, unit: str, routes: list[str], mode: str, **rule: object) -> dict:
    return {
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "BackendTrafficPolicy",
        "metadata": {"name": name, "annotations": {"tokenvoy.io/budget-mode": mode}},
        "spec": {
            "targetRefs": [{"group": "aigateway.envoyproxy.io", "kind": "AIGatewayRoute", "name": r} for r in routes],
            "rateLimit": {
                "type": "Global",
                "global": {
                    "rules": [
                        {
                            "clientSelectors": [{"headers": [{"name": header, "type": "Distinct"}]}],
                            "limit": {"requests": limit, "unit": unit},
                            "cost": {
                                "request": {"from": "Number", "number": 0},
                                "response": {"from": "Metadata", "metadata": COST_KEY},
                            },
                            **rule,
                        }
                    ]
                },
            },
        },
    }


def _config(fake_port: int) -> str:
    documents = [d for d in yaml.safe_load_all(default_config_yaml({})) if d["kind"] != "BackendTrafficPolicy"]
    for doc in documents:
        if doc["kind"] == "Backend":
            doc["spec"]["endpoints"][0]["ip"]["port"] = fake_port
    default_route = next(d for d in documents if d["kind"] == "AIGatewayRoute")
    second = {
        "apiVersion": "aigateway.envoyproxy.io/v1alpha1",
        "kind": "AIGatewayRoute",
        "metadata": {"name": "second"},
        "spec": {
            "rules": [
                {
                    "matches": [{"headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": "claude-on-second"}]}],
                    "backendRefs": [{"name": "fake-anthropic", "modelNameOverride": "claude-sonnet-4-6"}],
                }
            ],
            "llmRequestCosts": default_route["spec"]["llmRequestCosts"],
        },
    }
    documents.insert(documents.index(default_route), second)  # before the default route's catch-all rule
    both = ["default", "second"]
    documents += [
        _policy("per-key-daily-usd", "x-user-id", KEY_LIMIT, "Day", both, "reservation"),
        _policy("per-team-monthly-usd", "x-team-id", TEAM_LIMIT, "Month", both, "reservation", shared=True),
        _policy("agent-in-flight", "x-agent-id", 2, "Second", ["default"], "concurrency"),
        {
            "apiVersion": "tokenvoy.io/v1alpha1",
            "kind": "TokenvoyConfig",
            "metadata": {"name": "tokenvoy"},
            "spec": {"cost": {"responseHeader": True}},
        },
    ]
    documents[-4]["metadata"]["annotations"]["tokenvoy.io/default-max-tokens"] = "64"
    return yaml.safe_dump_all(documents, sort_keys=False)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, RlsProxy]]:
    fake_port = free_port()
    running = start_gateway(tmp_path_factory.mktemp("usd"), config_text=_config(fake_port), fake_port=fake_port)
    run_dir = Path(running.run_dir)
    # Envoy connects to the RLS socket on its first call: move the RLS aside and put the proxy in its place.
    (run_dir / "ratelimit.sock").rename(run_dir / "ratelimit-real.sock")
    proxy = RlsProxy(str(run_dir / "ratelimit.sock"), str(run_dir / "ratelimit-real.sock")).start()
    try:
        yield running, proxy
    finally:
        proxy.stop()
        running.stop()


def _micros(*parts: tuple[int, float]) -> int:
    """The catalog's arithmetic: tokens x USD per million = micro-dollars, summed exactly, rounded up."""
    return math.ceil(sum(Fraction(tokens) * Fraction(str(price)) for tokens, price in parts))


def _openai_micros(usage: openai.types.CompletionUsage) -> int:
    price = PRICES["gpt-4o-mini"]
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    cached = cached or 0
    return _micros(
        (usage.prompt_tokens - cached, price.input_per_million),
        (cached, price.cached_input_per_million),
        (usage.completion_tokens, price.output_per_million),
    )


def _anthropic_micros(usage: anthropic.types.Usage) -> int:
    price = PRICES["claude-sonnet-4-6"]
    return _micros(
        (usage.input_tokens, price.input_per_million),
        (usage.cache_read_input_tokens or 0, price.cached_input_per_million),
        (usage.cache_creation_input_tokens or 0, price.cache_creation_input_per_million),
        (usage.output_tokens, price.output_per_million),
    )


def _log_cost(gateway: Gateway, user: str) -> int:
    entry = gateway.wait_for_log(lambda e: e.get("x-user-id") == user and e.get("response_code") == 200)
    return round(entry["genai_cost_usd"] * 1_000_000)


def test_the_cost_in_the_access_log_and_header_is_the_catalogs_arithmetic(gateway: tuple[Gateway, RlsProxy]) -> None:
    running, _ = gateway
    user = f"cost-{uuid.uuid4()}"
    client = openai.OpenAI(base_url=f"{running.url}/v1", api_key="unused", default_headers={"x-user-id": user})
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello"}], max_tokens=20
    )
    reply = raw.parse()
    expected = _openai_micros(reply.usage)
    assert expected > 0
    assert raw.headers["x-tokenvoy-cost-usd"] == f"{expected / 1_000_000:.6f}"
    assert _log_cost(running, user) == expected

    streamer = f"stream-{uuid.uuid4()}"
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Count to five"}],
            max_tokens=20,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-user-id": streamer},
        )
    )
    usage = next(chunk.usage for chunk in chunks if chunk.usage)
    assert _log_cost(running, streamer) == _openai_micros(usage)

    writer = f"claude-{uuid.uuid4()}"
    claude = anthropic.Anthropic(base_url=f"{running.url}/anthropic", api_key="unused")
    message = claude.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=30,
        messages=[{"role": "user", "content": "Say hello"}],
        extra_headers={"x-user-id": writer},
    )
    assert _log_cost(running, writer) == _anthropic_micros(message.usage)

    failed = f"failed-{uuid.uuid4()}"
    reply = httpx.post(
        f"{running.url}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-user-id": failed, "x-testupstream-status": "503"},
        timeout=30,
    )
    assert reply.status_code == 503 and "x-tokenvoy-cost-usd" not in reply.headers
    entry = running.wait_for_log(lambda e: e.get("x-user-id") == failed)
    assert entry["genai_cost_usd"] == 0  # a failure costs nothing, and says so


def test_a_model_without_a_price_is_refused_where_a_usd_budget_applies(gateway: tuple[Gateway, RlsProxy]) -> None:
    running, _ = gateway
    client = openai.OpenAI(base_url=f"{running.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:  # the catch-all rule would serve it, for free
        client.chat.completions.create(
            model="my-finetune", messages=[{"role": "user", "content": "hi"}], extra_headers={"x-user-id": "u"}
        )
    message = refused.value.body["message"]  # type: ignore[index]
    assert "'my-finetune' has no price" in message and "spec.pricing" in message


def _spend_until_refused(claude: anthropic.Anthropic, headers: dict[str, str], model: str) -> tuple[int, int, dict]:
    """Messages until the budget says no: (requests served, their cost in centi-cents, the 429's headers)."""
    spent = 0
    for served in range(100):
        try:
            message = claude.messages.create(
                model=model, max_tokens=30, messages=[{"role": "user", "content": "Say hello"}], extra_headers=headers
            )
        except anthropic.RateLimitError as error:
            return served, spent, dict(error.response.headers)
        spent += math.ceil(Fraction(_anthropic_micros(message.usage), 100))
    raise AssertionError("the USD budget never refused a request")


def test_a_per_key_usd_budget_ends_in_a_429_with_its_headers_and_counts_per_route(
    gateway: tuple[Gateway, RlsProxy],
) -> None:
    running, _ = gateway
    claude = anthropic.Anthropic(base_url=f"{running.url}/anthropic", api_key="unused", max_retries=0)
    key = {"x-user-id": f"key-{uuid.uuid4()}"}
    served, spent, refused = _spend_until_refused(claude, key, "claude-sonnet-4-6")
    assert served >= 2 and spent <= KEY_LIMIT, (served, spent)  # reservation: never over the budget
    assert refused["x-ratelimit-limit"].split(",")[0] == str(KEY_LIMIT)
    assert int(refused["x-ratelimit-remaining"]) < math.ceil(Fraction(30 * 15, 100))  # less than one answer
    assert int(refused["x-ratelimit-reset"]) > 0
    # shared: false (Envoy Gateway's default): the same key has a fresh counter on the other route
    message = claude.messages.create(
        model="claude-on-second", max_tokens=30, messages=[{"role": "user", "content": "hi"}], extra_headers=key
    )
    assert message.usage.output_tokens > 0


def test_a_shared_team_budget_is_one_counter_for_every_route(gateway: tuple[Gateway, RlsProxy]) -> None:
    running, _ = gateway
    claude = anthropic.Anthropic(base_url=f"{running.url}/anthropic", api_key="unused", max_retries=0)
    team = {"x-team-id": f"team-{uuid.uuid4()}"}
    served, spent, _ = _spend_until_refused(claude, team, "claude-sonnet-4-6")
    assert served >= 2 and spent <= TEAM_LIMIT
    with pytest.raises(anthropic.RateLimitError):  # spent on `default`, refused on `second` too
        claude.messages.create(
            model="claude-on-second", max_tokens=30, messages=[{"role": "user", "content": "hi"}], extra_headers=team
        )


def _window_remaining(running: Gateway, user: str, hits: int = 0, negative: bool = False) -> int:
    """Ask the RLS itself (behind the proxy) about the key's window counter: what it would answer a check."""
    descriptor = ratelimit_pb2.RateLimitDescriptor(
        entries=[
            ratelimit_pb2.RateLimitDescriptor.Entry(key="budget", value=KEY_BUDGET),
            ratelimit_pb2.RateLimitDescriptor.Entry(key="route", value="default"),
            ratelimit_pb2.RateLimitDescriptor.Entry(key="x-user-id", value=user),
        ],
        is_negative_hits=negative,
    )
    descriptor.hits_addend.value = hits
    with grpc.insecure_channel(f"unix:{Path(running.run_dir) / 'ratelimit-real.sock'}") as channel:
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)
        reply = stub.ShouldRateLimit(rls_pb2.RateLimitRequest(domain="tokenvoy", descriptors=[descriptor]), timeout=5)
    return reply.statuses[0].limit_remaining


def _calls_for(proxy: RlsProxy, user: str, calls: list[rls_pb2.RateLimitRequest]) -> list[list[dict]]:
    seen = []
    for call in calls:
        descriptors = [
            {
                "entries": {e.key: e.value for e in d.entries},
                "hits": d.hits_addend.value,
                "negative": d.is_negative_hits,
            }
            for d in call.descriptors
        ]
        if any(d["entries"].get("x-user-id") == user for d in descriptors):
            seen.append(descriptors)
    return seen


def test_a_reservation_that_failed_open_refunds_nothing_it_did_not_reserve(gateway: tuple[Gateway, RlsProxy]) -> None:
    running, proxy = gateway
    user = f"leak-{uuid.uuid4()}"
    prior = 20
    assert _window_remaining(running, user, hits=prior) == KEY_LIMIT - prior  # earlier spend of this key
    claude = anthropic.Anthropic(base_url=f"{running.url}/anthropic", api_key="unused", max_retries=0)
    proxy.reserve_delay_s = 0.5  # longer than Envoy's 200 ms ratelimit timeout: the check fails open
    try:
        raw = claude.messages.with_raw_response.create(
            model="claude-sonnet-4-6",
            max_tokens=64,
            messages=[{"role": "user", "content": "Say hello"}],
            extra_headers={"x-user-id": user},
        )
    finally:
        proxy.reserve_delay_s = 0
    assert "x-ratelimit-remaining" not in raw.headers, "Envoy got no answer: it served the request (fail open)"
    cost = math.ceil(Fraction(_anthropic_micros(raw.parse().usage), 100))
    deadline = time.monotonic() + 10
    while _window_remaining(running, user) != KEY_LIMIT - prior - cost and time.monotonic() < deadline:
        time.sleep(0.1)  # the stream-done call is fire-and-forget
    assert _window_remaining(running, user) == KEY_LIMIT - prior - cost, "charged exactly its cost"

    calls = _calls_for(proxy, user, proxy.calls)
    (reserve,) = [c for c in calls if any(d["entries"].get("tokenvoy_hold") == "reserve" for d in c)]
    assert _calls_for(proxy, user, proxy.forwarded) == [c for c in calls if c is not reserve], "never reached the RLS"
    estimate = reserve[0]["hits"]
    assert estimate > cost > 0
    stream_done = [c for c in calls if c is not reserve]
    assert all(not d["negative"] for c in stream_done for d in c), f"no release without a hold: {stream_done}"

    # The leak, reproduced: what the previous rendering sent at stream done, a refund of extproc's estimate
    # whatever the check did, gives this key `estimate` centi-cents it never paid for.
    leaked = _window_remaining(running, user, hits=estimate, negative=True)
    assert leaked == KEY_LIMIT - prior - cost + estimate


def test_an_agent_has_at_most_two_requests_in_flight(gateway: tuple[Gateway, RlsProxy]) -> None:
    running, _ = gateway
    agent = {"x-agent-id": f"agent-{uuid.uuid4()}", "x-testupstream-delay-ms": "1500"}
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}

    async def fan_out() -> list[int]:
        async with httpx.AsyncClient(base_url=running.url, timeout=30) as http:
            replies = await asyncio.gather(
                *(http.post("/v1/chat/completions", json=body, headers=agent) for _ in range(3))
            )
        return sorted(reply.status_code for reply in replies)

    assert asyncio.run(fan_out()) == [200, 200, 429]
    quick = {**agent, "x-testupstream-delay-ms": "0"}
    deadline = time.monotonic() + 10
    with httpx.Client(base_url=running.url, timeout=30) as http:
        while (status := http.post("/v1/chat/completions", json=body, headers=quick).status_code) != 200:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)  # the slots come back when the streams end (fire-and-forget releases)
    assert status == 200
