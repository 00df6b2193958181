"""openai SDK → real Envoy + extproc → POST /v1/embeddings to OpenAI, Azure OpenAI, GCP Vertex AI and AWS
Bedrock Titan backends, and POST /v1/completions to an OpenAI backend (all four are the fake provider,
speaking each provider's wire format).

One AIGatewayRoute picks the backend by model name; each AIServiceBackend names its schema as a user would
for the real provider (Vertex's prefix is given explicitly since no GCPCredentials policy supplies it).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
import yaml
from openai import OpenAI

from tests.integration.conftest import Gateway, free_port, gateway_config, start_gateway
from tokenvoy.testupstream import embeddings as fake
from tokenvoy.testupstream.openai_chat import completion_text

VERTEX_PREFIX = "/v1/projects/test-project/locations/us-central1"
TITAN = "amazon.titan-embed-text-v2:0"
# model → (AIServiceBackend, schema)
MODELS = {
    "text-embedding-3-small": ("openai", {"name": "OpenAI", "prefix": "/v1"}),
    "gpt-3.5-turbo-instruct": ("openai", {"name": "OpenAI", "prefix": "/v1"}),
    "azure-embeddings": ("azure", {"name": "AzureOpenAI", "version": "2024-10-21"}),
    "text-embedding-005": ("vertex", {"name": "GCPVertexAI", "prefix": VERTEX_PREFIX}),
    TITAN: ("titan", {"name": "AWSBedrock"}),
}


def config(listener_port: int, fake_port: int) -> str:
    documents = list(yaml.safe_load_all(gateway_config(listener_port, fake_port, 1_000_000)))
    out = []
    for doc in documents:
        if doc["kind"] == "AIServiceBackend":
            for name, schema in {name: schema for name, schema in MODELS.values()}.items():
                out.append({**doc, "metadata": {"name": name}, "spec": {**doc["spec"], "schema": schema}})
            continue
        if doc["kind"] == "AIGatewayRoute":
            doc["spec"]["rules"] = [
                {
                    "matches": [{"headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": model}]}],
                    "backendRefs": [{"name": backend}],
                }
                for model, (backend, _) in MODELS.items()
            ]
        out.append(doc)
    return yaml.safe_dump_all(out, sort_keys=False)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    directory: Path = tmp_path_factory.mktemp("embeddings")
    listener_port, fake_port = free_port(), free_port()
    running = start_gateway(directory, config_text=config(listener_port, fake_port), fake_port=fake_port)
    try:
        yield running
    finally:
        running.stop()


def client(gateway: Gateway, request_id: str) -> OpenAI:
    return OpenAI(
        base_url=f"{gateway.url}/v1",
        api_key="client-key",
        default_headers={"x-request-id": request_id, "x-user-id": "embedder"},
        max_retries=0,
    )


def sent_to_provider(gateway: Gateway, request_id: str) -> dict[str, Any]:
    received = httpx.get(f"{gateway.fake_url}/__testupstream/requests").json()
    return next(r for r in received if r["headers"].get("x-request-id") == request_id)


def tokens(entry: dict[str, Any]) -> tuple[int, int, int]:
    return entry["genai_tokens_input"], entry["genai_tokens_output"], entry["genai_tokens_total"]


@pytest.mark.parametrize(
    ("model", "path", "dimensions", "texts"),
    [
        ("text-embedding-3-small", "/v1/embeddings", 24, ["red green blue", "cyan"]),
        ("azure-embeddings", "/openai/deployments/azure-embeddings/embeddings?api-version=2024-10-21", 24, ["a b"]),
        (
            "text-embedding-005",
            f"{VERTEX_PREFIX}/publishers/google/models/text-embedding-005:predict",
            24,
            ["x y", "z"],
        ),
        (TITAN, "/model/amazon.titan-embed-text-v2%3A0/invoke", 256, ["one two three"]),
    ],
)
@pytest.mark.parametrize("encoding", ["base64", "float"])  # the SDK asks for base64 unless told otherwise
def test_embeddings_to_each_schema(
    gateway: Gateway, model: str, path: str, dimensions: int, texts: list[str], encoding: str
) -> None:
    request_id = f"embed-{uuid.uuid4()}"
    options: dict[str, Any] = {} if encoding == "base64" else {"encoding_format": "float"}
    reply = client(gateway, request_id).embeddings.create(model=model, input=texts, dimensions=dimensions, **options)
    assert [d.index for d in reply.data] == list(range(len(texts)))
    for item, text in zip(reply.data, texts, strict=True):
        assert len(item.embedding) == dimensions
        assert item.embedding == pytest.approx(fake.vector(text, dimensions), rel=1e-6)
    words = sum(len(t.split()) for t in texts)
    assert (reply.usage.prompt_tokens, reply.usage.total_tokens) == (words, words)
    assert reply.model == model

    assert sent_to_provider(gateway, request_id)["path"] == path
    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert entry["response_code"] == 200
    assert tokens(entry) == (words, 0, words)
    assert entry["genai_response_model"] == model


def test_titan_refuses_several_inputs_with_422(gateway: Gateway) -> None:
    request_id = f"titan-batch-{uuid.uuid4()}"
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client(gateway, request_id).embeddings.create(model=TITAN, input=["a", "b"])
    assert "`input`" in caught.value.message and "one text per request" in caught.value.message


def test_vertex_refuses_token_arrays_with_422(gateway: Gateway) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client(gateway, f"vertex-ids-{uuid.uuid4()}").embeddings.create(model="text-embedding-005", input=[[1, 2, 3]])
    assert "`input`" in caught.value.message


def test_provider_error_keeps_its_status_in_openai_shape(gateway: Gateway) -> None:
    request_id = f"titan-error-{uuid.uuid4()}"
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway, request_id).embeddings.create(model=TITAN, input="hello", dimensions=100)
    assert caught.value.status_code == 400
    assert caught.value.body["type"] == "ValidationException"
    assert "dimensions" in caught.value.body["message"]


def test_completions_plain(gateway: Gateway) -> None:
    request_id = f"completion-{uuid.uuid4()}"
    reply = client(gateway, request_id).completions.create(
        model="gpt-3.5-turbo-instruct", prompt="write a haiku about tokens", max_tokens=6
    )
    assert reply.choices[0].text == completion_text(6)
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (5, 6)
    assert sent_to_provider(gateway, request_id)["path"] == "/v1/completions"
    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert tokens(entry) == (5, 6, 11)
    assert entry["genai_response_model"] == "gpt-3.5-turbo-instruct"


@pytest.mark.parametrize("include_usage", [True, False])
def test_completions_streamed(gateway: Gateway, include_usage: bool) -> None:
    request_id = f"completion-stream-{uuid.uuid4()}"
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(
        client(gateway, request_id).completions.create(
            model="gpt-3.5-turbo-instruct", prompt="count please", max_tokens=5, stream=True, **options
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == completion_text(5)
    if include_usage:
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    else:
        assert all(c.choices for c in chunks)  # the usage chunk the gateway asked for is not shown
    sent = orjson.loads(sent_to_provider(gateway, request_id)["body"])
    assert sent["stream_options"] == {"include_usage": True}
    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert tokens(entry) == (2, 5, 7)


def test_completions_stream_ends_with_done(gateway: Gateway) -> None:
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": "hi", "max_tokens": 2, "stream": True}
    with httpx.stream("POST", f"{gateway.url}/v1/completions", json=body, timeout=30) as response:
        raw = b"".join(response.iter_bytes())
    assert response.status_code == 200
    assert raw.rstrip().endswith(b"data: [DONE]")
    assert b'"usage":{' not in raw  # not asked for by this client


def test_completions_to_an_azure_backend_is_422(gateway: Gateway) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client(gateway, f"completions-azure-{uuid.uuid4()}").completions.create(model="azure-embeddings", prompt="x")
    assert "cannot be sent" in caught.value.message
