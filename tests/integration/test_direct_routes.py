"""Direct rules through real Envoy: one ext_proc stream per request, Envoy injecting the key from an SDS file.

A rule with one backend and a static API key is edited by the router stream and sent through a cluster
without the upstream ext_proc filter (tokenvoy/config/direct.py); a rule that falls back across backends
keeps it. Envoy's own ext_proc counters tell which filter ran.
"""

from __future__ import annotations

import os
import re
import stat
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import yaml
from anthropic import Anthropic
from openai import OpenAI

from tests.integration.conftest import Gateway, free_port, gateway_config, start_gateway
from tokenvoy.apis.backend_schemas import CREDENTIAL_KINDS

OPENAI_KEY = "sk-direct-openai-Do-Not-Leak-91c2"
ANTHROPIC_KEY = "sk-ant-direct-Do-Not-Leak-5e7a"
FALLBACK_KEY = "sk-primary-Do-Not-Leak-03bd"


def _backend(name: str, schema: str, port: int, policy: str | None, key: str | None) -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = [
        {
            "apiVersion": "aigateway.envoyproxy.io/v1alpha1",
            "kind": "AIServiceBackend",
            "metadata": {"name": name},
            "spec": {
                "schema": {"name": schema},
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
    if policy is not None:
        documents += _policy(name, policy, key)
    return documents


def _policy(backend: str, policy: str, key: str | None) -> list[dict[str, Any]]:
    field = CREDENTIAL_KINDS[policy].spec_field
    return [
        {
            "apiVersion": "aigateway.envoyproxy.io/v1alpha1",
            "kind": "BackendSecurityPolicy",
            "metadata": {"name": f"{backend}-key"},
            "spec": {
                "type": policy,
                "targetRefs": [{"group": "aigateway.envoyproxy.io", "kind": "AIServiceBackend", "name": backend}],
                field: {"secretRef": {"name": f"{backend}-key"}},
            },
        },
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{backend}-key"}, "stringData": {"apiKey": key}},
    ]


def _model_rule(model: str, refs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"matches": [{"headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": model}]}], "backendRefs": refs}


def _config(listener_port: int, fake_port: int) -> str:
    documents = list(yaml.safe_load_all(gateway_config(listener_port, fake_port, 1_000_000)))
    for doc in documents:
        if doc["kind"] == "AIGatewayRoute":
            doc["spec"]["rules"] = [
                _model_rule("claude-sonnet-4-5", [{"name": "claude"}]),
                _model_rule(
                    "fallback",
                    [
                        {"name": "primary", "priority": 0},
                        {"name": "claude", "priority": 1, "modelNameOverride": "claude-sonnet-4-5"},
                    ],
                ),
                *doc["spec"]["rules"],  # the catch-all: the fake OpenAI backend
            ]
    refused = free_port()  # nothing listens: the primary's connection is refused and Envoy falls back
    extra = [
        *_policy("fake", "APIKey", OPENAI_KEY),
        *_backend("claude", "Anthropic", fake_port, "AnthropicAPIKey", ANTHROPIC_KEY),
        *_backend("primary", "OpenAI", refused, "APIKey", FALLBACK_KEY),
    ]
    return yaml.safe_dump_all(documents + extra, sort_keys=False)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    listener_port, fake_port = free_port(), free_port()
    running = start_gateway(
        tmp_path_factory.mktemp("direct"),
        config_text=_config(listener_port, fake_port),
        fake_port=fake_port,
        listener_port=listener_port,
    )
    try:
        yield running
    finally:
        running.stop()


def _ext_proc_streams(gateway: Gateway) -> dict[str, int]:
    """Envoy's ``streams_started`` counter of each ext_proc filter: the listener's (router) and each cluster's."""
    text = httpx.get(f"{gateway.admin_url}/stats", params={"filter": r"ext_proc\..*streams_started$"}).text
    return {name: int(value) for name, value in re.findall(r"^(\S+): (\d+)$", text, re.MULTILINE)}


def _upstream_streams(gateway: Gateway) -> int:
    return sum(count for name, count in _ext_proc_streams(gateway).items() if name.startswith("cluster."))


def _router_streams(gateway: Gateway) -> int:
    return sum(count for name, count in _ext_proc_streams(gateway).items() if name.startswith("http."))


def _sent(gateway: Gateway, request_id: str) -> list[dict[str, Any]]:
    received = httpx.get(f"{gateway.fake_url}/__testupstream/requests").json()
    return [r for r in received if r["headers"].get("x-request-id") == request_id]


def _log(gateway: Gateway, request_id: str) -> dict[str, Any]:
    return gateway.wait_for_log(lambda entry: entry.get("x-request-id") == request_id)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_direct_request_takes_one_stream_and_envoy_adds_the_key(gateway: Gateway, stream: bool) -> None:
    request_id = f"direct-{uuid.uuid4()}"
    upstream_before, router_before = _upstream_streams(gateway), _router_streams(gateway)
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key="client-own-key", max_retries=0)
    messages = [{"role": "user", "content": "hello there"}]
    headers = {"x-request-id": request_id, "x-user-id": "alice", "x-tokenvoy-direct": "forged"}
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
        usage = chunks[-1].usage
    else:
        usage = client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, max_tokens=3, extra_headers=headers
        ).usage
    entry = _log(gateway, request_id)
    assert usage is not None and usage.completion_tokens == 3
    assert _router_streams(gateway) == router_before + 1
    assert _upstream_streams(gateway) == upstream_before, "no upstream ext_proc stream for a direct rule"
    [sent] = _sent(gateway, request_id)
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"  # Envoy's injector, not the client's key
    assert "x-tokenvoy-direct" not in sent["headers"]
    assert entry["upstream_cluster"] == "direct/default/rule/2"
    assert entry["genai_backend_name"] == "fake"
    assert entry["genai_tokens_output"] == 3
    assert entry["genai_tokens_total"] == usage.total_tokens
    assert entry["x-envoy-origin-path"] == "/v1/chat/completions"


