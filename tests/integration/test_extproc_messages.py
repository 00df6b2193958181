"""How many ext_proc messages a request costs, counted by the real Envoy (its ext_proc stream counters) and
cross-checked with extproc's own count by phase (``tokenvoy_extproc_messages_total``).

Each message is a gRPC round trip (~110 µs of Python and ~35 µs of Envoy CPU, bench/README.md): a phase no
handler needs must not be sent. The flow and why each message stays: docs/architecture.md."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.integration.conftest import BUDGET_TOKENS, Gateway, start_gateway

MESSAGES = [{"role": "user", "content": "hi"}]
CHAT = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 16}
ANTHROPIC = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 16}
ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01"}
PHASES = ("request_headers", "request_body", "response_headers", "response_body")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    running = start_gateway(tmp_path_factory.mktemp("messages"), budget_tokens=BUDGET_TOKENS)
    try:
        yield running
    finally:
        running.stop()


@dataclass(frozen=True)
class Counted:
    response: httpx.Response
    router: int  # messages Envoy sent on router-level ext_proc streams
    upstream: int  # messages Envoy sent on upstream (per attempt) ext_proc streams
    phases: dict[str, int]  # extproc's count of the router messages, by phase


def _envoy_sent(gateway: Gateway) -> tuple[int, int]:
    text = httpx.get(f"{gateway.admin_url}/stats", params={"filter": r"ext_proc\.stream_msgs_sent$"}, timeout=10).text
    router = upstream = 0
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if name.startswith("http."):
            router += int(value)
        elif name.startswith("cluster."):
            upstream += int(value)
    return router, upstream


def _phases(gateway: Gateway) -> dict[str, int]:
    counts = dict.fromkeys(PHASES, 0)
    for line in httpx.get(f"{gateway.metrics_url}/metrics", timeout=10).text.splitlines():
        if line.startswith("tokenvoy_extproc_messages_total{"):
            phase = line.split('phase="', 1)[1].split('"', 1)[0]
            counts[phase] = int(float(line.rsplit(" ", 1)[1]))
    return counts


def _counted(gateway: Gateway, send: Callable[[], httpx.Response]) -> Counted:
    """One request's messages: the counters' change over it, read once extproc has closed its router stream."""
    router0, upstream0 = _envoy_sent(gateway)
    phases0 = _phases(gateway)
    response = send()
    deadline = time.monotonic() + 10
    while True:
        router, upstream = _envoy_sent(gateway)
        phases = {phase: count - phases0[phase] for phase, count in _phases(gateway).items()}
        if sum(phases.values()) == router - router0 or time.monotonic() > deadline:
            return Counted(response, router - router0, upstream - upstream0, phases)
        time.sleep(0.05)


def _chat(gateway: Gateway, body: dict, headers: dict[str, str] | None = None) -> Callable[[], httpx.Response]:
    return lambda: httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers, timeout=30)


def _messages(gateway: Gateway, headers: dict[str, str] | None = None) -> Callable[[], httpx.Response]:
    all_headers = {**ANTHROPIC_HEADERS, **(headers or {})}
    return lambda: httpx.post(f"{gateway.url}/anthropic/v1/messages", json=ANTHROPIC, headers=all_headers, timeout=30)


def test_a_plain_request_costs_four_router_messages_and_one_per_attempt(gateway: Gateway) -> None:
    counted = _counted(gateway, _chat(gateway, CHAT))
    assert counted.response.status_code == 200
    assert counted.phases == dict.fromkeys(PHASES, 1)
    assert (counted.router, counted.upstream) == (4, 1)


def test_a_translated_request_costs_the_same(gateway: Gateway) -> None:
    counted = _counted(gateway, _messages(gateway))  # Anthropic's API on the OpenAI-schema backend
    assert counted.response.status_code == 200
    assert counted.phases == dict.fromkeys(PHASES, 1)
    assert (counted.router, counted.upstream) == (4, 1)


def test_a_streamed_request_costs_one_message_per_chunk_after_its_headers(gateway: Gateway) -> None:
    counted = _counted(gateway, _chat(gateway, {**CHAT, "stream": True}))
    assert counted.response.status_code == 200
    before_body = {phase: counted.phases[phase] for phase in PHASES[:3]}
    assert before_body == dict.fromkeys(PHASES[:3], 1)
    assert counted.phases["response_body"] >= 1
    assert counted.router == 3 + counted.phases["response_body"]  # Envoy's count agrees with extproc's
    assert counted.upstream == 1


def test_a_provider_error_in_the_clients_shape_ends_at_its_headers(gateway: Gateway) -> None:
    counted = _counted(gateway, _chat(gateway, CHAT, {"x-testupstream-status": "503"}))
    assert counted.response.status_code == 503
    assert counted.response.json()["error"]["message"] == "testupstream: forced status 503"  # the provider's own
    assert counted.phases == {**dict.fromkeys(PHASES, 1), "response_body": 0}
    assert (counted.router, counted.upstream) == (3, 1)


def test_a_provider_error_the_gateway_translates_is_read_whole(gateway: Gateway) -> None:
    counted = _counted(gateway, _messages(gateway, {"x-testupstream-status": "503"}))
    assert counted.response.status_code == 503
    assert counted.response.json()["type"] == "error"  # rewritten into Anthropic's shape
    assert counted.phases == dict.fromkeys(PHASES, 1)
    assert (counted.router, counted.upstream) == (4, 1)


def test_envoys_own_reply_over_budget_ends_at_its_headers(gateway: Gateway) -> None:
    user = {"x-user-id": f"messages-{uuid.uuid4()}"}
    for _ in range(BUDGET_TOKENS // 19 + 3):  # each costs 3 + 16 tokens; the charge lands after the answer
        if _chat(gateway, CHAT, user)().status_code == 429:
            break
    counted = _counted(gateway, _chat(gateway, CHAT, user))
    assert counted.response.status_code == 429
    assert counted.response.json()["error"]["type"] == "rate_limit_exceeded"
    assert counted.phases == {**dict.fromkeys(PHASES, 1), "response_body": 0}
    assert (counted.router, counted.upstream) == (3, 0)  # no provider was contacted


def test_the_model_list_is_one_message(gateway: Gateway) -> None:
    counted = _counted(gateway, lambda: httpx.get(f"{gateway.url}/v1/models", timeout=30))
    assert counted.response.status_code == 200
    assert counted.phases == {**dict.fromkeys(PHASES, 0), "request_headers": 1}
    assert (counted.router, counted.upstream) == (1, 0)
