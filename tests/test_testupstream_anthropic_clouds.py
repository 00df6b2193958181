"""The fake Claude-on-Bedrock (InvokeModel) and Claude-on-Vertex (rawPredict) routes.

The official ``anthropic`` SDK's ``AnthropicBedrock`` (SigV4-signed, checked by the fake; event stream decoded
via botocore) and ``AnthropicVertex`` clients read the fake's answers, which proves the wire formats; httpx
checks the refusals the real services give to a request a gateway got wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import orjson
import pytest
from botocore.eventstream import EventStreamBuffer
from botocore.loaders import Loader
from botocore.model import ServiceModel
from botocore.parsers import EventStreamJSONParser

from tokenvoy.testupstream.anthropic_clouds import is_bedrock_invoke, is_vertex_raw_predict
from tokenvoy.testupstream.aws_auth import EXAMPLE_ACCESS_KEY_ID, EXAMPLE_SECRET_ACCESS_KEY
from tokenvoy.testupstream.openai_chat import WORDS
from tokenvoy.testupstream.server import BackgroundServer, run_in_thread

BEDROCK_MODEL = "anthropic.claude-sonnet-4-5-20250929-v1:0"
VERTEX_MODEL = "claude-sonnet-4-5@20250929"
VERTEX_PREFIX = "/v1/projects/proj/locations/us-east5"
BEDROCK_BODY = {
    "anthropic_version": "bedrock-2023-05-31",
    "max_tokens": 4,
    "messages": [{"role": "user", "content": "hi"}],
}
VERTEX_BODY = {**BEDROCK_BODY, "anthropic_version": "vertex-2023-10-16"}
WEATHER = {
    "name": "get_weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[BackgroundServer]:
    with run_in_thread() as server:
        yield server


@pytest.fixture(scope="module")
def web(upstream: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=upstream.url) as client:
        yield client


@pytest.fixture(scope="module")
def bedrock(upstream: BackgroundServer) -> Iterator[anthropic.AnthropicBedrock]:
    client = anthropic.AnthropicBedrock(
        aws_access_key=EXAMPLE_ACCESS_KEY_ID,
        aws_secret_key=EXAMPLE_SECRET_ACCESS_KEY,
        aws_region="us-east-1",
        base_url=upstream.url,
    )
    with client.with_options(max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def vertex(upstream: BackgroundServer) -> Iterator[anthropic.AnthropicVertex]:
    client = anthropic.AnthropicVertex(
        region="us-east5", project_id="proj", access_token="ya29.token", base_url=upstream.url + "/v1"
    )
    with client.with_options(max_retries=0) as c:
        yield c


# The SDK (this version) sends a newer default anthropic_version than the clouds document; send theirs.
BEDROCK_VERSION = {"extra_body": {"anthropic_version": "bedrock-2023-05-31"}}
VERTEX_VERSION = {"extra_body": {"anthropic_version": "vertex-2023-10-16"}}


def _bedrock_stream(raw: bytes) -> list[dict[str, Any]]:
    """A Bedrock event stream read the way boto3 reads it (bedrock-runtime's ResponseStream shape)."""
    service = ServiceModel(Loader().load_service_model("bedrock-runtime", "service-2"))
    shape = service.shape_for("ResponseStream")
    buffer = EventStreamBuffer()
    buffer.add_data(raw)
    return [EventStreamJSONParser().parse(message.to_response_dict(), shape) for message in buffer]


# ---- Bedrock ------------------------------------------------------------------------------------------


def test_bedrock_invoke_answers_claude_with_bedrock_ids_and_token_headers(
    bedrock: anthropic.AnthropicBedrock, web: httpx.Client
) -> None:
    message = bedrock.messages.create(
        model=BEDROCK_MODEL,
        max_tokens=5,
        system="be brief",
        messages=[{"role": "user", "content": "hi"}],
        **BEDROCK_VERSION,
    )
    assert message.content[0].text == " ".join(WORDS[:5])
    assert message.id.startswith("msg_bdrk_")
    assert message.model == BEDROCK_MODEL
    assert (message.usage.input_tokens, message.usage.output_tokens) == (3, 5)

    response = web.post(f"/model/{BEDROCK_MODEL.replace(':', '%3A')}/invoke", json=BEDROCK_BODY)
    assert response.status_code == 200
    assert response.json()["model"] == BEDROCK_MODEL  # the percent-encoded id is read decoded
    assert response.headers["x-amzn-bedrock-input-token-count"] == "1"
    assert response.headers["x-amzn-bedrock-output-token-count"] == "4"


def test_bedrock_stream_is_an_event_stream_the_sdk_reads(bedrock: anthropic.AnthropicBedrock) -> None:
    with bedrock.messages.stream(
        model=BEDROCK_MODEL, max_tokens=6, messages=[{"role": "user", "content": "hi"}], **BEDROCK_VERSION
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == " ".join(WORDS[:6])
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 6


def test_bedrock_stream_wire_format(web: httpx.Client) -> None:
    response = web.post("/model/m/invoke-with-response-stream", json=BEDROCK_BODY)
    assert response.headers["content-type"] == "application/vnd.amazon.eventstream"
    parsed = _bedrock_stream(response.content)
    assert all(set(p) == {"chunk"} for p in parsed)
    events = [orjson.loads(p["chunk"]["bytes"]) for p in parsed]
    assert events[0]["type"] == "message_start"
    assert events[-1]["type"] == "message_stop"
    assert events[-1]["amazon-bedrock-invocationMetrics"]["inputTokenCount"] == 1
    assert events[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] == 4


def test_bedrock_tool_use(bedrock: anthropic.AnthropicBedrock) -> None:
    message = bedrock.messages.create(
        model=BEDROCK_MODEL,
        max_tokens=100,
        tools=[WEATHER],
        messages=[{"role": "user", "content": "weather?"}],
        **BEDROCK_VERSION,
    )
    (call,) = message.content
    assert call.type == "tool_use" and call.name == "get_weather" and call.id.startswith("toolu_bdrk_")
    assert set(call.input) == {"city"}


def test_bedrock_exception_mid_stream_reaches_the_sdk(bedrock: anthropic.AnthropicBedrock, web: httpx.Client) -> None:
    headers = {"x-testupstream-stream-exception": "throttlingException"}
    parsed = _bedrock_stream(
        web.post("/model/m/invoke-with-response-stream", json=BEDROCK_BODY, headers=headers).content
    )
    assert [next(iter(p)) for p in parsed][-1] == "Error"  # botocore's view of an exception message
    assert parsed[-1]["Error"]["Code"] == "throttlingException"
    with (
        pytest.raises(anthropic.APIStatusError, match="Too many requests"),
        bedrock.messages.stream(
            model=BEDROCK_MODEL,
            max_tokens=6,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers=headers,
            **BEDROCK_VERSION,
        ) as stream,
    ):
        list(stream.text_stream)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"model": "m"}, "extraneous key [model]"),
        ({"stream": True}, "extraneous key [stream]"),
        ({"anthropic_version": None}, "required key [anthropic_version]"),
        ({"anthropic_version": "2023-06-01"}, "anthropic_version"),
        ({"anthropic_beta": "not-a-list"}, "anthropic_beta"),
        ({"anthropic_beta": ["effort-2025-11-24", "claude-code-20250219"]}, "invalid beta flag: claude-code-20250219"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, 'first message must use the "user" role'),
    ],
)
def test_bedrock_refuses_what_bedrock_refuses(web: httpx.Client, change: dict[str, Any], fragment: str) -> None:
    body = {k: v for k, v in {**BEDROCK_BODY, **change}.items() if v is not None}
    response = web.post("/model/m/invoke", json=body)
    assert response.status_code == 400
    assert response.headers["x-amzn-errortype"].startswith("ValidationException:")
    assert fragment in response.json()["message"]


