"""What crosses the wire, through real Envoy: what each provider receives, and what a client gets when
Envoy answers by itself.

* Every request reaches its provider with a ``content-length`` (the fake refuses a chunked body with 411,
  as provider front ends do), whether the gateway translated the body or passed the client's on.
* Bodies up to the gateway's limit pass whole (a 5 MB embeddings request and its answer cross the gRPC
  link to extproc both ways); a body over it is 413 before any provider is contacted.
* Envoy's own replies come in the client API's error shape: a body over the limit, a provider that answers
  something that is not HTTP, a provider error without a body, a path with ``#``. HTTP/1.0 clients are served.
* A failed request writes its costs as 0, so the budget's charge reads a number (Envoy warned otherwise).
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import orjson
import pytest
import yaml
from openai import OpenAI

from tests.integration.conftest import Gateway, free_port, gateway_config, start_gateway
from tests.integration.test_routing_through_envoy import _backend
from tokenvoy.config.defaults import SHOWCASE_MODELS
from tokenvoy.contract import MAX_BODY_BYTES

CHAT_MODELS = [(model, schema) for model, _, schema in SHOWCASE_MODELS if "embed" not in model]
BROKEN_MODEL = "broken-model"  # served by a "provider" whose answer is not HTTP
MESSAGES = [{"role": "user", "content": "hello there"}]
ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01", "content-type": "application/json"}


def _not_http(server: socket.socket) -> None:
    """Accepts connections, reads a request, answers bytes that are no HTTP response, closes."""
    while True:
        try:
            connection, _ = server.accept()
        except OSError:
            return
        with connection:
            connection.settimeout(5)
            try:
                connection.recv(65536)
                connection.sendall(b"this is not an HTTP response\r\n\r\n")
            except OSError:
                pass


@pytest.fixture(scope="module")
def broken_port() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=_not_http, args=(server,), daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


def _config(listener_port: int, fake_port: int, broken_port: int) -> str:
    documents = list(yaml.safe_load_all(gateway_config(listener_port, fake_port, 10_000_000, showcase=True)))
    route = next(doc for doc in documents if doc["kind"] == "AIGatewayRoute")
    broken_rule = {
        "matches": [{"headers": [{"type": "Exact", "name": "x-ai-eg-model", "value": BROKEN_MODEL}]}],
        "backendRefs": [{"name": "broken"}],
    }
    route["spec"]["rules"].insert(0, broken_rule)
    return yaml.safe_dump_all([*documents, *_backend("broken", broken_port)], sort_keys=False)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, broken_port: int) -> Iterator[Gateway]:
    directory: Path = tmp_path_factory.mktemp("wire")
    listener_port, fake_port = free_port(), free_port()
    config = _config(listener_port, fake_port, broken_port)
    running = start_gateway(directory, config_text=config, fake_port=fake_port)
    try:
        yield running
    finally:
        running.stop()


def _received(gateway: Gateway) -> list[dict[str, Any]]:
    return httpx.get(f"{gateway.fake_url}/__testupstream/requests").json()


def _sent(gateway: Gateway, request_id: str) -> dict[str, Any]:
    return next(r for r in _received(gateway) if r["headers"].get("x-request-id") == request_id)


def _pieces(body: bytes) -> Iterator[bytes]:
    """A body httpx sends ``transfer-encoding: chunked`` (no length known up front)."""
    for start in range(0, len(body), 16):
        yield body[start : start + 16]


def _raw(gateway: Gateway, request: bytes) -> bytes:
    """Send raw bytes to the gateway, read until it closes the connection."""
    port = int(gateway.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def _split(answer: bytes) -> tuple[bytes, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    return status_line, headers, body


def _openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["type"] == "error" and body["error"]["code"] == str(status), body
    assert body["error"]["type"] and body["error"]["message"]
    return body["error"]


def _anthropic_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """What the anthropic SDK reads: ``{"type":"error","error":{"type","message"}}``, nothing else."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, body
    assert body["error"]["message"]
    return body["error"]


# ---- content-length -------------------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize(("model", "schema"), CHAT_MODELS, ids=[schema for _, schema in CHAT_MODELS])
def test_every_provider_receives_the_body_with_its_length(
    gateway: Gateway, model: str, schema: str, framing: str
) -> None:
    """Translated or passed on, from a client that sent a length or one that sent its body chunked."""
    request_id = f"length-{uuid.uuid4()}"
    body = orjson.dumps({"model": model, "messages": MESSAGES, "max_tokens": 4})
    content = body if framing == "content-length" else _pieces(body)
    headers = {"content-type": "application/json", "x-request-id": request_id}
    response = httpx.post(f"{gateway.url}/v1/chat/completions", content=content, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]
    sent = _sent(gateway, request_id)
    assert "transfer-encoding" not in sent["headers"]
    assert int(sent["headers"]["content-length"]) == len(sent["body"].encode())


