"""Envoy Gateway's native mode, with the real Envoy: one router-level ext_proc and no upstream filter.

An ``EnvoyExtensionPolicy`` can give Envoy only the router-level ext_proc, so ``render --target
envoy-gateway`` runs extproc with ``--translate-in-router``. Here Envoy gets tokenvoy's own rendered config
with the upstream filters taken out of every backend cluster (what is left is the shape EG serves: router
ext_proc, rate limit charged at stream end from the ``io.envoy.ai_gateway`` metadata, router), and extproc
runs with that flag: each request must still be translated, signed, metered and budgeted. This is not EG's
own xDS (no EG binary runs here); it proves extproc's side of the native mode.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from openai import OpenAI

from tests.integration.conftest import gateway_config
from tests.integration.egstack import Processes, envoy, tokenvoy
from tests.ports import free_port

BUDGET_TOKENS = 60


@dataclass
class NativeStack:
    url: str
    fake_url: str
    processes: Processes


def _without_upstream_filters(envoy_yaml: Path) -> None:
    """Drop each backend cluster's upstream HTTP filters (tokenvoy's per-attempt ext_proc and the
    content-length restorer): EG's native resources cannot add them."""
    bootstrap = yaml.safe_load(envoy_yaml.read_text())
    stripped = 0
    for cluster in bootstrap["static_resources"]["clusters"]:
        options = cluster.get("typed_extension_protocol_options", {})
        http = options.get("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
        if http and "http_filters" in http:
            del http["http_filters"]
            stripped += 1
    assert stripped, "no backend cluster had upstream filters"
    envoy_yaml.write_text(yaml.safe_dump(bootstrap, sort_keys=False))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NativeStack]:
    directory = tmp_path_factory.mktemp("native")
    listener, fake, extproc, ratelimit, admin = (free_port() for _ in range(5))
    config = directory / "gateway.yaml"
    config.write_text(gateway_config(listener, fake, BUDGET_TOKENS, showcase=True))
    addresses = ["--extproc", f"127.0.0.1:{extproc}", "--ratelimit", f"127.0.0.1:{ratelimit}"]
    render = subprocess.run(
        tokenvoy("render", "--config", str(config), "--out", str(directory), "--admin-port", str(admin), *addresses),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert render.returncode == 0, render.stderr
    _without_upstream_filters(directory / "envoy.yaml")
    processes = Processes(directory)
    try:
        processes.start("fake", tokenvoy("testupstream", "--port", str(fake)))
        processes.start(
            "ratelimit",
            tokenvoy(
                *("ratelimit", "--config", str(directory / "ratelimit.yaml")),
                *("--listen", f"127.0.0.1:{ratelimit}", "--admin-listen", "off"),
            ),
        )
        processes.start(
            "extproc",
            tokenvoy(
                *("extproc", "--config", str(config), "--listen", f"127.0.0.1:{extproc}"),
                *("--translate-in-router", "--no-admin"),
            ),
        )
        processes.start("envoy", envoy(directory / "envoy.yaml"))
        running = NativeStack(f"http://127.0.0.1:{listener}", f"http://127.0.0.1:{fake}", processes)
        processes.wait_for_url(f"{running.url}/v1/models", "the native stack")
        # /v1/models is answered from the config: the fake provider must be up too
        processes.wait_for_url(f"http://127.0.0.1:{fake}/__testupstream/requests", "the fake provider")
        yield running
    finally:
        processes.stop()


def _sent(stack: NativeStack, request_id: str) -> dict:
    received = httpx.get(f"{stack.fake_url}/__testupstream/requests").json()
    return next(r for r in received if r["headers"].get("x-request-id") == request_id)


def _client(stack: NativeStack, user: str, request_id: str) -> OpenAI:
    headers = {"x-user-id": user, "x-request-id": request_id}
    return OpenAI(base_url=f"{stack.url}/v1", api_key="unused", max_retries=0, default_headers=headers)


def test_a_chat_to_an_anthropic_schema_backend_is_translated_and_keyed_in_the_router_stream(stack: NativeStack) -> None:
    request_id = str(uuid.uuid4())
    reply = _client(stack, f"u-{request_id}", request_id).chat.completions.create(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "Say hello"}], max_tokens=16
    )
    assert reply.choices[0].message.content and reply.usage is not None and reply.usage.total_tokens > 0
    sent = _sent(stack, request_id)
    assert sent["path"] == "/v1/messages"  # Anthropic's API, not OpenAI's
    assert sent["headers"]["x-api-key"] == "sk-ant-fake"  # the AnthropicAPIKey policy's key
    assert int(sent["headers"]["content-length"]) == len(sent["body"].encode())  # the translated body's length


def test_a_plain_and_a_streamed_openai_chat_carry_their_usage(stack: NativeStack) -> None:
    request_id = str(uuid.uuid4())
    client = _client(stack, f"u-{request_id}", request_id)
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert reply.usage is not None and reply.usage.total_tokens > 0
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "count"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert len(chunks) > 2 and chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_a_bedrock_model_reaches_the_converse_api(stack: NativeStack) -> None:
    request_id = str(uuid.uuid4())
    reply = _client(stack, f"u-{request_id}", request_id).chat.completions.create(
        model="amazon.nova-lite-v1:0", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content
    assert _sent(stack, request_id)["path"].endswith("/converse")


def test_a_user_over_budget_gets_429_from_the_token_metadata_the_router_stream_wrote(stack: NativeStack) -> None:
    user = f"spender-{uuid.uuid4()}"
    statuses = []
    for _ in range(20):
        response = httpx.post(
            f"{stack.url}/v1/chat/completions",
            headers={"x-user-id": user},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "a few words please"}]},
            timeout=30,
        )
        statuses.append(response.status_code)
        if response.status_code == 429:  # its body comes from the bootstrap's local replies, which EG lacks
            break
    assert statuses[0] == 200 and statuses[-1] == 429, statuses
    other = httpx.post(
        f"{stack.url}/v1/chat/completions",
        headers={"x-user-id": f"other-{uuid.uuid4()}"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert other.status_code == 200


def test_the_model_list_is_answered_by_extproc(stack: NativeStack) -> None:
    models = {model["id"] for model in httpx.get(f"{stack.url}/v1/models", timeout=10).json()["data"]}
    assert {"gpt-4o-mini", "claude-sonnet-4-6", "amazon.nova-lite-v1:0"} <= models


def test_an_anthropic_client_reaches_the_anthropic_backend_with_the_gateways_key(stack: NativeStack) -> None:
    import anthropic

    request_id = str(uuid.uuid4())
    client = anthropic.Anthropic(
        base_url=f"{stack.url}/anthropic",
        api_key="client-key",
        max_retries=0,
        default_headers={"x-request-id": request_id, "x-user-id": f"u-{request_id}"},
    )
    message = client.messages.create(
        model="claude-sonnet-4-6", max_tokens=16, messages=[{"role": "user", "content": "Say hello"}]
    )
    assert message.content and message.usage.output_tokens > 0
    sent = _sent(stack, request_id)
    assert sent["path"] == "/v1/messages" and sent["headers"]["x-api-key"] == "sk-ant-fake"