def test_bedrock_betas_are_accepted(web: httpx.Client) -> None:
    body = {**BEDROCK_BODY, "anthropic_beta": ["context-1m-2025-08-07"]}
    assert web.post("/model/m/invoke", json=body).status_code == 200


@pytest.mark.parametrize(
    ("status", "exception"),
    [(429, "ThrottlingException"), (503, "ServiceUnavailableException"), (403, "AccessDeniedException")],
)
def test_bedrock_forced_errors_name_the_exception(web: httpx.Client, status: int, exception: str) -> None:
    response = web.post("/model/m/invoke", json=BEDROCK_BODY, headers={"x-testupstream-status": str(status)})
    assert response.status_code == status
    assert response.headers["x-amzn-errortype"].partition(":")[0] == exception
    assert response.json() == {"message": f"testupstream: forced status {status}"}


def test_bedrock_routes_match_only_invoke_paths() -> None:
    assert is_bedrock_invoke("/model/anthropic.claude-v2%3A1/invoke")
    assert is_bedrock_invoke("/model/m/invoke-with-response-stream")
    assert not is_bedrock_invoke("/model/m/converse")
    assert not is_bedrock_invoke("/model/m/converse-stream")
    assert not is_bedrock_invoke("/model/m/invoke/extra")


# ---- Vertex AI ----------------------------------------------------------------------------------------