def test_an_anthropic_client_request_translated_for_bedrock_has_its_length(gateway: Gateway) -> None:
    request_id = f"length-{uuid.uuid4()}"
    client = anthropic.Anthropic(
        base_url=f"{gateway.url}/anthropic",
        api_key="unused",
        max_retries=0,
        default_headers={"x-request-id": request_id},
    )
    message = client.messages.create(model="amazon.nova-lite-v1:0", max_tokens=4, messages=MESSAGES)
    assert message.content[0].type == "text" and message.content[0].text
    sent = _sent(gateway, request_id)
    assert sent["path"].endswith("/converse")
    assert int(sent["headers"]["content-length"]) == len(sent["body"].encode())


# ---- the body limit -------------------------------------------------------------------------------------

GRPCIO_DEFAULT_LIMIT = 4 * 1024 * 1024  # what extproc refused (a 500 after the provider was paid)
# (model, inputs, dimensions): 5 MB requests. OpenAI's answer (150 vectors of 1536 floats) is over 4 MiB too;
# Vertex takes at most 250 instances of at most 768 dimensions, its answer stays under.
LARGE = {
    "OpenAI": ("text-embedding-3-small", [f"input {i} " + "word " * 6700 for i in range(150)], 1536),
    "GCPVertexAI": ("text-embedding-005", [f"input {i} " + "word " * 4000 for i in range(250)], 768),
}


@pytest.mark.parametrize("schema", list(LARGE))
def test_a_5_mb_embeddings_request_and_its_answer_pass_whole(gateway: Gateway, schema: str) -> None:
    model, inputs, dimensions = LARGE[schema]
    request_id = f"large-{uuid.uuid4()}"
    client = OpenAI(
        base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, default_headers={"x-request-id": request_id}
    )
    raw = client.embeddings.with_raw_response.create(
        model=model, input=inputs, dimensions=dimensions, encoding_format="float"
    )
    answer = raw.http_response.content
    if schema == "OpenAI":
        assert len(answer) > GRPCIO_DEFAULT_LIMIT
    result = orjson.loads(answer)
    assert [item["index"] for item in result["data"]] == list(range(len(inputs)))
    assert all(len(item["embedding"]) == dimensions for item in result["data"])
    assert result["usage"]["prompt_tokens"] == sum(len(text.split()) for text in inputs)
    sent = _sent(gateway, request_id)
    assert len(sent["body"]) > 5_000_000 > GRPCIO_DEFAULT_LIMIT
    assert int(sent["headers"]["content-length"]) == len(sent["body"].encode())


OVERSIZE = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"' + b"a" * MAX_BODY_BYTES + b'"}]}'


def test_a_body_over_the_limit_is_413_in_openais_shape_and_no_provider_sees_it(gateway: Gateway) -> None:
    httpx.delete(f"{gateway.fake_url}/__testupstream/requests")
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=OVERSIZE,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    error = _openai_error(response, 413)
    assert error["type"] == "request_too_large"
    assert "50 MiB" in error["message"]
    assert _received(gateway) == []


def test_a_body_over_the_limit_is_413_in_anthropics_shape(gateway: Gateway) -> None:
    httpx.delete(f"{gateway.fake_url}/__testupstream/requests")
    response = httpx.post(
        f"{gateway.url}/anthropic/v1/messages", content=OVERSIZE, headers=ANTHROPIC_HEADERS, timeout=60
    )
    error = _anthropic_error(response, 413)
    assert error["type"] == "request_too_large"
    assert _received(gateway) == []


# ---- Envoy's own replies --------------------------------------------------------------------------------


def test_a_provider_answer_that_is_not_http_is_502_in_openais_shape(gateway: Gateway) -> None:
    body = {"model": BROKEN_MODEL, "messages": MESSAGES}
    error = _openai_error(httpx.post(f"{gateway.url}/v1/chat/completions", json=body), 502)
    assert error["type"] == "upstream_protocol_error"
    assert "not valid HTTP" in error["message"] and "protocol_error" in error["message"]


def test_a_provider_answer_that_is_not_http_is_502_in_anthropics_shape(gateway: Gateway) -> None:
    client = anthropic.Anthropic(base_url=f"{gateway.url}/anthropic", api_key="unused", max_retries=0)
    with pytest.raises(anthropic.InternalServerError) as raised:
        client.messages.create(model=BROKEN_MODEL, max_tokens=4, messages=MESSAGES)
    assert raised.value.status_code == 502
    error = _anthropic_error(raised.value.response, 502)
    assert error["type"] == "api_error" and "not valid HTTP" in error["message"]


@pytest.mark.parametrize("status", ["500", "503"])
def test_a_provider_error_without_a_body_is_named_in_openais_shape(gateway: Gateway, status: str) -> None:
    headers = {"x-testupstream-status": status, "x-testupstream-body": ""}
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES}, headers=headers
    )
    error = _openai_error(response, int(status))
    assert error["message"] == f"the LLM provider answered {status} with an empty body"


