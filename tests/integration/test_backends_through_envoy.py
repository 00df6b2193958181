"""What the upstream filter does to a request: credentials, model override, path prefix."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import yaml
from openai import OpenAI

from tests.integration.conftest import free_port, gateway_config, start_gateway
from tokenvoy.testupstream.server import run_in_thread

SECRET = "sk-test-9f8e7d6c5b4a"


def test_openai_api_key_routes_the_default_config_to_that_provider(tmp_path: Path) -> None:
    """`OPENAI_API_KEY=… OPENAI_BASE_URL=… tokenvoy run`: the key is sent as a Bearer token, never logged."""
    with run_in_thread("127.0.0.1", free_port()) as provider:
        env = {"OPENAI_API_KEY": SECRET, "OPENAI_BASE_URL": f"{provider.url}/v1"}
        gateway = start_gateway(tmp_path, config_text="", env=env)
        try:
            reply = OpenAI(
                base_url=f"{gateway.url}/v1", api_key="client-side-key", max_retries=0
            ).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "one two"}], max_tokens=2)
            assert reply.usage.total_tokens == 4
            received = httpx.get(f"{provider.url}/__testupstream/requests").json()
            assert received[-1]["headers"]["authorization"] == f"Bearer {SECRET}"
            assert "fake provider" not in gateway.stderr()  # no fake provider when a real one is configured
        finally:
            assert gateway.stop(signal.SIGTERM) == 0
        logs = gateway.stderr() + gateway.stdout_path.read_text()
        rendered = "".join(p.read_text() for p in gateway.run_dir.glob("*.yaml"))
        assert SECRET not in logs
        assert SECRET not in rendered
        assert "${OPENAI_API_KEY}" in (gateway.run_dir / "gateway.yaml").read_text()


def test_api_key_from_a_file_model_override_and_path_prefix(tmp_path: Path) -> None:
    key_file = tmp_path / "key.txt"
    key_file.write_text(SECRET + "\n")
    listener_port, fake_port = free_port(), free_port()
    documents = list(yaml.safe_load_all(gateway_config(listener_port, fake_port, 100_000)))
    for doc in documents:
        if doc["kind"] == "AIGatewayRoute":
            doc["spec"]["rules"][0]["backendRefs"][0]["modelNameOverride"] = "served-model-v2"
        if doc["kind"] == "AIServiceBackend":
            doc["spec"]["schema"]["prefix"] = "/proxy/openai/v1"
    documents += [
        {
            "apiVersion": "aigateway.envoyproxy.io/v1alpha1",
            "kind": "BackendSecurityPolicy",
            "metadata": {"name": "fake-key"},
            "spec": {
                "type": "APIKey",
                "targetRefs": [{"group": "aigateway.envoyproxy.io", "kind": "AIServiceBackend", "name": "fake"}],
                "apiKey": {"secretRef": {"name": "fake-key"}},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "fake-key"},
            "stringData": {"apiKey": f"${{file:{key_file}}}"},
        },
    ]
    gateway = start_gateway(tmp_path, config_text=yaml.safe_dump_all(documents), fake_port=fake_port)
    try:
        client = OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
        reply = client.chat.completions.create(
            model="what-the-client-asked",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=1,
            extra_headers={
                "x-request-id": "override-test",
                "x-testupstream-expect-path": "/proxy/openai/v1/chat/completions",
            },
        )
        assert reply.model == "served-model-v2"  # the provider saw the override
        entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == "override-test")
        assert entry["genai_model_name"] == "what-the-client-asked"
        assert entry["genai_model_name_override"] == "served-model-v2"
        assert entry["genai_response_model"] == "served-model-v2"
        received = httpx.get(f"{gateway.fake_url}/__testupstream/requests").json()
        assert received[-1]["headers"]["authorization"] == f"Bearer {SECRET}"
    finally:
        gateway.stop()
    assert SECRET not in gateway.stderr()
