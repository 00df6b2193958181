"""Through real Envoy: GET /v1/models from the config, header/body mutations seen by the provider (and
undone on a fallback), a BackendTrafficPolicy `numRetries: 0` that turns fallback off, `timeouts.request`."""

from __future__ import annotations

import http.server
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
import yaml
from openai import OpenAI

from tests.integration.conftest import Gateway, free_port, gateway_config, start_gateway
from tests.integration.test_routing_through_envoy import _backend


class _Recording(http.server.BaseHTTPRequestHandler):
    """A provider that answers 503 and remembers what it was sent; like real front ends, it refuses a body
    without content-length (411, not a status Envoy retries on: the fallback would not happen)."""

    received: list[tuple[dict[str, str], dict[str, Any]]] = []

    def do_POST(self) -> None:
        if self.headers.get("content-length") is None:
            self._reply(411, b'{"error":{"message":"Length Required","type":"invalid_request_error"}}')
            self.close_connection = True
            return
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).received.append(({k.lower(): v for k, v in self.headers.items()}, orjson.loads(body)))
        self._reply(503, b'{"error":{"message":"overloaded","type":"server_error"}}')

    def _reply(self, status: int, reply: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        return None


def _exact(model: str) -> dict[str, Any]:
    return {"headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": model}]}


def _config(listener_port: int, fake_port: int, failing_port: int) -> str:
    documents = list(yaml.safe_load_all(gateway_config(listener_port, fake_port, 1_000_000)))
    route = next(doc for doc in documents if doc["kind"] == "AIGatewayRoute")
    route["spec"]["rules"] = [
        {
            "matches": [_exact("gpt-4o-mini"), _exact("gpt-4o")],
            "modelsOwnedBy": "tokenvoy tests",
            "modelsCreatedAt": "2024-05-21T10:00:00Z",
            "backendRefs": [
                {
                    "name": "fake",
                    "headerMutation": {"set": [{"name": "x-tenant", "value": "route"}], "remove": ["x-secret"]},
                    "bodyMutation": {"set": [{"path": "service_tier", "value": '"flex"'}], "remove": ["user"]},
                }
            ],
        },
        {"matches": [_exact("slow-model")], "timeouts": {"request": "1s"}, "backendRefs": [{"name": "fake"}]},
        {
            "matches": [_exact("fallback-model")],
            "backendRefs": [
                {
                    "name": "primary",
                    "priority": 0,
                    "headerMutation": {"set": [{"name": "x-primary-only", "value": "yes"}]},
                    "bodyMutation": {"set": [{"path": "service_tier", "value": "primary"}]},
                },
                {"name": "fake", "priority": 1},
            ],
        },
    ]
    no_retries = {
        "apiVersion": "aigateway.envoyproxy.io/v1alpha1",
        "kind": "AIGatewayRoute",
        "metadata": {"name": "no-retries"},
        "spec": {
            "rules": [
                {
                    "matches": [_exact("no-retry-model")],
                    "backendRefs": [{"name": "primary", "priority": 0}, {"name": "fake", "priority": 1}],
                }
            ]
        },
    }
    policy = {
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "BackendTrafficPolicy",
        "metadata": {"name": "no-retries"},
        "spec": {
            "targetRefs": [{"group": "aigateway.envoyproxy.io", "kind": "AIGatewayRoute", "name": "no-retries"}],
            "retry": {"numRetries": 0},
        },
    }
    # The backend adds a header the route overrides, and one of its own.
    fake_backend = next(doc for doc in documents if doc["kind"] == "AIServiceBackend")
    fake_backend["spec"]["headerMutation"] = {
        "set": [{"name": "x-tenant", "value": "backend"}, {"name": "x-region", "value": "eu"}]
    }
    extra = [no_retries, policy, *_backend("primary", failing_port)]
    return yaml.safe_dump_all(documents + extra, sort_keys=False)


