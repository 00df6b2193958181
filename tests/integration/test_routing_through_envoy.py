"""backendRefs through real Envoy: priority fallback and weighted splits."""

from __future__ import annotations

import http.server
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from openai import OpenAI

from tests.integration.conftest import Gateway, free_port, gateway_config, start_gateway
from tokenvoy.testupstream.server import run_in_thread


def _backend(name: str, port: int) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "aigateway.envoyproxy.io/v1alpha1",
            "kind": "AIServiceBackend",
            "metadata": {"name": name},
            "spec": {
                "schema": {"name": "OpenAI", "prefix": "/v1"},
                "backendRef": {"name": name, "kind": "Backend", "group": "gateway.envoyproxy.io"},
            },
        },
        {
            "apiVersion": "gateway.envoyproxy.io/v1alpha1",
            "kind": "Backend",
            "metadata": {"name": name},
            "spec": {"endpoints": [{"ip": {"address": "127.0.0.1", "port": port}}]},
        },
    ]


def _config(listener_port: int, fake_port: int, refs: list[dict[str, Any]], extra: list[dict[str, Any]]) -> str:
    documents = list(yaml.safe_load_all(gateway_config(listener_port, fake_port, 1_000_000)))
    for doc in documents:
        if doc["kind"] == "AIGatewayRoute":
            doc["spec"]["rules"][0]["backendRefs"] = refs
    return yaml.safe_dump_all(documents + extra, sort_keys=False)


class _Failing(http.server.BaseHTTPRequestHandler):
    received = 0
    authorization: str | None = None

    def do_POST(self) -> None:
        type(self).received += 1
        type(self).authorization = self.headers.get("authorization")
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = b'{"error":{"message":"overloaded","type":"server_error"}}'
        self.send_response(503)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@contextmanager
def failing_provider() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()


def _chat(gateway: Gateway, request_id: str) -> str:
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=2,
        extra_headers={"x-request-id": request_id},
    )
    return reply.choices[0].message.content or ""


@pytest.mark.parametrize("failure", ["connection refused", "503 from the provider"])
def test_priority_zero_failing_falls_back_to_priority_one(tmp_path: Path, failure: str) -> None:
    listener_port, fake_port = free_port(), free_port()
    with failing_provider() as failing_port:
        primary_port = free_port() if failure == "connection refused" else failing_port
        _Failing.received = 0
        refs = [{"name": "primary", "priority": 0}, {"name": "fake", "priority": 1}]
        config = _config(listener_port, fake_port, refs, _backend("primary", primary_port))
        gateway = start_gateway(tmp_path, config_text=config, fake_port=fake_port)
        try:
            request_id = f"fallback-{uuid.uuid4()}"
            assert _chat(gateway, request_id)
            entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
        finally:
            gateway.stop()
    assert entry["response_code"] == 200
    assert entry["genai_backend_name"] == "fake"
    assert entry["upstream_host"] == f"127.0.0.1:{fake_port}"
    assert entry["genai_tokens_total"] == 3
    if failure == "503 from the provider":
        assert _Failing.received == 1, "the primary must have been tried first, once"


def test_weights_split_traffic_within_five_percent(tmp_path: Path) -> None:
    listener_port, fake_port = free_port(), free_port()
    with run_in_thread("127.0.0.1", free_port()) as second:
        refs = [{"name": "fake", "weight": 3}, {"name": "second", "weight": 1}]
        config = _config(listener_port, fake_port, refs, _backend("second", second.port))
        gateway = start_gateway(tmp_path, config_text=config, fake_port=fake_port)
        try:
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}

            def send(_: int) -> int:
                with httpx.Client(base_url=gateway.url) as client:
                    return sum(client.post("/v1/chat/completions", json=body).status_code == 200 for _ in range(250))

            with ThreadPoolExecutor(8) as pool:
                assert sum(pool.map(send, range(8))) == 2000
            hosts = Counter(
                e["upstream_host"]
                for e in _all_logged(gateway, 2000)
                if e["x-envoy-origin-path"] == "/v1/chat/completions"
            )
        finally:
            gateway.stop()
    share = hosts[f"127.0.0.1:{fake_port}"] / sum(hosts.values())
    assert abs(share - 0.75) <= 0.05, f"weight 3:1 gave {hosts}"


def _all_logged(gateway: Gateway, count: int) -> list[dict[str, Any]]:
    gateway.wait_for_log(lambda _e: len(gateway.access_log()) >= count, timeout=15)
    return gateway.access_log()


