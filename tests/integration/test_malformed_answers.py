"""A provider that answers 200 with something that is not its API's answer, through real Envoy: the client
gets a 502 in its API's error shape (or, for a stream already under way, an error event in its stream's
shape), never a success made of the provider's junk, and the request is counted as an upstream error.

Every backend schema family of the showcase config (OpenAI, Azure OpenAI, Anthropic, Claude on Bedrock and
Vertex, Bedrock Converse, Gemini) answers, through the fake's ``x-testupstream-body`` switch: HTML, ``[]``,
``null``, an empty body, binary bytes, cut-off JSON, JSON of the wrong shape; and for streams, a stream cut
before its end (framed as that provider frames it) or a body that is no stream at all.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import Gateway, free_port, gateway_config, start_gateway
from tokenvoy.extproc.eventstream import encode_event
from tokenvoy.extproc.sse import SSEParser

MESSAGES = [{"role": "user", "content": "hello there"}]
ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01"}
MALFORMED_ERROR_TYPE = "upstream_malformed_response"
# (model, schema) of the showcase config; the Anthropic client reaches every schema but Gemini and Azure
# (no translator).
CHAT_MODELS = [
    ("gpt-4o-mini", "OpenAI"),
    ("azure-gpt-4o-mini", "AzureOpenAI"),
    ("claude-sonnet-4-6", "Anthropic"),
    ("anthropic.claude-haiku-4-5-20251001-v1:0", "AWSAnthropic"),
    ("claude-haiku-4-5@20251001", "GCPAnthropic"),
    ("amazon.nova-lite-v1:0", "AWSBedrock"),
    ("gemini-2.5-flash", "GCPVertexAI"),
]
ANTHROPIC_CLIENT_MODELS = [(m, s) for m, s in CHAT_MODELS if s not in ("GCPVertexAI", "AzureOpenAI")]
JUNK_BODIES = {
    "html": (b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"),
    "empty-array": (b"[]", "application/json"),
    "null": (b"null", "application/json"),
    "empty": (b"", "application/json"),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "application/octet-stream"),
    "cut-json": (b'{"id": "x", "choices": [{"message": {"content": "Hel', "application/json"),
    "wrong-shape": (b'{"object": "nothing", "content": 3}', "application/json"),
}

# A stream cut short, as each backend schema frames it: the opening events, never the end.
_ANTHROPIC_START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 1},
    },
}
_ANTHROPIC_TEXT = [
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
]


def _anthropic_sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events)


def _openai_chunk(delta: dict[str, Any]) -> bytes:
    chunk = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


_CUT_OPENAI = _openai_chunk({"role": "assistant", "content": ""}) + _openai_chunk({"content": "Hel"})
_CUT_ANTHROPIC = _anthropic_sse([_ANTHROPIC_START, *_ANTHROPIC_TEXT])
_CUT_STREAMS: dict[str, tuple[bytes, str]] = {
    "OpenAI": (_CUT_OPENAI, "text/event-stream"),
    "AzureOpenAI": (_CUT_OPENAI, "text/event-stream"),
    "Anthropic": (_CUT_ANTHROPIC, "text/event-stream"),
    "GCPAnthropic": (_CUT_ANTHROPIC, "text/event-stream"),
    "AWSAnthropic": (
        b"".join(
            encode_event("chunk", orjson.dumps({"bytes": base64.b64encode(orjson.dumps(e)).decode()}))
            for e in [_ANTHROPIC_START, *_ANTHROPIC_TEXT]
        ),
        "application/vnd.amazon.eventstream",
    ),
    "AWSBedrock": (
        encode_event("messageStart", b'{"role":"assistant"}')
        + encode_event("contentBlockDelta", b'{"contentBlockIndex":0,"delta":{"text":"Hel"}}'),
        "application/vnd.amazon.eventstream",
    ),
    "GCPVertexAI": (
        b'data: {"candidates":[{"content":{"role":"model","parts":[{"text":"Hel"}]}}],"modelVersion":"g"}\r\n\r\n',
        "text/event-stream",
    ),
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    directory: Path = tmp_path_factory.mktemp("malformed")
    listener_port, fake_port = free_port(), free_port()
    documents = list(yaml.safe_load_all(gateway_config(listener_port, fake_port, 10_000_000, showcase=True)))
    running = start_gateway(directory, config_text=yaml.safe_dump_all(documents), fake_port=fake_port)
    try:
        yield running
    finally:
        running.stop()


def _control(body: bytes, content_type: str) -> dict[str, str]:
    """The fake's test switch: answer 200 with exactly ``body``."""
    return {"x-testupstream-body": base64.b64encode(body).decode(), "x-testupstream-content-type": content_type}


