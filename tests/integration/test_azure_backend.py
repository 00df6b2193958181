"""OpenAI SDK → real Envoy + extproc → an AzureOpenAI-schema backend (the fake Azure OpenAI).

Configured as a user would for a real Azure resource: ``schema: {name: AzureOpenAI, version: …}`` with no
prefix and an ``AzureAPIKey`` policy; the deployment is the model name, or the ``modelNameOverride``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import orjson
import pytest
import yaml
from openai import OpenAI

from tests.integration.conftest import Gateway, free_port, gateway_config, start_gateway
from tokenvoy.extproc.translate.openai_to_azure import DEFAULT_API_VERSION
from tokenvoy.testupstream.azure import DEPLOYMENTS_HEADER
from tokenvoy.testupstream.credentials import H_KEYS as KEYS_HEADER
from tokenvoy.testupstream.credentials import H_REQUIRE as REQUIRE_HEADER
from tokenvoy.testupstream.openai_chat import completion_text

SECRET = "azure-key-0f9e8d7c"
VERSION = "2024-10-21"
MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello from azure"}]
PROMPT_WORDS = 5
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
            "required": ["city", "days"],
        },
    },
}


def azure_config(listener_port: int, fake_port: int) -> str:
    documents = list(yaml.safe_load_all(gateway_config(listener_port, fake_port, 1_000_000)))
    out: list[dict[str, Any]] = []
    for doc in documents:
        if doc["kind"] == "AIServiceBackend":
            versioned = {**doc["spec"], "schema": {"name": "AzureOpenAI", "version": VERSION}}
            out.append({**doc, "metadata": {"name": "azure"}, "spec": versioned})
            unversioned = {**doc["spec"], "schema": {"name": "AzureOpenAI"}}
            out.append({**doc, "metadata": {"name": "azure-default"}, "spec": unversioned})
            continue
        if doc["kind"] == "AIGatewayRoute":
            doc["spec"]["rules"] = [
                _rule("prod-chat", {"name": "azure", "modelNameOverride": "gpt-4o-prod"}),
                _rule("unversioned", {"name": "azure-default"}),
                {"backendRefs": [{"name": "azure"}]},
            ]
        out.append(doc)
    out += [
        {
            "apiVersion": "aigateway.envoyproxy.io/v1alpha1",
            "kind": "BackendSecurityPolicy",
            "metadata": {"name": "azure-key"},
            "spec": {
                "type": "AzureAPIKey",
                "targetRefs": [
                    {"group": "aigateway.envoyproxy.io", "kind": "AIServiceBackend", "name": name}
                    for name in ("azure", "azure-default")
                ],
                "azureAPIKey": {"secretRef": {"name": "azure-key"}},
            },
        },
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "azure-key"}, "stringData": {"apiKey": SECRET}},
    ]
    return yaml.safe_dump_all(out, sort_keys=False)


def _rule(model: str, ref: dict[str, Any]) -> dict[str, Any]:
    return {
        "matches": [{"headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": model}]}],
        "backendRefs": [ref],
    }


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    directory: Path = tmp_path_factory.mktemp("azure")
    listener_port, fake_port = free_port(), free_port()
    running = start_gateway(directory, config_text=azure_config(listener_port, fake_port), fake_port=fake_port)
    try:
        yield running
    finally:
        running.stop()


def client(gateway: Gateway, request_id: str, **headers: str) -> OpenAI:
    return OpenAI(
        base_url=f"{gateway.url}/v1",
        api_key="client-openai-key",
        default_headers={"x-request-id": request_id, **headers},
        max_retries=0,
    )


def sent_to_provider(gateway: Gateway, request_id: str) -> dict[str, Any]:
    received = httpx.get(f"{gateway.fake_url}/__testupstream/requests").json()
    return next(r for r in received if r["headers"].get("x-request-id") == request_id)


def tokens(entry: dict[str, Any]) -> tuple[int, int, int]:
    return entry["genai_tokens_input"], entry["genai_tokens_output"], entry["genai_tokens_total"]


def test_chat_goes_to_the_deployment_with_the_api_key(gateway: Gateway) -> None:
    request_id = f"azure-chat-{uuid.uuid4()}"
    reply = client(gateway, request_id).chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=4)
    assert reply.choices[0].message.content == completion_text(4)
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (PROMPT_WORDS, 4)
    assert reply.model_extra["prompt_filter_results"]  # Azure's extras reach the client

    sent = sent_to_provider(gateway, request_id)
    assert sent["path"] == f"/openai/deployments/gpt-4o/chat/completions?api-version={VERSION}"
    assert sent["headers"]["api-key"] == SECRET
    assert "authorization" not in sent["headers"]  # the client's key stays at the gateway
    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert entry["response_code"] == 200
    assert entry["genai_backend_name"] == "azure"
    assert entry["genai_response_model"] == "gpt-4o"
    assert tokens(entry) == (PROMPT_WORDS, 4, PROMPT_WORDS + 4)


def test_model_override_names_the_deployment(gateway: Gateway) -> None:
    request_id = f"azure-override-{uuid.uuid4()}"
    reply = client(gateway, request_id).chat.completions.create(model="prod-chat", messages=MESSAGES, max_tokens=2)
    assert reply.model == "gpt-4o-prod"
    sent = sent_to_provider(gateway, request_id)
    assert sent["path"] == f"/openai/deployments/gpt-4o-prod/chat/completions?api-version={VERSION}"
    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert entry["genai_model_name_override"] == "gpt-4o-prod"


def test_without_a_schema_version_the_default_api_version_is_sent(gateway: Gateway) -> None:
    request_id = f"azure-default-{uuid.uuid4()}"
    client(gateway, request_id).chat.completions.create(model="unversioned", messages=MESSAGES, max_tokens=1)
    sent = sent_to_provider(gateway, request_id)
    assert sent["path"] == f"/openai/deployments/unversioned/chat/completions?api-version={DEFAULT_API_VERSION}"


@pytest.mark.parametrize("include_usage", [True, False])
def test_streamed_chat(gateway: Gateway, include_usage: bool) -> None:
    request_id = f"azure-stream-{uuid.uuid4()}"
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(
        client(gateway, request_id).chat.completions.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=6, stream=True, **options
        )
    )
    assert chunks[0].choices == []  # Azure's opening prompt-filter chunk is passed on
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == completion_text(6)
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == (1 if include_usage else 0)
    assert orjson.loads(sent_to_provider(gateway, request_id)["body"])["stream_options"] == {"include_usage": True}
    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert tokens(entry) == (PROMPT_WORDS, 6, PROMPT_WORDS + 6)


def test_tool_call_plain_and_streamed(gateway: Gateway) -> None:
    messages: list[Any] = [{"role": "user", "content": "weather in Oslo?"}]
    first = client(gateway, f"azure-tool-{uuid.uuid4()}").chat.completions.create(
        model="gpt-4o", messages=messages, tools=[TOOL]
    )
    (call,) = first.choices[0].message.tool_calls
    assert first.choices[0].finish_reason == "tool_calls"
    jsonschema.validate(orjson.loads(call.function.arguments), TOOL["function"]["parameters"])
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "snow"},
    ]
    second = client(gateway, f"azure-tool-{uuid.uuid4()}").chat.completions.create(
        model="gpt-4o", messages=messages, tools=[TOOL]
    )
    assert second.choices[0].finish_reason == "stop"

    request_id = f"azure-tool-stream-{uuid.uuid4()}"
    arguments, name, finish = "", "", None
    for chunk in client(gateway, request_id).chat.completions.create(
        model="gpt-4o", messages=messages[:1], tools=[TOOL], stream=True
    ):
        for delta in (chunk.choices[0].delta.tool_calls or ()) if chunk.choices else ():
            name += delta.function.name or ""
            arguments += delta.function.arguments or ""
        finish = (chunk.choices[0].finish_reason if chunk.choices else None) or finish
    assert (name, finish) == ("get_weather", "tool_calls")
    jsonschema.validate(orjson.loads(arguments), TOOL["function"]["parameters"])
    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert tokens(entry) == (3, 3, 6)  # 1 + the two argument keys


def test_missing_deployment_is_azures_404(gateway: Gateway) -> None:
    request_id = f"azure-404-{uuid.uuid4()}"
    with pytest.raises(openai.NotFoundError) as caught:
        client(gateway, request_id, **{DEPLOYMENTS_HEADER: "some-other"}).chat.completions.create(
            model="gpt-4o", messages=MESSAGES
        )
    assert caught.value.status_code == 404
    assert caught.value.body["code"] == "DeploymentNotFound"
    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert entry["response_code"] == 404


def test_azure_takes_the_backends_key_and_refuses_a_rotated_one(gateway: Gateway) -> None:
    """The fake Azure, told the only valid key and to require one, answers 200 only to the backend's secret in
    ``api-key`` (the client's own bearer key is not what it checks), and 401 in Azure's shape otherwise."""
    strict = {REQUIRE_HEADER: "true"}
    reply = client(gateway, f"azure-key-{uuid.uuid4()}", **strict, **{KEYS_HEADER: SECRET}).chat.completions.create(
        model="gpt-4o", messages=MESSAGES, max_tokens=1
    )
    assert reply.choices[0].message.content
    rotated = client(gateway, f"azure-rotated-{uuid.uuid4()}", **strict, **{KEYS_HEADER: "client-openai-key"})
    with pytest.raises(openai.AuthenticationError) as caught:
        rotated.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=1)
    assert caught.value.status_code == 401
    assert "invalid subscription key" in str(caught.value)