def test_a_retry_never_carries_the_previous_backends_key(tmp_path: Path) -> None:
    """primary (gateway-held key) answers 503; the fallback has no policy: it gets the client's own key."""
    listener_port, fake_port = free_port(), free_port()
    policy = [
        {
            "apiVersion": "aigateway.envoyproxy.io/v1alpha1",
            "kind": "BackendSecurityPolicy",
            "metadata": {"name": "primary-key"},
            "spec": {
                "type": "APIKey",
                "targetRefs": [{"group": "aigateway.envoyproxy.io", "kind": "AIServiceBackend", "name": "primary"}],
                "apiKey": {"secretRef": {"name": "primary-key"}},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "primary-key"},
            "stringData": {"apiKey": "sk-primary"},
        },
    ]
    with failing_provider() as failing_port:
        refs = [{"name": "primary", "priority": 0}, {"name": "fake", "priority": 1}]
        config = _config(listener_port, fake_port, refs, _backend("primary", failing_port) + policy)
        gateway = start_gateway(tmp_path, config_text=config, fake_port=fake_port)
        try:
            client = OpenAI(base_url=f"{gateway.url}/v1", api_key="client-own-key", max_retries=0)
            client.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=1,
                extra_headers={"x-request-id": "key-leak"},
            )
            received = httpx.get(f"{gateway.fake_url}/__testupstream/requests").json()
        finally:
            gateway.stop()
    assert _Failing.authorization == "Bearer sk-primary"
    sent = next(r for r in received if r["headers"].get("x-request-id") == "key-leak")
    assert sent["headers"]["authorization"] == "Bearer client-own-key"


def _anthropic_fallback(name: str, port: int, secret: str) -> list[dict[str, Any]]:
    """An Anthropic-schema backend with its own key: the fallback of another schema."""
    documents = _backend(name, port)
    documents[0]["spec"]["schema"] = {"name": "Anthropic"}
    return [
        *documents,
        {
            "apiVersion": "aigateway.envoyproxy.io/v1alpha1",
            "kind": "BackendSecurityPolicy",
            "metadata": {"name": f"{name}-key"},
            "spec": {
                "type": "AnthropicAPIKey",
                "targetRefs": [{"group": "aigateway.envoyproxy.io", "kind": "AIServiceBackend", "name": name}],
                "anthropicAPIKey": {"secretRef": {"name": f"{name}-key"}},
            },
        },
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{name}-key"}, "stringData": {"apiKey": secret}},
    ]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_fallback_to_a_backend_of_another_schema_answers_in_the_clients_shape(tmp_path: Path, stream: bool) -> None:
    """OpenAI-schema primary answers 503 → the Anthropic-schema priority 1 gets a freshly translated request,
    with its own key and not the primary's path or body, and the OpenAI client sees a normal answer."""
    listener_port, fake_port = free_port(), free_port()
    with failing_provider() as failing_port, run_in_thread("127.0.0.1", free_port()) as claude:
        _Failing.received = 0
        refs = [
            {"name": "primary", "priority": 0},
            {"name": "claude", "priority": 1, "modelNameOverride": "claude-sonnet-4-5"},
        ]
        extra = _backend("primary", failing_port) + _anthropic_fallback("claude", claude.port, "sk-ant-fallback")
        gateway = start_gateway(
            tmp_path, config_text=_config(listener_port, fake_port, refs, extra), fake_port=fake_port
        )
        try:
            request_id = f"cross-schema-{uuid.uuid4()}"
            client = OpenAI(base_url=f"{gateway.url}/v1", api_key="client-own-key", max_retries=0)
            messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
            headers = {"x-request-id": request_id}
            if stream:
                chunks = list(
                    client.chat.completions.create(
                        model="gpt-4o-mini",
                        messages=messages,
                        max_tokens=3,
                        stream=True,
                        stream_options={"include_usage": True},
                        extra_headers=headers,
                    )
                )
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                usage = chunks[-1].usage
                finish = next(c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason)
            else:
                reply = client.chat.completions.create(
                    model="gpt-4o-mini", messages=messages, max_tokens=3, extra_headers=headers
                )
                text, usage, finish = (
                    reply.choices[0].message.content or "",
                    reply.usage,
                    reply.choices[0].finish_reason,
                )
            entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
            received = httpx.get(f"{claude.url}/__testupstream/requests").json()
        finally:
            gateway.stop()
    assert _Failing.received == 1, "the OpenAI-schema primary is tried first, once"
    assert len(text.split()) == 3 and finish == "length"
    assert usage is not None and usage.completion_tokens == 3 and usage.total_tokens == usage.prompt_tokens + 3
    sent = next(r for r in received if r["headers"].get("x-request-id") == request_id)
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["x-api-key"] == "sk-ant-fallback"
    assert "authorization" not in sent["headers"], "neither the client's key nor the primary's reaches Anthropic"
    body = yaml.safe_load(sent["body"])
    assert body["model"] == "claude-sonnet-4-5" and body["system"] == [{"type": "text", "text": "be brief"}]
    assert entry["response_code"] == 200
    assert entry["genai_backend_name"] == "claude"
    assert entry["x-envoy-origin-path"] == "/v1/chat/completions"
    assert entry["genai_tokens_output"] == 3