def _openai_post(gateway: Gateway, model: str, headers: dict[str, str], stream: bool = False) -> httpx.Response:
    body = {"model": model, "messages": MESSAGES, "stream": stream}
    return httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers, timeout=30)


def _anthropic_post(gateway: Gateway, model: str, headers: dict[str, str], stream: bool = False) -> httpx.Response:
    body = {"model": model, "max_tokens": 16, "messages": MESSAGES, "stream": stream}
    return httpx.post(
        f"{gateway.url}/anthropic/v1/messages", json=body, headers={**ANTHROPIC_HEADERS, **headers}, timeout=30
    )


def _data(body: bytes) -> list[Any]:
    """Every ``data`` of a client's stream, as its SDK reads them (JSON or ``[DONE]``)."""
    parser = SSEParser()
    out = []
    for event in [*parser.feed(body), *parser.flush()]:
        if event.data:
            try:
                out.append("[DONE]" if event.data == "[DONE]" else orjson.loads(event.data))
            except orjson.JSONDecodeError:
                out.append(event.data)  # the provider's own bytes, passed through before the error
    return out


def _malformed_count(gateway: Gateway) -> float:
    """Requests extproc counted with ``error_type="upstream_malformed_response"``."""
    text = httpx.get(f"{gateway.metrics_url}/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "gen_ai_server_request_duration_seconds_count"
        and sample.labels.get("error_type") == MALFORMED_ERROR_TYPE
    )


def _wait_for_count(gateway: Gateway, at_least: float) -> float:
    """extproc records a request when Envoy closes its stream, a moment after the client has the answer."""
    deadline = time.monotonic() + 15
    count = _malformed_count(gateway)
    while count < at_least and time.monotonic() < deadline:
        time.sleep(0.1)
        count = _malformed_count(gateway)
    return count


@pytest.mark.parametrize("junk", list(JUNK_BODIES))
@pytest.mark.parametrize(("model", "schema"), CHAT_MODELS, ids=[s for _, s in CHAT_MODELS])
def test_a_junk_success_is_a_502_in_openais_shape(gateway: Gateway, model: str, schema: str, junk: str) -> None:
    body, content_type = JUNK_BODIES[junk]
    if junk == "wrong-shape" and schema == "AWSBedrock":
        body = b'{"output": {"message": "Hel"}}'
    response = _openai_post(gateway, model, _control(body, content_type))
    assert response.status_code == 502, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()
    assert error["type"] == "error" and error["error"]["code"] == "502", error
    assert error["error"]["type"] == MALFORMED_ERROR_TYPE
    assert "provider" in error["error"]["message"]


@pytest.mark.parametrize("junk", list(JUNK_BODIES))
@pytest.mark.parametrize(("model", "schema"), ANTHROPIC_CLIENT_MODELS, ids=[s for _, s in ANTHROPIC_CLIENT_MODELS])
def test_a_junk_success_is_a_502_in_anthropics_shape(gateway: Gateway, model: str, schema: str, junk: str) -> None:
    body, content_type = JUNK_BODIES[junk]
    response = _anthropic_post(gateway, model, _control(body, content_type))
    assert response.status_code == 502, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()
    assert error == {"type": "error", "error": {"type": "api_error", "message": error["error"]["message"]}}
    assert "provider" in error["error"]["message"]