def test_a_direct_rule_to_another_schema_is_translated_by_the_router(gateway: Gateway) -> None:
    """An OpenAI client, an Anthropic backend: the router stream translates once, Envoy adds ``x-api-key``."""
    request_id = f"direct-translated-{uuid.uuid4()}"
    upstream_before = _upstream_streams(gateway)
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key="client-own-key", max_retries=0)
    reply = client.chat.completions.create(
        model="claude-sonnet-4-5",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
        max_tokens=2,
        extra_headers={"x-request-id": request_id},
    )
    assert reply.usage is not None and reply.usage.completion_tokens == 2
    assert _upstream_streams(gateway) == upstream_before
    [sent] = _sent(gateway, request_id)
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["x-api-key"] == ANTHROPIC_KEY
    assert "authorization" not in sent["headers"], "the client's key never reaches the provider"
    assert orjson.loads(sent["body"])["system"] == [{"type": "text", "text": "be brief"}]
    assert _log(gateway, request_id)["genai_tokens_output"] == 2


def test_an_anthropic_client_on_the_same_schema_goes_direct(gateway: Gateway) -> None:
    request_id = f"direct-anthropic-{uuid.uuid4()}"
    upstream_before = _upstream_streams(gateway)
    client = Anthropic(base_url=f"{gateway.url}/anthropic", api_key="client-own-key", max_retries=0)
    message = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=2,
        messages=[{"role": "user", "content": "hello"}],
        extra_headers={"x-request-id": request_id},
    )
    assert message.usage.output_tokens == 2
    assert _upstream_streams(gateway) == upstream_before
    [sent] = _sent(gateway, request_id)
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["x-api-key"] == ANTHROPIC_KEY
    assert _log(gateway, request_id)["genai_backend_name"] == "claude"


