"""POST /v1/embeddings → OpenAI, Azure OpenAI, GCP Vertex AI and AWS Bedrock Titan backends.

The provider side of each round trip is the fake provider's pure function for that wire format, so the
translated request is checked by a model of the real API, and the answer comes back in its real shape.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_tracing import _attributes, _headers, _tracing
from tokenvoy.config.defaults import default_config_yaml
from tokenvoy.config.loader import load_text
from tokenvoy.config.model import Backend, Endpoint
from tokenvoy.extproc.errors import GatewayError, UpstreamShapeError
from tokenvoy.extproc.estimate import estimated_usage
from tokenvoy.extproc.registry import RequestRegistry
from tokenvoy.extproc.router import RouterStream
from tokenvoy.extproc.server import build_runtime
from tokenvoy.extproc.translate import translator_for
from tokenvoy.extproc.translate.base import ClientAPI, ClientRequest
from tokenvoy.extproc.translate.embeddings_to_azure import EmbeddingsToAzure
from tokenvoy.extproc.translate.embeddings_to_openai import EmbeddingsToOpenAI
from tokenvoy.extproc.translate.embeddings_to_titan import EmbeddingsToTitan
from tokenvoy.extproc.translate.embeddings_to_vertex import EmbeddingsToVertex
from tokenvoy.extproc.upstream import UpstreamStream
from tokenvoy.extproc.usage import MAX_TOKENS, TokenUsage
from tokenvoy.pb.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from tokenvoy.testupstream import embeddings as fake


def backend(schema: str, prefix: str = "", version: str | None = None) -> Backend:
    return Backend(name="b", schema=schema, schema_version=version, path_prefix=prefix, endpoint=Endpoint("h", 443))


OPENAI = backend("OpenAI", "/v1")
AZURE = backend("AzureOpenAI", "", "2024-10-21")
VERTEX = backend("GCPVertexAI", "/v1/projects/p1/locations/us-central1")
BEDROCK = backend("AWSBedrock")


def request(body: dict[str, Any], raw: bytes | None = None) -> ClientRequest:
    raw = raw if raw is not None else orjson.dumps(body)
    parsed = orjson.loads(raw)
    return ClientRequest(
        api=ClientAPI.OPENAI_EMBEDDINGS,
        path="/v1/embeddings",
        raw=raw,
        body=parsed,
        model=parsed.get("model", ""),
        stream=False,
        needs_usage=True,
    )


def floats32(encoded: str) -> list[float]:
    data = base64.b64decode(encoded)
    return list(struct.unpack(f"<{len(data) // 4}f", data))


def test_the_registry_serves_embeddings_to_the_four_schemas() -> None:
    assert translator_for(ClientAPI.OPENAI_EMBEDDINGS, "OpenAI") is EmbeddingsToOpenAI
    assert translator_for(ClientAPI.OPENAI_EMBEDDINGS, "AzureOpenAI") is EmbeddingsToAzure
    assert translator_for(ClientAPI.OPENAI_EMBEDDINGS, "GCPVertexAI") is EmbeddingsToVertex
    assert translator_for(ClientAPI.OPENAI_EMBEDDINGS, "AWSBedrock") is EmbeddingsToTitan
    assert translator_for(ClientAPI.OPENAI_EMBEDDINGS, "Anthropic") is None  # → 422 from the upstream filter


# ---- OpenAI and Azure: pass-through -------------------------------------------------------------------


RAW = b'{"input": ["one two", "three"], "model" :"text-embedding-3-small", "dimensions": 8}'


def test_openai_passes_the_client_bytes_and_reads_the_usage() -> None:
    translator = EmbeddingsToOpenAI()
    upstream = translator.translate_request(request({}, RAW), OPENAI, "text-embedding-3-small")
    assert upstream.path == "/v1/embeddings"
    assert upstream.body is None  # unchanged
    answer = fake.openai_embeddings(orjson.loads(RAW))
    raw = orjson.dumps(answer.body)
    assert translator.translate_response_headers({}) is None
    assert translator.translate_response_body(raw[:20], False) is None
    assert translator.translate_response_body(raw[20:], True) is None  # the client gets the provider's bytes
    assert translator.usage == TokenUsage(input=3, total=3)
    assert translator.response_model == "text-embedding-3-small"


def test_openai_model_override_edits_only_the_model() -> None:
    upstream = EmbeddingsToOpenAI().translate_request(request({}, RAW), OPENAI, "text-embedding-3-large")
    assert upstream.body == RAW.replace(b'"text-embedding-3-small"', b'"text-embedding-3-large"')


def test_openai_errors_pass_through_untouched() -> None:
    translator = EmbeddingsToOpenAI()
    translator.translate_request(request({}, RAW), OPENAI, "text-embedding-3-small")
    assert translator.translate_error(400, {}, b'{"error": {"message": "bad"}}') is None
    assert translator.take_usage() is None and translator.usage is None


def test_azure_path_names_the_deployment_and_the_schema_version() -> None:
    upstream = EmbeddingsToAzure().translate_request(request({}, RAW), AZURE, "my embeddings")
    assert upstream.path == "/openai/deployments/my%20embeddings/embeddings?api-version=2024-10-21"
    default = EmbeddingsToAzure().translate_request(request({}, RAW), backend("AzureOpenAI"), "e3")
    assert default.path == "/openai/deployments/e3/embeddings?api-version=2025-01-01-preview"


@pytest.mark.parametrize(
    ("extra", "field", "status"),
    [
        ({"stream": True}, "stream", 400),
        ({"encoding_format": "int8"}, "encoding_format", 400),
        ({"dimensions": 0}, "dimensions", 400),
        ({"dimensions": "8"}, "dimensions", 400),
    ],
)
@pytest.mark.parametrize("translator", [EmbeddingsToOpenAI, EmbeddingsToAzure, EmbeddingsToVertex, EmbeddingsToTitan])
def test_bad_requests_are_refused_naming_the_field(
    translator: type, extra: dict[str, Any], field: str, status: int
) -> None:
    body = {"model": "m", "input": "hi", **extra}
    with pytest.raises(GatewayError) as caught:
        translator().translate_request(request(body), AZURE, "m")
    assert caught.value.status == status
    assert f"`{field}`" in caught.value.message


def test_missing_input_is_a_400_naming_input() -> None:
    with pytest.raises(GatewayError) as caught:
        EmbeddingsToVertex().translate_request(request({"model": "m"}), VERTEX, "m")
    assert (caught.value.status, "`input`" in caught.value.message) == (400, True)


# ---- Vertex AI ----------------------------------------------------------------------------------------


def vertex_round_trip(body: dict[str, Any], model: str = "text-embedding-005") -> tuple[EmbeddingsToVertex, dict]:
    translator = EmbeddingsToVertex()
    upstream = translator.translate_request(request(body), VERTEX, model)
    sent = orjson.loads(upstream.body)
    answer = fake.vertex_predict(sent, model)
    assert answer.status == 200, answer.body
    changes = translator.translate_response_headers({"content-type": "application/json"})
    assert changes is not None and "content-length" in changes.remove_headers
    out = translator.translate_response_body(orjson.dumps(answer.body), True)
    return translator, orjson.loads(out)


def test_vertex_request_shape_and_path() -> None:
    translator = EmbeddingsToVertex()
    body = {"model": "e", "input": ["alpha beta", "gamma"], "dimensions": 16, "user": "u1"}
    upstream = translator.translate_request(request(body), VERTEX, "text-embedding-005")
    assert upstream.path == "/v1/projects/p1/locations/us-central1/publishers/google/models/text-embedding-005:predict"
    assert orjson.loads(upstream.body) == {
        "instances": [{"content": "alpha beta"}, {"content": "gamma"}],
        "parameters": {"outputDimensionality": 16},
    }


def test_vertex_task_type_and_auto_truncate_are_passed() -> None:
    body = {"model": "e", "input": "q", "task_type": "RETRIEVAL_QUERY", "auto_truncate": False}
    upstream = EmbeddingsToVertex().translate_request(request(body), VERTEX, "text-embedding-005")
    assert orjson.loads(upstream.body) == {
        "instances": [{"content": "q", "task_type": "RETRIEVAL_QUERY"}],
        "parameters": {"autoTruncate": False},
    }


def test_vertex_answer_becomes_openai_list_with_usage() -> None:
    translator, out = vertex_round_trip({"model": "e", "input": ["alpha beta", "gamma"], "dimensions": 16})
    assert out["object"] == "list"
    assert out["model"] == "text-embedding-005"
    assert [d["index"] for d in out["data"]] == [0, 1]
    assert out["data"][0]["embedding"] == fake.vector("alpha beta", 16)
    assert out["data"][1]["embedding"] == fake.vector("gamma", 16)
    assert out["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert translator.usage == TokenUsage(input=3, total=3)  # embeddings: input tokens only
    assert translator.response_model == "text-embedding-005"


def test_vertex_base64_is_little_endian_float32() -> None:
    _, out = vertex_round_trip({"model": "e", "input": "alpha", "dimensions": 32, "encoding_format": "base64"})
    assert floats32(out["data"][0]["embedding"]) == fake.vector("alpha", 32)


@pytest.mark.parametrize("value", [[1, 2, 3], [[1, 2], [3]]])
def test_vertex_token_arrays_are_422_naming_input(value: list) -> None:
    with pytest.raises(GatewayError) as caught:
        EmbeddingsToVertex().translate_request(request({"model": "e", "input": value}), VERTEX, "e")
    assert caught.value.status == 422
    assert "`input`" in caught.value.message and "Vertex" in caught.value.message


def test_vertex_errors_become_openai_errors_with_the_status_kept() -> None:
    translator = EmbeddingsToVertex()
    translator.translate_request(request({"model": "e", "input": "x"}), VERTEX, "nope")
    error = orjson.dumps(fake.google_error(404, "Publisher Model `nope` was not found."))
    out = orjson.loads(translator.translate_error(404, {"content-type": "application/json"}, error))
    assert out["error"]["code"] == "404"
    assert out["error"]["type"] == "not_found_error"
    assert out["error"]["message"] == "Publisher Model `nope` was not found."
    assert translator.usage is None


def test_a_non_json_error_body_is_kept_as_the_message() -> None:
    translator = EmbeddingsToVertex()
    translator.translate_request(request({"model": "e", "input": "x"}), VERTEX, "e")
    out = orjson.loads(translator.translate_error(503, {}, b"upstream connect error"))
    assert (out["error"]["code"], out["error"]["message"]) == ("503", "upstream connect error")


def test_a_2xx_answer_that_is_not_vertex_shaped_is_a_502() -> None:
    translator = EmbeddingsToVertex()
    translator.translate_request(request({"model": "e", "input": "x"}), VERTEX, "e")
    with pytest.raises(UpstreamShapeError) as raised:  # the router answers it: a 502, not a 200 with an error
        translator.translate_response_body(b'{"unexpected": true}', True)
    assert raised.value.status == 502
    assert "unexpected" in raised.value.message


def test_a_huge_vertex_token_count_is_bounded_not_a_crash() -> None:
    """Found by fuzzing: a count of 2^70 (read as a float) made the rebuilt answer unencodable (a 500)."""
    translator = EmbeddingsToVertex()
    translator.translate_request(request({"model": "e", "input": ["x", "y"]}), VERTEX, "e")
    prediction = b'{"embeddings": {"values": [0.1], "statistics": {"token_count": 1180591620717411303424}}}'
    answer = b'{"predictions": [' + prediction + b", " + prediction + b"]}"
    out = orjson.loads(translator.translate_response_body(answer, True))
    assert out["usage"]["prompt_tokens"] == MAX_TOKENS
    assert translator.usage == TokenUsage(input=MAX_TOKENS, total=MAX_TOKENS)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_vertex_answer_survives_any_chunking(data: st.DataObject) -> None:
    """Envoy may hand the body over in pieces (streamed body mode): the result must not depend on it."""
    body = {"model": "e", "input": ["alpha beta", "gamma delta epsilon"], "dimensions": 8}
    raw = orjson.dumps(
        fake.vertex_predict(
            {"instances": [{"content": t} for t in body["input"]], "parameters": {"outputDimensionality": 8}},
            "text-embedding-005",
        ).body
    )
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=6)))
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    translator = EmbeddingsToVertex()
    translator.translate_request(request(body), VERTEX, "text-embedding-005")
    outputs = [translator.translate_response_body(p, i == len(pieces) - 1) for i, p in enumerate(pieces)]
    assert all(o == b"" for o in outputs[:-1])
    out = orjson.loads(outputs[-1])
    assert [d["embedding"] for d in out["data"]] == [fake.vector(t, 8) for t in body["input"]]
    assert translator.usage == TokenUsage(input=5, total=5)


# ---- Bedrock Titan ------------------------------------------------------------------------------------


TITAN = "amazon.titan-embed-text-v2:0"


def test_titan_request_shape_and_path() -> None:
    upstream = EmbeddingsToTitan().translate_request(
        request({"model": "e", "input": ["one two three"], "dimensions": 256, "user": "u"}), BEDROCK, TITAN
    )
    assert upstream.path == "/model/amazon.titan-embed-text-v2%3A0/invoke"
    assert orjson.loads(upstream.body) == {"inputText": "one two three", "dimensions": 256}


def test_titan_round_trip_float_and_base64() -> None:
    for encoding in ("float", "base64"):
        translator = EmbeddingsToTitan()
        body = {"model": "e", "input": "one two three", "encoding_format": encoding}
        sent = orjson.loads(translator.translate_request(request(body), BEDROCK, TITAN).body)
        answer = fake.titan_invoke(sent, TITAN)
        assert answer.status == 200, answer.body
        translator.translate_response_headers({})
        out = orjson.loads(translator.translate_response_body(orjson.dumps(answer.body), True))
        (item,) = out["data"]
        vector = floats32(item["embedding"]) if encoding == "base64" else item["embedding"]
        assert vector == fake.vector("one two three", 1024)
        assert out["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
        assert out["model"] == TITAN
        assert translator.usage == TokenUsage(input=3, total=3)


def test_titan_v1_gets_no_parameters_it_would_refuse() -> None:
    translator = EmbeddingsToTitan()
    sent = orjson.loads(translator.translate_request(request({"model": "e", "input": "hi"}), BEDROCK, "m").body)
    assert fake.titan_invoke(sent, "amazon.titan-embed-text-v1").status == 200


def test_titan_several_inputs_are_422_naming_input() -> None:
    with pytest.raises(GatewayError) as caught:
        EmbeddingsToTitan().translate_request(request({"model": "e", "input": ["a", "b"]}), BEDROCK, TITAN)
    assert caught.value.status == 422
    assert "`input`" in caught.value.message and "got 2" in caught.value.message


def test_titan_token_array_is_422() -> None:
    with pytest.raises(GatewayError) as caught:
        EmbeddingsToTitan().translate_request(request({"model": "e", "input": [101, 102]}), BEDROCK, TITAN)
    assert caught.value.status == 422 and "token arrays" in caught.value.message


def test_titan_error_keeps_status_and_names_the_aws_exception() -> None:
    translator = EmbeddingsToTitan()
    translator.translate_request(request({"model": "e", "input": "x", "dimensions": 7}), BEDROCK, TITAN)
    answer = fake.titan_invoke({"inputText": "x", "dimensions": 7}, TITAN)
    out = orjson.loads(translator.translate_error(answer.status, dict(answer.headers), orjson.dumps(answer.body)))
    assert out["error"]["code"] == "400"
    assert out["error"]["type"] == "ValidationException"
    assert "dimensions" in out["error"]["message"]


# ---- reservation estimate ------------------------------------------------------------------------------


def test_embeddings_reserve_input_tokens_only_and_token_arrays_count() -> None:
    usage = estimated_usage({"model": "e", "input": [[1, 2, 3], [4, 5]]}, 4096, generates=False)
    assert (usage.input, usage.output, usage.total) == (5, 0, 5)
    text = estimated_usage({"model": "e", "input": "x" * 40}, 4096, generates=False)
    assert (text.input, text.output) == (10, 0)


# ---- through the router and upstream streams: traces ---------------------------------------------------


def test_an_embeddings_request_is_traced_as_an_openinference_embedding_span() -> None:
    runtime = build_runtime(load_text(default_config_yaml({}), "<default>"))  # every model → an OpenAI backend
    tracing, exporter = _tracing()
    registry = RequestRegistry()
    router = RouterStream(runtime, registry, None, tracing)
    headers = {":path": "/v1/embeddings", ":method": "POST"}
    body = {"model": "text-embedding-3-small", "input": ["one two", "three"]}
    router.handle(_attributes(ep.ProcessingRequest(request_headers=_headers(headers))))
    router.handle(ep.ProcessingRequest(request_body=ep.HttpBody(body=orjson.dumps(body), end_of_stream=True)))
    upstream = UpstreamStream(runtime, registry)
    sent = upstream.handle(
        _attributes(ep.ProcessingRequest(request_headers=_headers(headers)), next(iter(runtime.endpoints)))
    )
    paths = [
        h.header.raw_value for h in sent.request_headers.response.header_mutation.set_headers if h.header.key == ":path"
    ]
    assert paths == [b"/v1/embeddings"]
    router.handle(ep.ProcessingRequest(response_headers=_headers({":status": "200"})))
    answer = orjson.dumps(fake.openai_embeddings(body).body)
    router.handle(ep.ProcessingRequest(response_body=ep.HttpBody(body=answer, end_of_stream=True)))
    router.close()
    (span,) = exporter.get_finished_spans()
    assert span.name == "CreateEmbeddings"
    assert span.attributes["openinference.span.kind"] == "EMBEDDING"
    assert span.attributes["embedding.model_name"] == "text-embedding-3-small"
    assert (span.attributes["llm.token_count.prompt"], span.attributes["llm.token_count.completion"]) == (3, 0)