def test_vertex_raw_predict_and_stream(vertex: anthropic.AnthropicVertex) -> None:
    message = vertex.messages.create(
        model=VERTEX_MODEL, max_tokens=3, messages=[{"role": "user", "content": "hi"}], **VERTEX_VERSION
    )
    assert message.content[0].text == " ".join(WORDS[:3])
    assert message.id.startswith("msg_vrtx_")
    assert message.model == VERTEX_MODEL
    with vertex.messages.stream(
        model=VERTEX_MODEL, max_tokens=3, messages=[{"role": "user", "content": "hi"}], **VERTEX_VERSION
    ) as stream:
        assert "".join(stream.text_stream) == " ".join(WORDS[:3])
        assert stream.get_final_message().usage.output_tokens == 3


@pytest.mark.parametrize(
    ("method", "change", "fragment"),
    [
        ("rawPredict", {"model": "m"}, "model: Extra inputs"),
        ("rawPredict", {"anthropic_version": None}, "anthropic_version: Field required"),
        ("rawPredict", {"anthropic_version": "bedrock-2023-05-31"}, "vertex-2023-10-16"),
        ("rawPredict", {"stream": True}, "rawPredict needs"),
        ("streamRawPredict", {}, "streamRawPredict needs"),
        ("rawPredict", {"max_tokens": 0}, "max_tokens"),
    ],
)
def test_vertex_refusals_are_anthropic_shaped(
    web: httpx.Client, method: str, change: dict[str, Any], fragment: str
) -> None:
    body = {k: v for k, v in {**VERTEX_BODY, **change}.items() if v is not None}
    response = web.post(f"{VERTEX_PREFIX}/publishers/anthropic/models/{VERTEX_MODEL}:{method}", json=body)
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert fragment in error["error"]["message"]


def test_vertex_forced_errors_are_google_shaped(web: httpx.Client) -> None:
    response = web.post(
        f"{VERTEX_PREFIX}/publishers/anthropic/models/{VERTEX_MODEL}:rawPredict",
        json=VERTEX_BODY,
        headers={"x-testupstream-status": "429"},
    )
    assert response.status_code == 429
    assert response.json() == {
        "error": {"code": 429, "message": "testupstream: forced status 429", "status": "RESOURCE_EXHAUSTED"}
    }


def test_vertex_routes_match_only_anthropic_raw_predict() -> None:
    assert is_vertex_raw_predict(f"{VERTEX_PREFIX}/publishers/anthropic/models/{VERTEX_MODEL}:rawPredict")
    assert is_vertex_raw_predict("/publishers/anthropic/models/claude:streamRawPredict")
    assert not is_vertex_raw_predict("/publishers/google/models/gemini:rawPredict")
    assert not is_vertex_raw_predict("/publishers/anthropic/models/claude:predict")


def test_the_stream_bytes_survive_base64_with_non_ascii_text(web: httpx.Client) -> None:
    """Tool input with non-ASCII enum values travels inside base64 unharmed."""
    tool = {
        "name": "pick",
        "input_schema": {"type": "object", "properties": {"w": {"enum": ["h\u00e9llo \u2603"]}}, "required": ["w"]},
    }
    body = {**BEDROCK_BODY, "tools": [tool], "messages": [{"role": "user", "content": "pick"}]}
    parsed = _bedrock_stream(web.post("/model/m/invoke-with-response-stream", json=body).content)
    deltas = [orjson.loads(p["chunk"]["bytes"]) for p in parsed]
    arguments = "".join(e["delta"]["partial_json"] for e in deltas if e["type"] == "content_block_delta")
    assert orjson.loads(arguments) == {"w": "h\u00e9llo \u2603"}
