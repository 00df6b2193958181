"""The fake provider's embeddings (OpenAI, Azure, Vertex AI, Titan), legacy completions and Azure chat,
driven by the official openai SDK (``OpenAI`` and ``AzureOpenAI`` clients) where one exists, else by HTTP."""

from __future__ import annotations

import math
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai import AzureOpenAI, OpenAI

from tokenvoy.testupstream import embeddings as fake
from tokenvoy.testupstream.azure import DEPLOYMENTS_HEADER
from tokenvoy.testupstream.openai_chat import completion_text
from tokenvoy.testupstream.server import BackgroundServer, run_in_thread

VERTEX_PATH = "/v1/projects/p/locations/us-central1/publishers/google/models/{}:predict"
TITAN_V2 = "/model/amazon.titan-embed-text-v2%3A0/invoke"


@pytest.fixture(scope="module")
def upstream() -> Iterator[BackgroundServer]:
    server = run_in_thread()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def client(upstream: BackgroundServer) -> OpenAI:
    return OpenAI(base_url=f"{upstream.url}/v1", api_key="k", max_retries=0)


@pytest.fixture
def azure(upstream: BackgroundServer) -> AzureOpenAI:
    return AzureOpenAI(azure_endpoint=upstream.url, api_version="2024-10-21", api_key="k", max_retries=0)


def test_vectors_are_deterministic_unit_vectors() -> None:
    a = fake.vector("hello world", 64)
    assert a == fake.vector("hello world", 64)
    assert a != fake.vector("hello world!", 64)
    assert math.isclose(math.sqrt(sum(v * v for v in a)), 1.0, rel_tol=1e-5)


# ---- OpenAI -------------------------------------------------------------------------------------------


def test_openai_sdk_embeddings_default_base64_and_dimensions(client: OpenAI) -> None:
    reply = client.embeddings.create(model="text-embedding-3-small", input=["one two", "three"], dimensions=12)
    assert [len(d.embedding) for d in reply.data] == [12, 12]
    assert reply.data[0].embedding == pytest.approx(fake.vector("one two", 12), rel=1e-6)
    assert (reply.usage.prompt_tokens, reply.usage.total_tokens) == (3, 3)
    native = client.embeddings.create(model="text-embedding-3-large", input="x", encoding_format="float")
    assert len(native.data[0].embedding) == 3072


def test_openai_token_arrays_and_bad_dimensions(client: OpenAI) -> None:
    reply = client.embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3], [4]], dimensions=4)
    assert reply.usage.prompt_tokens == 4
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="text-embedding-3-small", input="x", dimensions=5000)
    assert caught.value.body["param"] == "dimensions"


def test_openai_sdk_completions_plain_and_streamed(client: OpenAI) -> None:
    plain = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="say hi now", max_tokens=4)
    assert plain.choices[0].text == completion_text(4)
    assert (plain.usage.prompt_tokens, plain.usage.completion_tokens) == (3, 4)
    chunks = list(
        client.completions.create(
            model="gpt-3.5-turbo-instruct",
            prompt="say hi now",
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == completion_text(4)
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 7


def test_completions_and_chat_routes_do_not_overlap(upstream: BackgroundServer) -> None:
    chat = httpx.post(f"{upstream.url}/v1/chat/completions", json={"model": "m", "prompt": "x"})
    message = chat.json()["error"]["message"]
    assert chat.status_code == 400 and message == "Unrecognized request argument supplied: prompt"  # the chat fake
    legacy = httpx.post(f"{upstream.url}/v1/completions", json={"model": "m", "messages": []})
    assert legacy.status_code == 400 and "prompt" in legacy.json()["error"]["message"]


# ---- Azure --------------------------------------------------------------------------------------------


def test_azure_sdk_chat_plain_and_streamed(azure: AzureOpenAI) -> None:
    plain = azure.chat.completions.create(model="my-gpt4o", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert plain.choices[0].message.content == completion_text(3)
    assert plain.model == "my-gpt4o"
    assert plain.model_extra["prompt_filter_results"][0]["prompt_index"] == 0
    chunks = list(
        azure.chat.completions.create(
            model="my-gpt4o", messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True
        )
    )
    assert chunks[0].choices == []  # Azure's prompt-filter chunk
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == completion_text(3)


def test_azure_sdk_tool_call(azure: AzureOpenAI) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
        },
    }
    reply = azure.chat.completions.create(model="d", messages=[{"role": "user", "content": "find it"}], tools=[tool])
    (call,) = reply.choices[0].message.tool_calls
    assert call.function.name == "lookup" and reply.choices[0].finish_reason == "tool_calls"
    after = azure.chat.completions.create(
        model="d",
        messages=[
            {"role": "user", "content": "find it"},
            reply.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "found"},
        ],
        tools=[tool],
    )
    assert after.choices[0].finish_reason == "stop"