def test_a_fallback_rule_keeps_the_upstream_filter_and_falls_back_across_schemas(gateway: Gateway) -> None:
    request_id = f"fallback-{uuid.uuid4()}"
    upstream_before = _upstream_streams(gateway)
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key="client-own-key", max_retries=0)
    reply = client.chat.completions.create(
        model="fallback", messages=[{"role": "user", "content": "hello"}], max_tokens=3,
        extra_headers={"x-request-id": request_id},
    )  # fmt: skip
    assert reply.usage is not None and reply.usage.completion_tokens == 3
    # one stream per attempt: the refused primary's and the Anthropic fallback's
    assert _upstream_streams(gateway) == upstream_before + 2
    [sent] = _sent(gateway, request_id)
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["x-api-key"] == ANTHROPIC_KEY
    assert orjson.loads(sent["body"])["model"] == "claude-sonnet-4-5"
    entry = _log(gateway, request_id)
    assert entry["upstream_cluster"] == "rule/default/rule/1"
    assert entry["genai_backend_name"] == "claude"


def test_the_keys_are_in_no_rendered_file_and_not_in_config_dump(gateway: Gateway) -> None:
    secrets = gateway.run_dir / "secrets"
    assert stat.S_IMODE(os.stat(secrets).st_mode) == 0o700
    files = sorted(path.name for path in secrets.iterdir())
    assert files == ["tokenvoy-key-claude.yaml", "tokenvoy-key-fake.yaml"], "only direct backends' keys"
    for path in secrets.iterdir():
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert OPENAI_KEY in (secrets / "tokenvoy-key-fake.yaml").read_text()
    for path in gateway.run_dir.rglob("*"):
        if path.is_file() and secrets not in path.parents and not path.name.endswith(".sock"):
            text = path.read_bytes()
            for key in (OPENAI_KEY, ANTHROPIC_KEY, FALLBACK_KEY):
                assert key.encode() not in text, path
    dump = httpx.get(f"{gateway.admin_url}/config_dump", params={"include_eds": "true"}).text
    assert "tokenvoy-key-fake" in dump and "envoy.filters.http.credential_injector" in dump
    for key in (OPENAI_KEY, ANTHROPIC_KEY, FALLBACK_KEY):
        assert key not in dump
    secrets_dump = httpx.get(f"{gateway.admin_url}/config_dump", params={"resource": "dynamic_active_secrets"})
    assert "[redacted]" in secrets_dump.text


ROTATED_KEY = "sk-direct-rotated-Do-Not-Leak-6a0f"


def test_a_reload_with_a_new_key_rewrites_its_secret_file_and_envoy_sends_it(gateway: Gateway) -> None:
    """Last in this module: it changes the gateway's config. Envoy re-reads the SDS file when it is replaced."""
    config_path = gateway.run_dir.parent / "gateway.yaml"
    reloads = gateway.stderr().count("tokenvoy: reloaded")
    config_path.write_text(config_path.read_text().replace(OPENAI_KEY, ROTATED_KEY))
    deadline = time.monotonic() + 30
    while gateway.stderr().count("tokenvoy: reloaded") == reloads:
        assert time.monotonic() < deadline, f"no reload; log:\n{gateway.stderr()[-3000:]}"
        time.sleep(0.1)
    assert ROTATED_KEY in (gateway.run_dir / "secrets" / "tokenvoy-key-fake.yaml").read_text()
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key="client-own-key", max_retries=0)
    seen = None
    while seen != f"Bearer {ROTATED_KEY}":  # Envoy's file watch applies the new secret soon after the move
        assert time.monotonic() < deadline, f"Envoy still sends {seen!r}"
        request_id = f"rotated-{uuid.uuid4()}"
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=1,
            extra_headers={"x-request-id": request_id},
        )  # fmt: skip
        [sent] = _sent(gateway, request_id)
        seen = sent["headers"]["authorization"]
        time.sleep(0.1)
    assert seen == f"Bearer {ROTATED_KEY}"
