"""``tokenvoy run --extproc-workers 2`` through real Envoy: a request's streams in different extproc processes.

Envoy's extproc cluster picks the endpoint with the fewest streams open (full scan), so with nothing else
in flight a request's router stream holds one worker and its upstream attempt goes to the other: the test
checks, request by request, from each worker's ``tokenvoy_extproc_streams_total`` counts, that it did, and
that the answer (plain, streamed, translated, after a fallback to another schema) is what one process gives.
A worker killed is restarted, a reload reaches both, and one scrape of the metrics port counts both.
Direct routes are off here (``TOKENVOY_NO_DIRECT=1``): they have no upstream stream to cross over.
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from anthropic import Anthropic
from openai import OpenAI

from tests.integration.conftest import Gateway, free_port, gateway_config, start_gateway
from tests.integration.test_routing_through_envoy import _anthropic_fallback, _backend, _Failing, failing_provider
from tokenvoy.testupstream.server import run_in_thread

WORKERS = ("0", "1")
FALLBACK_MODEL = "falls-back"
_STREAMS = re.compile(r'^tokenvoy_extproc_streams_total\{role="(\w+)",worker="(\d+)"\} ([0-9.e+]+)$', re.MULTILINE)


def _config(listener_port: int, fake_port: int, failing_port: int, claude_port: int, override: str = "") -> str:
    """The default config, plus a rule first whose model falls back from a failing OpenAI-schema backend to an
    Anthropic-schema one; ``override``: a modelNameOverride on the catch-all's backendRef (a reload edits it)."""
    documents = list(yaml.safe_load_all(gateway_config(listener_port, fake_port, 1_000_000)))
    for doc in documents:
        if doc["kind"] == "AIGatewayRoute":
            fallback = {
                "matches": [{"headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": FALLBACK_MODEL}]}],
                "backendRefs": [
                    {"name": "primary", "priority": 0},
                    {"name": "claude", "priority": 1, "modelNameOverride": "claude-sonnet-4-5"},
                ],
            }
            catch_all = doc["spec"]["rules"][0]
            if override:
                catch_all["backendRefs"][0]["modelNameOverride"] = override
            doc["spec"]["rules"] = [fallback, catch_all]
    extra = _backend("primary", failing_port) + _anthropic_fallback("claude", claude_port, "sk-ant-fallback")
    return yaml.safe_dump_all(documents + extra, sort_keys=False)


class Stack:
    def __init__(self, gateway: Gateway, config: Path, ports: tuple[int, int, int, int]) -> None:
        self.gateway, self.config, self.ports = gateway, config, ports


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("workers")
    listener_port, fake_port = free_port(), free_port()
    with failing_provider() as failing_port, run_in_thread("127.0.0.1", free_port()) as claude:
        ports = (listener_port, fake_port, failing_port, claude.port)
        gateway = start_gateway(
            directory,
            config_text=_config(*ports),
            fake_port=fake_port,
            listener_port=listener_port,
            extproc_workers=2,
            # every rule through the upstream filter: a direct route (one backend, a static key or none) has no
            # upstream stream to land in another worker
            env={"TOKENVOY_NO_DIRECT": "1"},
        )
        try:
            yield Stack(gateway, directory / "gateway.yaml", ports)
        finally:
            gateway.stop()


def _streams(gateway: Gateway) -> dict[tuple[str, str], float]:
    text = httpx.get(f"{gateway.metrics_url}/metrics", timeout=5).text
    return {(role, worker): float(value) for role, worker, value in _STREAMS.findall(text)}