@pytest.mark.parametrize(("model", "schema"), CHAT_MODELS, ids=[s for _, s in CHAT_MODELS])
def test_a_cut_stream_ends_with_an_openai_error_chunk_and_no_done(gateway: Gateway, model: str, schema: str) -> None:
    before = _malformed_count(gateway)
    response = _openai_post(gateway, model, _control(*_CUT_STREAMS[schema]), stream=True)
    assert response.status_code == 200  # the status line was out before the stream proved cut
    events = _data(response.content)
    assert "[DONE]" not in events
    assert any(
        isinstance(e, dict) and e.get("choices") and e["choices"][0]["delta"].get("content") == "Hel" for e in events
    ), events  # what came before the cut still reached the client
    error = events[-1]["error"]
    assert error["code"] == "502" and error["type"] == MALFORMED_ERROR_TYPE, events[-1]
    assert "ended before" in error["message"]
    assert _wait_for_count(gateway, before + 1) >= before + 1


@pytest.mark.parametrize(("model", "schema"), ANTHROPIC_CLIENT_MODELS, ids=[s for _, s in ANTHROPIC_CLIENT_MODELS])
def test_a_cut_stream_ends_with_an_anthropic_error_event(gateway: Gateway, model: str, schema: str) -> None:
    response = _anthropic_post(gateway, model, _control(*_CUT_STREAMS[schema]), stream=True)
    assert response.status_code == 200
    events = _data(response.content)
    kinds = [e.get("type") for e in events if isinstance(e, dict)]
    assert "message_stop" not in kinds
    assert kinds[-1] == "error", events
    assert events[-1]["error"]["type"] == "api_error" and "ended before" in events[-1]["error"]["message"]
    assert "event: error\ndata: " in response.text  # the event name the anthropic SDK dispatches on


@pytest.mark.parametrize(("model", "schema"), CHAT_MODELS, ids=[s for _, s in CHAT_MODELS])
def test_a_stream_that_is_no_stream_at_all_ends_with_an_error(gateway: Gateway, model: str, schema: str) -> None:
    body = b"<html><body>Service Unavailable</body></html>"
    response = _openai_post(gateway, model, _control(body, "text/html"), stream=True)
    if response.status_code == 502:  # a buffered answer (not yet sent): a plain 502 is as clear
        assert response.json()["error"]["type"] == MALFORMED_ERROR_TYPE
        return
    assert response.status_code == 200
    events = _data(response.content)
    assert "[DONE]" not in events
    assert events[-1]["error"]["type"] == MALFORMED_ERROR_TYPE, events


def test_malformed_answers_are_counted_as_upstream_errors(gateway: Gateway) -> None:
    before = _malformed_count(gateway)
    for model, _ in CHAT_MODELS:
        assert _openai_post(gateway, model, _control(b"null", "application/json")).status_code == 502
    assert _wait_for_count(gateway, before + len(CHAT_MODELS)) >= before + len(CHAT_MODELS)


def test_a_well_formed_answer_still_passes(gateway: Gateway) -> None:
    """The shape checks refuse junk only: every schema's real answer and stream still succeed."""
    for model, _ in CHAT_MODELS:
        response = _openai_post(gateway, model, {})
        assert response.status_code == 200, (model, response.text)
        assert response.json()["choices"][0]["message"]["content"]
        streamed = _data(_openai_post(gateway, model, {}, stream=True).content)
        assert streamed[-1] == "[DONE]", (model, streamed[-3:])
    for model, _ in ANTHROPIC_CLIENT_MODELS:
        response = _anthropic_post(gateway, model, {})
        assert response.status_code == 200, (model, response.text)
        streamed = _data(_anthropic_post(gateway, model, {}, stream=True).content)
        assert streamed[-1]["type"] == "message_stop", (model, streamed[-3:])


EMBEDDING_MODELS = ["text-embedding-3-small", "amazon.titan-embed-text-v2:0", "text-embedding-005"]


@pytest.mark.parametrize("junk", ["html", "null", "empty", "wrong-shape"])
@pytest.mark.parametrize("model", EMBEDDING_MODELS)
def test_a_junk_embeddings_answer_is_a_502_in_openais_shape(gateway: Gateway, model: str, junk: str) -> None:
    """Embeddings too: a 502 status, never a 200 whose body is an error or the provider's junk."""
    body, content_type = JUNK_BODIES[junk]
    response = httpx.post(
        f"{gateway.url}/v1/embeddings", json={"model": model, "input": "hello"}, headers=_control(body, content_type)
    )
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == "502" and error["type"] == MALFORMED_ERROR_TYPE, error
