"""Anthropic token counting (``/anthropic/v1/messages/count_tokens``) to each backend that can count: the request
each provider documents, checked by the fake providers (written from those docs), and the answer back in
Anthropic's ``{"input_tokens"}``; provider errors in Anthropic's shape; no count ever made up."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import orjson
import pytest

from tokenvoy.config.model import Backend, Endpoint
from tokenvoy.extproc.errors import GatewayError, UpstreamShapeError
from tokenvoy.extproc.translate import translator_for
from tokenvoy.extproc.translate.base import ClientAPI, ClientRequest
from tokenvoy.testupstream import anthropic_clouds, anthropic_messages, bedrock_count_tokens
from tokenvoy.testupstream.http import Request, Response
from tokenvoy.testupstream.server import App

ANTHROPIC = Backend("anthropic", "Anthropic", None, "/v1", Endpoint("api.anthropic.com", 443, tls=True))
PREFIX = "/v1/projects/my-project/locations/us-east5"
VERTEX = Backend("vertex", "GCPAnthropic", None, PREFIX, Endpoint("us-east5-aiplatform.googleapis.com", 443, True))
INVOKE = Backend("invoke", "AWSAnthropic", None, "", Endpoint("bedrock-runtime.us-east-1.amazonaws.com", 443, True))
CONVERSE = Backend("converse", "AWSBedrock", None, "", Endpoint("bedrock-runtime.us-east-1.amazonaws.com", 443, True))
BETAS = "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27"
# What Claude Code counts: system, tools, a conversation (its words: 3 + 2 + 5 = 10 for the fakes).
BODY = {
    "model": "claude-sonnet-4-6",
    "system": "You are terse.",
    "messages": [
        {"role": "user", "content": "count these words"},
        {"role": "system", "content": "Answer briefly."},  # Claude Code's mid-conversation system message
    ],
    "tools": [{"name": "Read", "description": "Read a file", "input_schema": {"type": "object", "properties": {}}}],
}
COUNT = 3 + 3 + 2  # system, user, the system message (Converse: a system block; Anthropic: refused below)


def _request(body: dict[str, Any], betas: str | None = BETAS) -> ClientRequest:
    headers = {"anthropic-version": "2023-06-01", "content-type": "application/json"}
    if betas is not None:
        headers["anthropic-beta"] = betas
    return ClientRequest(
        api=ClientAPI.ANTHROPIC_COUNT_TOKENS,
        path="/anthropic/v1/messages/count_tokens?beta=true",
        raw=orjson.dumps(body),
        body=body,
        model=body["model"],
        stream=False,
        needs_usage=True,
        headers=headers,
    )


def _fake(path: str, body: bytes, headers: dict[str, str]) -> Response:
    request = Request("POST", path, path, "", "HTTP/1.1", headers, body, True)
    if path.endswith("/count-tokens"):
        return bedrock_count_tokens.handle(request, App(), 0.0)
    if path.endswith(anthropic_clouds.VERTEX_COUNT_SUFFIX):
        return anthropic_clouds.vertex_count_tokens(request, App(), 0.0)
    reply = anthropic_messages.count_tokens(body, {**headers, "x-api-key": "k"})
    return Response(reply.status, orjson.dumps(reply.body), "application/json")


def _round_trip(backend: Backend, model: str, body: dict[str, Any], betas: str | None = BETAS) -> tuple[int, Any, Any]:
    """(status, the client's JSON answer, what the provider got) through the translator and the fake."""
    translator = translator_for(ClientAPI.ANTHROPIC_COUNT_TOKENS, backend.schema)
    assert translator is not None
    count = translator()
    request = _request(body, betas)
    upstream = count.translate_request(request, backend, model)
    headers = {k: v for k, v in request.headers.items() if k not in upstream.remove_headers}
    headers.update(upstream.set_headers)
    sent = upstream.body if upstream.body is not None else request.raw
    answer = _fake(upstream.path, sent, headers)
    assert isinstance(answer.body, bytes)
    changes = None
    if 200 <= answer.status < 300:
        changes = count.translate_response_headers(dict(answer.headers))
        replaced = count.translate_response_body(answer.body, True)
    else:  # as the router calls it: errors have their own method
        replaced = count.translate_error(answer.status, dict(answer.headers), answer.body)
    assert count.usage is None and count.take_usage() is None  # a count is never charged
    if changes is not None:
        assert "content-length" in changes.remove_headers
    return answer.status, orjson.loads(replaced if replaced is not None else answer.body), (upstream, headers)


ANTHROPIC_BODY = {**BODY, "messages": BODY["messages"][:1]}


def test_anthropic_gets_the_body_as_sent_and_answers_unchanged() -> None:
    status, answer, (upstream, headers) = _round_trip(ANTHROPIC, "claude-sonnet-4-6", ANTHROPIC_BODY)
    assert (status, answer) == (200, {"input_tokens": 6})
    assert upstream.path == "/v1/messages/count_tokens" and upstream.body is None
    assert headers["anthropic-beta"] == BETAS  # Anthropic takes every flag


def test_a_model_override_is_written_in_place() -> None:
    _, _, (upstream, _) = _round_trip(ANTHROPIC, "claude-opus-4-8", ANTHROPIC_BODY)
    assert orjson.loads(upstream.body)["model"] == "claude-opus-4-8"


def test_vertex_gets_its_count_tokens_endpoint_with_the_model_in_the_body() -> None:
    status, answer, (upstream, _) = _round_trip(VERTEX, "claude-haiku-4-5@20251001", ANTHROPIC_BODY)
    assert (status, answer) == (200, {"input_tokens": 6})
    assert upstream.path == f"{PREFIX}/publishers/anthropic/models/count-tokens:rawPredict"
    sent = orjson.loads(upstream.body)
    assert (sent["model"], sent["anthropic_version"]) == ("claude-haiku-4-5@20251001", "vertex-2023-10-16")


def test_vertex_errors_reach_the_client_in_anthropics_shape() -> None:
    status, answer, _ = _round_trip(VERTEX, "m@1", {**ANTHROPIC_BODY, "max_tokens": 5})
    assert status == 400
    assert answer["type"] == "error" and answer["error"]["type"] == "invalid_request_error"
    assert "max_tokens: Extra inputs are not permitted" in answer["error"]["message"]


def test_claude_on_bedrock_counts_with_the_invoke_model_body_and_only_documented_betas() -> None:
    model = "anthropic.claude-haiku-4-5-20251001-v1:0"
    status, answer, (upstream, headers) = _round_trip(INVOKE, model, ANTHROPIC_BODY)
    assert (status, answer) == (200, {"input_tokens": 6})
    assert upstream.path == "/model/anthropic.claude-haiku-4-5-20251001-v1%3A0/count-tokens"
    invoke = orjson.loads(base64.b64decode(orjson.loads(upstream.body)["input"]["invokeModel"]["body"]))
    assert "model" not in invoke and invoke["anthropic_version"] == "bedrock-2023-05-31"
    assert invoke["anthropic_beta"] == ["interleaved-thinking-2025-05-14", "context-management-2025-06-27"]
    assert invoke["max_tokens"] == 1 and "anthropic-beta" not in headers


def test_a_thinking_budget_gets_a_max_tokens_above_it_as_invoke_model_requires() -> None:
    thinking = {**ANTHROPIC_BODY, "thinking": {"type": "enabled", "budget_tokens": 2048}}
    status, _, (upstream, _) = _round_trip(INVOKE, "anthropic.claude-haiku-4-5-20251001-v1:0", thinking)
    assert status == 200
    assert (
        orjson.loads(base64.b64decode(orjson.loads(upstream.body)["input"]["invokeModel"]["body"]))["max_tokens"]
        == 2049
    )


def test_converse_counts_the_converse_form_mid_conversation_system_message_included() -> None:
    status, answer, (upstream, _) = _round_trip(CONVERSE, "anthropic.claude-sonnet-4-5-20250929-v1:0", BODY)
    assert (status, answer) == (200, {"input_tokens": COUNT})
    converse = orjson.loads(upstream.body)["input"]["converse"]
    assert set(converse) == {"messages", "system", "toolConfig", "additionalModelRequestFields"}
    assert converse["additionalModelRequestFields"]["anthropic_beta"] == [
        "interleaved-thinking-2025-05-14",
        "context-management-2025-06-27",
    ]


def test_a_model_bedrock_cannot_count_for_is_a_clear_error_not_a_zero() -> None:
    status, answer, _ = _round_trip(CONVERSE, "amazon.nova-lite-v1:0", BODY)
    assert status == 400
    assert answer["type"] == "error"
    assert answer["error"]["message"] == f"ValidationException: {bedrock_count_tokens.UNSUPPORTED_MODEL}"


def test_an_answer_without_a_count_is_a_502_not_a_zero() -> None:
    count = translator_for(ClientAPI.ANTHROPIC_COUNT_TOKENS, "AWSAnthropic")()  # type: ignore[misc]
    count.translate_request(_request(ANTHROPIC_BODY), INVOKE, "anthropic.m")
    count.translate_response_headers({"content-type": "application/json"})
    with pytest.raises(GatewayError) as raised:
        count.translate_response_body(b"{}", True)
    assert raised.value.status == 502


# Found by tests/test_translate_fuzz.py: junk reached the client as a 200 count (Anthropic, Vertex), and a
# 2xx without a count was a plain GatewayError rather than the shape error the router reports as such.
@pytest.mark.parametrize(
    ("backend", "answer"),
    [
        (ANTHROPIC, b"<html>502 Bad Gateway</html>"),
        (ANTHROPIC, b'{"input_tokens": "6"}'),
        (VERTEX, b"[]"),
        (INVOKE, b"\x89PNG"),
        (INVOKE, b'{"inputTokens": true}'),
        (CONVERSE, b'{"inputTokens": -1}'),
    ],
    ids=["anthropic-html", "anthropic-string", "vertex-array", "invoke-binary", "invoke-bool", "converse-negative"],
)
def test_a_2xx_that_is_no_count_is_a_502_shape_error(backend: Backend, answer: bytes) -> None:
    count = translator_for(ClientAPI.ANTHROPIC_COUNT_TOKENS, backend.schema)()  # type: ignore[misc]
    count.translate_request(_request(ANTHROPIC_BODY), backend, "claude-sonnet-4-6")
    count.translate_response_headers({"content-type": "application/json"})
    with pytest.raises(UpstreamShapeError) as raised:
        count.translate_response_body(answer, True)
    assert raised.value.status == 502 and raised.value.message


@pytest.mark.parametrize("schema", ["OpenAI", "AzureOpenAI", "GCPVertexAI"])
def test_backends_that_cannot_count_have_no_translator(schema: str) -> None:
    """The upstream filter then answers 422 in Anthropic's shape naming the backend (never a made-up count)."""
    assert translator_for(ClientAPI.ANTHROPIC_COUNT_TOKENS, schema) is None


def test_a_configured_allowlist_applies_to_counting_too() -> None:
    backend = dataclasses.replace(VERTEX, anthropic_betas=frozenset({"interleaved-thinking-2025-05-14"}))
    _, _, (_, headers) = _round_trip(backend, "m@1", ANTHROPIC_BODY)
    assert headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
