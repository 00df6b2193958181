"""Reservation mode through real Envoy: bounded overshoot under concurrency; 429s and failures cost nothing."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import yaml

from tests.integration.conftest import Gateway, free_port, start_gateway
from tokenvoy.config.defaults import default_config_yaml
from tokenvoy.extproc.estimate import output_tokens, prompt_tokens

BUDGET = 1000
MAX_TOKENS = 50
PROMPT = "hello there"
CLIENTS = 64


def _config(listener_port: int, fake_port: int) -> str:
    documents = list(yaml.safe_load_all(default_config_yaml({})))
    for doc in documents:
        if doc["kind"] == "Gateway":
            doc["spec"]["listeners"][0]["port"] = listener_port
        elif doc["kind"] == "Backend":
            doc["spec"]["endpoints"][0]["ip"]["port"] = fake_port
        elif doc["kind"] == "BackendTrafficPolicy":
            doc["spec"]["rateLimit"]["global"]["rules"][0]["limit"]["requests"] = BUDGET
            doc["metadata"]["annotations"] = {"tokenvoy.io/budget-mode": "reservation"}
    return yaml.safe_dump_all(documents, sort_keys=False)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    fake_port = free_port()
    # the listener port of the config is overridden by the `--port` start_gateway passes
    running = start_gateway(
        tmp_path_factory.mktemp("reservation"), config_text=_config(free_port(), fake_port), fake_port=fake_port
    )
    try:
        yield running
    finally:
        running.stop()


def _body(max_tokens: int) -> dict:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens}


def _estimate(max_tokens: int) -> int:
    body = _body(max_tokens)
    return prompt_tokens(body) + output_tokens(body, 4096)


def test_concurrent_clients_are_admitted_at_most_budget_plus_one_request(gateway: Gateway) -> None:
    user = f"burst-{uuid.uuid4()}"
    headers = {"x-user-id": user, "x-testupstream-delay-ms": "100"}
    admitted: list[int] = []
    rejected = 0
    deadline = time.monotonic() + 30

    async def client(http: httpx.AsyncClient, index: int) -> None:
        nonlocal rejected
        while time.monotonic() < deadline:
            response = await http.post("/v1/chat/completions", json=_body(MAX_TOKENS - index % 10), headers=headers)
            if response.status_code == 429:
                rejected += 1
                return
            assert response.status_code == 200, response.text
            admitted.append(response.json()["usage"]["total_tokens"])

    async def burst() -> None:
        limits = httpx.Limits(max_connections=CLIENTS)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30, limits=limits) as http:
            await asyncio.gather(*(client(http, i) for i in range(CLIENTS)))

    asyncio.run(burst())
    cost_cap = _estimate(MAX_TOKENS)
    assert rejected == CLIENTS, "every client ends with a 429"
    assert sum(admitted) <= BUDGET + cost_cap, f"admitted {sum(admitted)} tokens of a {BUDGET} budget"
    assert sum(admitted) > BUDGET // 2, "reservations must be settled, not kept until the window ends"


def _remaining(response: httpx.Response) -> int:
    return int(response.headers["x-ratelimit-remaining"])


def _probe_until_settled(http: httpx.Client, user: str, spent: int) -> int:
    """Stream-done calls are fire-and-forget: send tiny probes until one sees exactly ``spent`` charged
    (remaining = budget - spent - the probe's own reservation). Returns what was spent, probes included."""
    deadline = time.monotonic() + 10
    while True:
        probe = http.post("/v1/chat/completions", json=_body(1), headers={"x-user-id": user})
        assert probe.status_code == 200, probe.text
        seen = _remaining(probe)
        if seen == BUDGET - spent - _estimate(1) or time.monotonic() > deadline:
            assert seen == BUDGET - spent - _estimate(1), f"{BUDGET - spent - _estimate(1)} expected, got {seen}"
            return spent + probe.json()["usage"]["total_tokens"]
        spent += probe.json()["usage"]["total_tokens"]  # the probe itself is charged too
        time.sleep(0.1)


def test_rejected_and_failed_requests_consume_nothing(gateway: Gateway) -> None:
    user = f"settle-{uuid.uuid4()}"
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        first = http.post("/v1/chat/completions", json=_body(10), headers={"x-user-id": user})
        assert first.status_code == 200
        assert _remaining(first) == BUDGET - _estimate(10), "the request-time call reserved the estimate"
        spent = _probe_until_settled(http, user, first.json()["usage"]["total_tokens"])

        too_big = http.post("/v1/chat/completions", json=_body(BUDGET * 2), headers={"x-user-id": user})
        assert too_big.status_code == 429
        failed = http.post(
            "/v1/chat/completions", json=_body(10), headers={"x-user-id": user, "x-testupstream-status": "503"}
        )
        assert failed.status_code == 503

        _probe_until_settled(http, user, spent)  # the 429 and the 503 left no charge behind