def test_a_provider_error_without_a_body_is_named_in_anthropics_shape(gateway: Gateway) -> None:
    headers = {**ANTHROPIC_HEADERS, "x-testupstream-status": "500", "x-testupstream-body": ""}
    body = {"model": "claude-sonnet-4-6", "max_tokens": 4, "messages": MESSAGES}
    response = httpx.post(f"{gateway.url}/anthropic/v1/messages", json=body, headers=headers)
    error = _anthropic_error(response, 500)
    assert error == {"type": "api_error", "message": "the LLM provider answered 500 with an empty body"}


BODY = orjson.dumps({"model": "gpt-4o-mini", "messages": MESSAGES})


def _request(path: bytes, version: bytes = b"HTTP/1.1", body: bytes = BODY) -> bytes:
    return (
        b"POST %s %s\r\nhost: gateway\r\ncontent-type: application/json\r\nanthropic-version: 2023-06-01\r\n"
        b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (path, version, len(body), body)
    )


def test_a_fragment_in_the_path_is_400_in_openais_shape(gateway: Gateway) -> None:
    status_line, headers, body = _split(_raw(gateway, _request(b"/v1/chat/completions#part")))
    assert status_line == b"HTTP/1.1 400 Bad Request"
    assert headers["content-type"] == "application/json"
    error = orjson.loads(body)["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "400")
    assert "`#`" in error["message"] and "/v1/chat/completions#part" in error["message"]


def test_a_fragment_in_the_path_is_400_in_anthropics_shape(gateway: Gateway) -> None:
    status_line, headers, body = _split(_raw(gateway, _request(b"/anthropic/v1/messages#part")))
    assert status_line == b"HTTP/1.1 400 Bad Request"
    assert headers["content-type"] == "application/json"
    reply = orjson.loads(body)
    assert reply["type"] == "error" and set(reply["error"]) == {"type", "message"}
    assert reply["error"]["type"] == "invalid_request_error" and "`#`" in reply["error"]["message"]


def test_an_http_1_0_client_is_served(gateway: Gateway) -> None:
    status_line, headers, body = _split(_raw(gateway, _request(b"/v1/chat/completions", b"HTTP/1.0")))
    assert status_line == b"HTTP/1.0 200 OK"
    assert int(headers["content-length"]) == len(body)
    assert orjson.loads(body)["choices"][0]["message"]["content"]


def test_an_http_1_0_client_gets_a_stream_that_ends_with_the_connection(gateway: Gateway) -> None:
    streamed = orjson.dumps({"model": "claude-sonnet-4-6", "stream": True, "messages": MESSAGES, "max_tokens": 3})
    status_line, headers, body = _split(_raw(gateway, _request(b"/v1/chat/completions", b"HTTP/1.0", streamed)))
    assert status_line == b"HTTP/1.0 200 OK"
    assert headers["content-type"].startswith("text/event-stream")
    assert "transfer-encoding" not in headers and "content-length" not in headers
    events = [line for line in body.split(b"\n") if line.startswith(b"data: ")]
    assert events[-1] == b"data: [DONE]"
    assert orjson.loads(events[0].removeprefix(b"data: "))["object"] == "chat.completion.chunk"


def test_an_http_1_0_client_gets_errors_in_its_apis_shape(gateway: Gateway) -> None:
    answer = _raw(gateway, _request(b"/anthropic/v1/messages", b"HTTP/1.0", b"{not json"))
    status_line, headers, body = _split(answer)
    assert status_line == b"HTTP/1.0 400 Bad Request"
    assert headers["content-type"] == "application/json"
    reply = orjson.loads(body)
    assert reply["type"] == "error" and set(reply["error"]) == {"type", "message"}
    assert reply["error"]["type"] == "invalid_request_error" and "not valid JSON" in reply["error"]["message"]


# ---- costs of a failed request --------------------------------------------------------------------------


def test_a_failed_request_is_charged_nothing_and_envoy_has_nothing_to_warn_about(gateway: Gateway) -> None:
    """The budget's charge at stream end reads ``llm_total_token``: a failure writes 0 (Envoy used to log
    ``Invalid hits_addend`` for every non-2xx answer, the key being absent)."""
    user = f"user-{uuid.uuid4()}"
    request_id = f"failed-{uuid.uuid4()}"
    headers = {"x-user-id": user, "x-request-id": request_id, "x-testupstream-status": "429"}
    body = {"model": "gpt-4o-mini", "messages": MESSAGES}
    failed = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers)
    assert failed.status_code == 429
    gateway.wait_for_log(lambda entry: entry.get("x-request-id") == request_id)
    assert "Invalid hits_addend" not in gateway.stderr()
    served = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers={"x-user-id": user})
    assert served.status_code == 200
    assert served.headers["x-ratelimit-remaining"] == failed.headers["x-ratelimit-remaining"]
