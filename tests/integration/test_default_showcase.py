"""The default config's promise: one model per backend schema, each answered through its translation.

A newcomer runs ``tokenvoy run`` with no account and tries every provider's wire format with the official
SDKs. Each request below crosses real Envoy and extproc, is translated for its schema, answered by the fake
provider in that provider's format, and translated back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import anthropic
import httpx
import pytest
from openai import OpenAI

from tests.integration.conftest import Gateway, free_port, gateway_config, start_gateway
from tokenvoy.config.defaults import SHOWCASE_MODELS

CHAT_MODELS = [(model, schema) for model, _, schema in SHOWCASE_MODELS if "embed" not in model]
EMBEDDING_MODELS = [(model, schema) for model, _, schema in SHOWCASE_MODELS if "embed" in model]
# The Anthropic Messages API reaches every chat schema (docs/providers.md's matrix).
ANTHROPIC_CLIENT_SCHEMAS = {
    "Anthropic",
    "AWSAnthropic",
    "GCPAnthropic",
    "AWSBedrock",
    "OpenAI",
    "AzureOpenAI",
    "GCPVertexAI",
}
# The fake provider's path for each schema's chat request.
PATH_MARKERS = {
    "OpenAI": "/v1/chat/completions",
    "Anthropic": "/v1/messages",
    "AzureOpenAI": "/openai/deployments/azure-gpt-4o-mini/chat/completions?api-version=",
    "AWSBedrock": "/converse",
    "AWSAnthropic": "/invoke",
    "GCPVertexAI": "/publishers/google/models/gemini-2.5-flash:",
    "GCPAnthropic": "/publishers/anthropic/models/claude-haiku-4-5@20251001:",
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    listener_port, fake_port = free_port(), free_port()
    config = gateway_config(listener_port, fake_port, 10_000_000, showcase=True)
    running = start_gateway(tmp_path_factory.mktemp("showcase"), config_text=config, fake_port=fake_port)
    try:
        yield running
    finally:
        running.stop()


def _sent(gateway: Gateway, request_id: str) -> dict:
    received = httpx.get(f"{gateway.fake_url}/__testupstream/requests").json()
    return next(r for r in received if r["headers"].get("x-request-id") == request_id)


def test_both_model_lists_name_every_showcase_model(gateway: Gateway) -> None:
    expected = {model for model, _, _ in SHOWCASE_MODELS}
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    assert {model.id for model in client.models.list()} == expected
    claude = anthropic.Anthropic(base_url=f"{gateway.url}/anthropic", api_key="unused", max_retries=0)
    assert {model.id for model in claude.models.list()} == expected


@pytest.mark.parametrize(("model", "schema"), CHAT_MODELS, ids=[schema for _, schema in CHAT_MODELS])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_openai_chat_reaches_every_schema(gateway: Gateway, model: str, schema: str, stream: bool) -> None:
    request_id = f"showcase-{uuid.uuid4()}"
    client = OpenAI(
        base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, default_headers={"x-request-id": request_id}
    )
    messages = [{"role": "user", "content": "hello there"}]
    if stream:
        chunks = list(
            client.chat.completions.create(
                model=model, messages=messages, max_tokens=4, stream=True, stream_options={"include_usage": True}
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        usage = chunks[-1].usage
    else:
        reply = client.chat.completions.create(model=model, messages=messages, max_tokens=4)
        text, usage = reply.choices[0].message.content or "", reply.usage
    assert text.strip(), f"{schema}: empty answer"
    assert usage is not None and usage.completion_tokens > 0 and usage.prompt_tokens > 0
    assert PATH_MARKERS[schema] in _sent(gateway, request_id)["path"]


@pytest.mark.parametrize(
    ("model", "schema"),
    [(m, s) for m, s in CHAT_MODELS if s in ANTHROPIC_CLIENT_SCHEMAS],
    ids=[s for _, s in CHAT_MODELS if s in ANTHROPIC_CLIENT_SCHEMAS],
)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_anthropic_messages_reach_their_schemas(gateway: Gateway, model: str, schema: str, stream: bool) -> None:
    request_id = f"showcase-{uuid.uuid4()}"
    client = anthropic.Anthropic(
        base_url=f"{gateway.url}/anthropic",
        api_key="unused",
        max_retries=0,
        default_headers={"x-request-id": request_id},
    )
    messages = [{"role": "user", "content": "hello there"}]
    if stream:
        with client.messages.stream(model=model, max_tokens=4, messages=messages) as events:
            message = events.get_final_message()
    else:
        message = client.messages.create(model=model, max_tokens=4, messages=messages)
    assert message.content and message.content[0].type == "text" and message.content[0].text.strip()
    assert message.usage.output_tokens > 0 and message.usage.input_tokens > 0
    assert PATH_MARKERS[schema] in _sent(gateway, request_id)["path"]


@pytest.mark.parametrize(("model", "schema"), EMBEDDING_MODELS, ids=[schema for _, schema in EMBEDDING_MODELS])
def test_embeddings_reach_every_embedding_schema(gateway: Gateway, model: str, schema: str) -> None:
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    result = client.embeddings.create(model=model, input="hello there", dimensions=256)  # one Titan v2 accepts
    assert len(result.data) == 1 and len(result.data[0].embedding) == 256
    assert result.usage.prompt_tokens > 0