def _envoy_idle(gateway: Gateway) -> None:
    """Until Envoy has no ext_proc stream open: the next request's streams are placed by it alone."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stats = httpx.get(f"{gateway.admin_url}/stats?filter=^cluster.tokenvoy_extproc.upstream_rq_active$").text
        if stats.strip().endswith(": 0"):
            return
        time.sleep(0.02)
    raise AssertionError(f"Envoy still has ext_proc streams open: {stats}")


def _crossed(gateway: Gateway, send: Callable[[], Any]) -> Any:
    """``send()``'s result, once the per-worker counts show its router stream and its upstream attempt (one)
    ran in different workers."""
    _envoy_idle(gateway)
    before = _streams(gateway)
    result = send()
    _envoy_idle(gateway)
    after = _streams(gateway)
    delta = {key: after.get(key, 0) - before.get(key, 0) for key in after}
    router = [w for w in WORKERS if delta.get(("router", w))]
    upstream = [w for w in WORKERS if delta.get(("upstream", w))]
    assert len(router) == 1 and len(upstream) == 1 and router != upstream, delta
    return result


def _openai(gateway: Gateway) -> OpenAI:
    return OpenAI(base_url=f"{gateway.url}/v1", api_key="client-own-key", max_retries=0)


def test_a_plain_answer_is_whole_when_its_streams_ran_in_different_workers(stack: Stack) -> None:
    gateway = stack.gateway
    for _ in range(3):
        request_id = f"plain-{uuid.uuid4()}"

        def send(request_id: str = request_id) -> Any:
            messages = [{"role": "user", "content": "hello"}]
            headers = {"x-request-id": request_id, "x-user-id": "alice"}
            return _openai(gateway).chat.completions.create(
                model="gpt-4o-mini", messages=messages, max_tokens=4, extra_headers=headers
            )

        reply = _crossed(gateway, send)
        assert len((reply.choices[0].message.content or "").split()) == 4
        assert reply.usage is not None and reply.usage.completion_tokens == 4
        entry = gateway.wait_for_log(lambda e, rid=request_id: e.get("x-request-id") == rid)
        assert entry["genai_backend_name"] == "fake" and entry["genai_tokens_output"] == 4


def test_a_streamed_answer_keeps_its_usage_across_workers(stack: Stack) -> None:
    gateway = stack.gateway
    request_id = f"streamed-{uuid.uuid4()}"

    def send() -> list[Any]:
        return list(
            _openai(gateway).chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "count"}],
                max_tokens=5,
                stream=True,
                stream_options={"include_usage": True},
                extra_headers={"x-request-id": request_id},
            )
        )

    chunks = _crossed(gateway, send)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 5 and chunks[-1].usage.completion_tokens == 5
    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert entry["genai_tokens_output"] == 5 and entry["genai_tokens_total"] == chunks[-1].usage.total_tokens


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_translated_request_is_answered_in_the_clients_shape_across_workers(stack: Stack, stream: bool) -> None:
    """Anthropic's Messages API to the OpenAI-schema fake: translated by one worker, answered back by the other."""
    gateway = stack.gateway
    client = Anthropic(base_url=f"{gateway.url}/anthropic", api_key="client-own-key", max_retries=0)
    request_id = f"translated-{uuid.uuid4()}"
    messages: Any = [{"role": "user", "content": "hello"}]
    headers = {"x-request-id": request_id}
    if stream:

        def send() -> Any:
            with client.messages.stream(
                model="gpt-4o-mini", max_tokens=3, messages=messages, extra_headers=headers
            ) as events:
                return events.get_final_message()

    else:

        def send() -> Any:
            return client.messages.create(model="gpt-4o-mini", max_tokens=3, messages=messages, extra_headers=headers)

    message = _crossed(gateway, send)
    assert message.type == "message" and message.stop_reason == "max_tokens"
    assert len(message.content[0].text.split()) == 3 and message.usage.output_tokens == 3
    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert entry["upstream_path"] == "/v1/chat/completions" and entry["genai_tokens_output"] == 3


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_fallback_to_another_schema_in_another_worker_answers_in_the_clients_shape(
    stack: Stack, stream: bool
) -> None:
    """The OpenAI-schema primary answers 503; the Anthropic-schema fallback's attempt, maybe in the other worker,
    gets a fresh translation with its own key, none of the first attempt's edits, and the router stream
    translates Claude's answer although another process sent the request."""
    gateway = stack.gateway
    _, _, _, claude_port = stack.ports
    failed_before = _Failing.received
    request_id = f"fallback-{uuid.uuid4()}"
    _envoy_idle(gateway)
    before = _streams(gateway)
    client = _openai(gateway)
    messages: Any = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    headers = {"x-request-id": request_id}
    if stream:
        chunks = list(
            client.chat.completions.create(
                model=FALLBACK_MODEL,
                messages=messages,
                max_tokens=3,
                stream=True,
                stream_options={"include_usage": True},
                extra_headers=headers,
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        usage = chunks[-1].usage
    else:
        reply = client.chat.completions.create(
            model=FALLBACK_MODEL, messages=messages, max_tokens=3, extra_headers=headers
        )
        text, usage = reply.choices[0].message.content or "", reply.usage
    _envoy_idle(gateway)
    after = _streams(gateway)
    assert sum(after.get(("upstream", w), 0) - before.get(("upstream", w), 0) for w in WORKERS) == 2  # 2 attempts
    assert _Failing.received == failed_before + 1
    assert len(text.split()) == 3 and usage is not None and usage.completion_tokens == 3
    sent = next(
        r
        for r in httpx.get(f"http://127.0.0.1:{claude_port}/__testupstream/requests").json()
        if r["headers"].get("x-request-id") == request_id
    )
    assert sent["path"] == "/v1/messages" and sent["headers"]["x-api-key"] == "sk-ant-fallback"
    assert "authorization" not in sent["headers"], "neither the client's key nor the primary's reaches Anthropic"
    body = yaml.safe_load(sent["body"])
    assert body["model"] == "claude-sonnet-4-5" and body["system"] == [{"type": "text", "text": "be brief"}]
    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert entry["response_code"] == 200 and entry["genai_backend_name"] == "claude"


def test_one_scrape_counts_the_requests_of_both_workers(stack: Stack) -> None:
    gateway = stack.gateway
    streams = _streams(gateway)
    for worker in WORKERS:  # every request so far had one stream in each worker
        assert streams.get(("router", worker), 0) + streams.get(("upstream", worker), 0) > 0, streams
    text = httpx.get(f"{gateway.metrics_url}/metrics", timeout=5).text
    durations = re.findall(r"^gen_ai_server_request_duration_seconds_count\{[^}]*\} ([0-9.e+]+)$", text, re.MULTILINE)
    routers = sum(value for (role, _), value in streams.items() if role == "router")
    assert durations and sum(float(v) for v in durations) == routers  # each request counted once, by its router


def _health(gateway: Gateway) -> dict[str, Any]:
    return httpx.get(f"{gateway.admin_url}/healthz", timeout=5).json()


def _until(predicate: Callable[[], bool], what: str, gateway: Gateway, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}\n{gateway.stderr()}")
        time.sleep(0.1)


def test_a_killed_worker_is_restarted_and_serves_again(stack: Stack) -> None:
    gateway = stack.gateway
    children = _health(gateway)["children"]
    assert {"extproc 0", "extproc 1"} <= set(children) and "extproc" not in children
    pid = children["extproc 1"]["pid"]
    restarts = children["extproc 1"]["restarts"]
    os.kill(pid, signal.SIGKILL)

    def back() -> bool:
        health = _health(gateway)
        child = health["children"]["extproc 1"]
        return health["status"] == "ok" and child["restarts"] > restarts and child["pid"] not in (None, pid)

    _until(back, "extproc 1 restarted", gateway)
    # Envoy's health check puts it back in the cluster; then requests cross workers again
    deadline = time.monotonic() + 15
    while True:
        before = _streams(gateway).get(("upstream", "1"), 0) + _streams(gateway).get(("router", "1"), 0)
        reply = _openai(gateway).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        assert reply.usage is not None and reply.usage.completion_tokens == 2
        after = _streams(gateway).get(("upstream", "1"), 0) + _streams(gateway).get(("router", "1"), 0)
        if after > before:
            break
        assert time.monotonic() < deadline, "the restarted worker never got a stream again"
        time.sleep(0.2)


def test_a_reload_reaches_both_workers(stack: Stack) -> None:
    """After the edit, every request applies it, whichever worker ran its router stream and its attempt."""
    gateway = stack.gateway
    stack.config.write_text(_config(*stack.ports, override="gpt-4o"))
    _until(lambda: gateway.stderr().count("tokenvoy: reloaded") >= 1, "the reload", gateway)
    for _ in range(4):
        request_id = f"reloaded-{uuid.uuid4()}"

        def send(request_id: str = request_id) -> Any:
            return _openai(gateway).chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=2,
                extra_headers={"x-request-id": request_id},
            )

        _crossed(gateway, send)
        entry = gateway.wait_for_log(lambda e, rid=request_id: e.get("x-request-id") == rid)
        assert entry["genai_model_name_override"] == "gpt-4o" and entry["genai_response_model"] == "gpt-4o"


def test_direct_routes_keep_working_with_two_workers(tmp_path: Path) -> None:
    """A direct rule (the default config's: one backend, no key) is edited in the router stream alone: with
    two workers it needs nothing carried, and its answer and usage are whole."""
    gateway = start_gateway(tmp_path, extproc_workers=2)
    try:
        before = _streams(gateway)
        reply = _openai(gateway).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
        chunks = list(
            _openai(gateway).chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=3,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        _envoy_idle(gateway)
        after = _streams(gateway)
    finally:
        gateway.stop()
    assert reply.usage is not None and reply.usage.completion_tokens == 3
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    delta = {key: after.get(key, 0) - before.get(key, 0) for key in after}
    assert sum(v for (role, _), v in delta.items() if role == "router") == 2
    assert sum(v for (role, _), v in delta.items() if role == "upstream") == 0
