"""AIGatewayRoute ``streamIdleTimeout`` and ``hostnames``, through ``tokenvoy run`` (real Envoy).

Before, both were accepted and ignored: a backend that never sent its first byte held the request for the
whole route timeout, and a route scoped to one Host served every Host.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.integration.conftest import Gateway, start_gateway
from tests.ports import free_port

DELAY_MS = 1500  # the slow backend's wait before its answer; streamIdleTimeout is far shorter


def _config(listener_port: int, fake_port: int) -> str:
    backends = "".join(
        f"""---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIServiceBackend
metadata: {{name: {name}}}
spec:
  schema: {{name: OpenAI}}
  backendRef: {{name: fake, kind: Backend, group: gateway.envoyproxy.io}}
{mutation}"""
        for name, mutation in (
            ("slow", f"  headerMutation: {{set: [{{name: x-testupstream-delay-ms, value: '{DELAY_MS}'}}]}}\n"),
            ("fast", ""),
            ("team-a", ""),
            ("team-b", ""),
        )
    )
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: tokenvoy}}
spec:
  gatewayClassName: tokenvoy
  listeners: [{{name: http, protocol: HTTP, port: {listener_port}}}]
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: Backend
metadata:
  name: fake
  annotations: {{tokenvoy.io/fake-provider: "true"}}
spec:
  endpoints: [{{ip: {{address: 127.0.0.1, port: {fake_port}}}}}]
{backends}---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: a}}
spec:
  hostnames: [a.example.com]
  rules:
    - matches:
        - {{headers: [{{name: x-ai-eg-model, value: shared}}]}}
        - {{headers: [{{name: x-ai-eg-model, value: only-a}}]}}
      backendRefs: [{{name: team-a}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: b}}
spec:
  hostnames: ["*.b.example.com"]
  rules:
    - matches: [{{headers: [{{name: x-ai-eg-model, value: shared}}]}}]
      backendRefs: [{{name: team-b}}]
---
apiVersion: aigateway.envoyproxy.io/v1beta1
kind: AIGatewayRoute
metadata: {{name: everyone}}
spec:
  rules:
    - matches: [{{headers: [{{name: x-ai-eg-model, value: idle}}]}}]
      streamIdleTimeout: 200ms
      backendRefs: [{{name: slow, priority: 0}}, {{name: fast, priority: 1}}]
    - matches: [{{headers: [{{name: x-ai-eg-model, value: patient}}]}}]
      backendRefs: [{{name: slow, priority: 0}}, {{name: fast, priority: 1}}]
    - matches: [{{headers: [{{name: x-ai-eg-model, value: shared}}]}}]
      backendRefs: [{{name: fast}}]
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    listener_port, fake_port = free_port(), free_port()
    running = start_gateway(
        tmp_path_factory.mktemp("route-fields"),
        config_text=_config(listener_port, fake_port),
        fake_port=fake_port,
        listener_port=listener_port,
    )
    try:
        yield running
    finally:
        running.stop()


def _ask(gateway: Gateway, model: str, host: str | None = None, stream: bool = False) -> tuple[httpx.Response, str]:
    """The answer, and the backend the access log says served it."""
    user = uuid.uuid4().hex
    headers = {"content-type": "application/json", "x-user-id": user}
    if host is not None:
        headers["host"] = host
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    response = httpx.post(gateway.url + "/v1/chat/completions", content=orjson.dumps(body), headers=headers, timeout=30)
    entry = gateway.wait_for_log(lambda e: e.get("x-user-id") == user)
    return response, entry.get("genai_backend_name") or ""


@pytest.mark.parametrize("stream", [False, True])
def test_a_backend_silent_past_stream_idle_timeout_falls_over_to_the_next_priority(gateway: Gateway, stream: bool):
    response, backend = _ask(gateway, "idle", stream=stream)
    assert response.status_code == 200, response.text
    assert backend == "fast"


def test_without_stream_idle_timeout_the_slow_backend_answers(gateway: Gateway):
    response, backend = _ask(gateway, "patient")
    assert response.status_code == 200, response.text
    assert backend == "slow"


def test_hostnames_scope_a_route_to_its_hosts(gateway: Gateway):
    port = gateway.url.rsplit(":", 1)[1]
    assert _ask(gateway, "shared", f"a.example.com:{port}")[1] == "team-a"
    assert _ask(gateway, "shared", "A.Example.com")[1] == "team-a"
    assert _ask(gateway, "shared", "x.b.example.com")[1] == "team-b"
    assert _ask(gateway, "shared", "deep.x.b.example.com")[1] == "team-b"
    assert _ask(gateway, "shared", "b.example.com")[1] == "fast"  # `*.` needs a label before the suffix
    assert _ask(gateway, "shared")[1] == "fast"


def test_a_model_only_one_host_serves_is_not_found_elsewhere(gateway: Gateway):
    response, _ = _ask(gateway, "only-a", "a.example.com")
    assert response.status_code == 200, response.text
    response, _ = _ask(gateway, "only-a", "other.example.com")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "model_not_found"


def test_the_model_list_is_the_hosts(gateway: Gateway):
    def listed(host: str) -> set[str]:
        response = httpx.get(gateway.url + "/v1/models", headers={"host": host}, timeout=10)
        assert response.status_code == 200, response.text
        return {model["id"] for model in response.json()["data"]}

    assert listed("a.example.com") == {"shared", "only-a", "idle", "patient"}
    assert listed("other.example.com") == {"shared", "idle", "patient"}