@pytest.fixture(scope="module")
def failing_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recording)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, failing_port: int) -> Iterator[Gateway]:
    listener_port, fake_port = free_port(), free_port()
    config = _config(listener_port, fake_port, failing_port)
    running = start_gateway(tmp_path_factory.mktemp("models"), config_text=config, fake_port=fake_port)
    try:
        yield running
    finally:
        running.stop()


def _client(gateway: Gateway) -> OpenAI:
    return OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)


def _sent(gateway: Gateway, request_id: str) -> dict[str, Any]:
    received = httpx.get(f"{gateway.fake_url}/__testupstream/requests").json()
    return next(r for r in received if r["headers"].get("x-request-id") == request_id)


def test_models_list_from_the_config(gateway: Gateway) -> None:
    models = _client(gateway).models.list()
    assert [(m.id, m.owned_by, m.created, m.object) for m in models.data] == [
        ("gpt-4o-mini", "tokenvoy tests", 1716285600, "model"),
        ("gpt-4o", "tokenvoy tests", 1716285600, "model"),
        ("slow-model", "Envoy AI Gateway", models.data[2].created, "model"),
        ("fallback-model", "Envoy AI Gateway", models.data[2].created, "model"),
        ("no-retry-model", "Envoy AI Gateway", models.data[2].created, "model"),
    ]
    assert abs(models.data[2].created - time.time()) < 600  # no timestamp configured: when the config loaded
    wrong = httpx.post(f"{gateway.url}/v1/models", json={})
    assert wrong.status_code == 405


def test_header_and_body_mutations_reach_the_provider(gateway: Gateway) -> None:
    request_id = f"mutations-{uuid.uuid4()}"
    reply = _client(gateway).chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=2,
        user="end-user-7",
        extra_headers={"x-request-id": request_id, "x-secret": "s3cret", "x-tenant": "client"},
    )
    assert reply.choices[0].message.content
    sent = _sent(gateway, request_id)
    assert sent["headers"]["x-tenant"] == "route"  # the backendRef's value wins over the backend's
    assert sent["headers"]["x-region"] == "eu"
    assert "x-secret" not in sent["headers"]
    body = orjson.loads(sent["body"])
    assert body["service_tier"] == "flex"
    assert "user" not in body
    assert body["messages"] == [{"role": "user", "content": "hi"}]


def test_a_fallback_does_not_carry_the_failed_backends_mutations(gateway: Gateway) -> None:
    _Recording.received.clear()
    request_id = f"fallback-{uuid.uuid4()}"
    reply = _client(gateway).chat.completions.create(
        model="fallback-model",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=2,
        extra_headers={"x-request-id": request_id},
    )
    assert reply.choices[0].message.content
    (primary_headers, primary_body), *_ = _Recording.received
    assert primary_headers["x-primary-only"] == "yes"
    assert primary_body["service_tier"] == "primary"  # not a JSON literal: a string, as in Envoy AI Gateway
    sent = _sent(gateway, request_id)
    assert "x-primary-only" not in sent["headers"]
    assert "service_tier" not in orjson.loads(sent["body"])


def test_num_retries_zero_gives_the_client_the_error(gateway: Gateway) -> None:
    _Recording.received.clear()
    request_id = f"no-retry-{uuid.uuid4()}"
    with pytest.raises(openai.APIStatusError) as error:
        _client(gateway).chat.completions.create(
            model="no-retry-model",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=2,
            extra_headers={"x-request-id": request_id},
        )
    assert error.value.status_code == 503
    assert len(_Recording.received) == 1
    received = httpx.get(f"{gateway.fake_url}/__testupstream/requests").json()
    assert all(r["headers"].get("x-request-id") != request_id for r in received)


def test_the_request_timeout_answers_504_in_about_a_second(gateway: Gateway) -> None:
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as error:
        _client(gateway).chat.completions.create(
            model="slow-model",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=2,
            extra_headers={"x-testupstream-delay-ms": "3000"},
        )
    elapsed = time.monotonic() - started
    assert error.value.status_code == 504
    assert 0.9 <= elapsed < 2.5, elapsed
    assert error.value.body["type"] == "upstream_timeout"  # type: ignore[index]