def test_azure_sdk_embeddings_use_the_deployment(azure: AzureOpenAI) -> None:
    reply = azure.embeddings.create(model="text-embedding-3-small", input="alpha beta", dimensions=8)
    assert reply.data[0].embedding == pytest.approx(fake.vector("alpha beta", 8), rel=1e-6)
    assert reply.usage.prompt_tokens == 2


def test_azure_refuses_a_missing_or_unknown_api_version(upstream: BackgroundServer) -> None:
    url = f"{upstream.url}/openai/deployments/d/chat/completions"
    body = {"messages": [{"role": "user", "content": "hi"}]}
    missing = httpx.post(url, json=body)
    assert missing.status_code == 404 and missing.json() == {"error": {"code": "404", "message": "Resource not found"}}
    unknown = httpx.post(url + "?api-version=latest", json=body)
    assert unknown.status_code == 400 and unknown.json()["error"]["message"] == "API version not supported"


def test_azure_unknown_deployment_is_deployment_not_found(upstream: BackgroundServer) -> None:
    azure = AzureOpenAI(
        azure_endpoint=upstream.url,
        api_version="2024-10-21",
        api_key="k",
        max_retries=0,
        default_headers={DEPLOYMENTS_HEADER: "gpt-4o, text-embedding-3-small"},
    )
    with pytest.raises(openai.NotFoundError) as caught:
        azure.chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["code"] == "DeploymentNotFound"
    assert azure.embeddings.create(model="text-embedding-3-small", input="ok").usage.prompt_tokens == 1


# ---- Vertex AI and Titan ------------------------------------------------------------------------------


def test_vertex_predict(upstream: BackgroundServer) -> None:
    url = upstream.url + VERTEX_PATH.format("text-embedding-005")
    ok = httpx.post(url, json={"instances": [{"content": "a b c"}, {"content": ""}]})
    assert ok.status_code == 200
    predictions = ok.json()["predictions"]
    assert [len(p["embeddings"]["values"]) for p in predictions] == [768, 768]
    assert [p["embeddings"]["statistics"]["token_count"] for p in predictions] == [3, 0]
    smaller = httpx.post(url, json={"instances": [{"content": "a"}], "parameters": {"outputDimensionality": 5}})
    assert smaller.json()["predictions"][0]["embeddings"]["values"] == fake.vector("a", 5)
    unknown = httpx.post(url, json={"instances": [{"content": "a"}], "input": "a"})
    assert unknown.status_code == 400 and unknown.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_titan_invoke_v1_and_v2(upstream: BackgroundServer) -> None:
    v2 = httpx.post(upstream.url + TITAN_V2, json={"inputText": "a b", "dimensions": 256})
    assert v2.status_code == 200
    assert v2.json()["inputTextTokenCount"] == 2 and len(v2.json()["embedding"]) == 256
    bad = httpx.post(upstream.url + TITAN_V2, json={"inputText": "a", "dimensions": 100})
    assert bad.status_code == 400 and bad.headers["x-amzn-errortype"].startswith("ValidationException:")
    v1 = httpx.post(
        upstream.url + "/model/amazon.titan-embed-text-v1/invoke", json={"inputText": "a", "normalize": True}
    )
    assert v1.status_code == 400 and "normalize" in v1.json()["message"]


def test_titan_route_only_takes_titan_embedding_models(upstream: BackgroundServer) -> None:
    other = httpx.post(upstream.url + "/model/cohere.embed-english-v3/invoke", json={"texts": ["a"]})
    assert "inputTextTokenCount" not in other.text
