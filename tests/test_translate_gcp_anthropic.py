"""Claude on Vertex AI (schema ``GCPAnthropic``) for OpenAI and Anthropic clients.

The content mapping is Anthropic's (tested in test_translate_openai_to_anthropic.py); these tests pin what
Vertex changes: the ``:rawPredict``/``:streamRawPredict`` path under the project prefix, the body keys, and
errors in Google's shape as well as Anthropic's. Streams are Anthropic's SSE, so they are compared with
the direct Anthropic translation, split at any byte.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenvoy.config.model import Backend, Endpoint
from tokenvoy.extproc.sse import SSEParser
from tokenvoy.extproc.translate import translator_for
from tokenvoy.extproc.translate.anthropic_to_anthropic import AnthropicToAnthropic
from tokenvoy.extproc.translate.base import ClientAPI, ClientRequest
from tokenvoy.extproc.translate.gcp_anthropic import AnthropicToGCPAnthropic, OpenAIToGCPAnthropic
from tokenvoy.extproc.translate.openai_to_anthropic import OpenAIToAnthropic
from tokenvoy.extproc.usage import TokenUsage
from tokenvoy.testupstream import anthropic_clouds, anthropic_messages
from tokenvoy.testupstream.http import Request
from tokenvoy.testupstream.server import App

PREFIX = "/v1/projects/my-project/locations/us-east5"
VERTEX = Backend("vertex", "GCPAnthropic", None, PREFIX, Endpoint("us-east5-aiplatform.googleapis.com", 443, True))
ANTHROPIC = Backend("anthropic", "Anthropic", None, "/v1", Endpoint("api.anthropic.com", 443, tls=True))
MODEL = "claude-sonnet-4-5@20250929"
NOW = 1_700_000_000
USER = {"role": "user", "content": "Hello, Claude"}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def _openai(body: dict[str, Any]) -> ClientRequest:
    body = {"model": MODEL, **body}
    return ClientRequest(
        ClientAPI.OPENAI_CHAT, "/v1/chat/completions", orjson.dumps(body), body, MODEL, body.get("stream") is True, True
    )


def _anthropic(body: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> ClientRequest:
    body = body or {"model": "claude", "max_tokens": 5, "messages": [USER]}
    return ClientRequest(
        ClientAPI.ANTHROPIC_MESSAGES,
        "/anthropic/v1/messages",
        orjson.dumps(body),
        body,
        body["model"],
        body.get("stream") is True,
        True,
        headers=headers if headers is not None else {"anthropic-version": "2023-06-01"},
    )


def _fake_vertex(path: str, body: bytes) -> tuple[int, bytes]:
    request = Request("POST", path, path, "", "HTTP/1.1", {"content-type": "application/json"}, body, True)
    response = anthropic_clouds.vertex_raw_predict(request, App(), 0.0)
    return response.status, response.body if response.stream is None else b"".join(response.stream)  # type: ignore[arg-type]


# ---- requests ----------------------------------------------------------------------------------------


def test_registered_for_both_client_apis():
    openai_factory = translator_for(ClientAPI.OPENAI_CHAT, "GCPAnthropic")
    anthropic_factory = translator_for(ClientAPI.ANTHROPIC_MESSAGES, "GCPAnthropic")
    assert openai_factory is not None and isinstance(openai_factory(), OpenAIToGCPAnthropic)
    assert anthropic_factory is not None and isinstance(anthropic_factory(), AnthropicToGCPAnthropic)


@pytest.mark.parametrize(("stream", "method"), [(False, "rawPredict"), (True, "streamRawPredict")])
def test_openai_request_path_and_body(stream: bool, method: str):
    body = {"messages": [{"role": "system", "content": "terse"}, USER], "tools": [WEATHER_TOOL], "stream": stream}
    upstream = OpenAIToGCPAnthropic().translate_request(_openai(body), VERTEX, MODEL)
    assert upstream.path == f"{PREFIX}/publishers/anthropic/models/claude-sonnet-4-5@20250929:{method}"
    direct = OpenAIToAnthropic().translate_request(_openai(body), ANTHROPIC, MODEL)
    expected = {k: v for k, v in orjson.loads(direct.body or b"").items() if k != "model"}
    assert orjson.loads(upstream.body or b"") == {**expected, "anthropic_version": "vertex-2023-10-16"}
    assert ("stream" in expected) is stream  # streamRawPredict still wants "stream": true
    assert "anthropic-version" not in upstream.set_headers
    assert "authorization" in upstream.remove_headers  # the client's OpenAI key, not Google's token
    status, answer = _fake_vertex(upstream.path, upstream.body or b"")
    assert status == 200, answer


def test_model_names_are_percent_encoded_except_the_version_at():
    upstream = OpenAIToGCPAnthropic().translate_request(_openai({"messages": [USER]}), VERTEX, "claude/odd name@1")
    assert upstream.path == f"{PREFIX}/publishers/anthropic/models/claude%2Fodd%20name@1:rawPredict"


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_client_body_loses_model_keeps_stream_gains_version(stream: bool):
    body = {"model": "claude", "max_tokens": 5, "messages": [USER], "stream": stream}
    headers = {"anthropic-version": "2023-06-01", "anthropic-beta": "context-1m-2025-08-07"}
    upstream = AnthropicToGCPAnthropic().translate_request(_anthropic(body, headers), VERTEX, MODEL)
    assert upstream.path.endswith(":streamRawPredict" if stream else ":rawPredict")
    sent = orjson.loads(upstream.body or b"")
    assert sent == {
        "anthropic_version": "vertex-2023-10-16",
        "max_tokens": 5,
        "messages": [USER],
        "stream": stream,
    }
    assert upstream.set_headers == {}  # the client's anthropic-beta header goes through as Vertex reads it
    status, answer = _fake_vertex(upstream.path, upstream.body or b"")
    assert status == 200, answer


@pytest.mark.parametrize(
    ("allowed", "set_headers", "removed"),
    [
        (frozenset({"context-1m-2025-08-07"}), {"anthropic-beta": "context-1m-2025-08-07"}, ()),
        (frozenset({"effort-2025-11-24"}), {}, ("anthropic-beta",)),
        (frozenset({"*"}), {}, ()),
    ],
)
def test_a_configured_allowlist_narrows_the_beta_header_vertex_gets(allowed, set_headers, removed):
    backend = dataclasses.replace(VERTEX, anthropic_betas=allowed)
    headers = {"anthropic-beta": "claude-code-20250219,context-1m-2025-08-07"}
    request = _anthropic({"model": "claude", "max_tokens": 5, "messages": [USER]}, headers)
    upstream = AnthropicToGCPAnthropic().translate_request(request, backend, MODEL)
    assert upstream.set_headers == set_headers
    assert upstream.remove_headers == removed


# ---- answers ------------------------------------------------------------------------------------------


def _answer(stream: bool) -> anthropic_messages.MessagesReply:
    body = {
        "model": MODEL,
        "max_tokens": 6,
        "system": [{"type": "text", "text": "cached preamble words", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "h\u00e9llo \u2603 there"}],
        "stream": stream,
    }
    reply = anthropic_messages.create_message(
        orjson.dumps(body), {"x-api-key": "k", "anthropic-version": "2023-06-01"}, message_id="msg_vrtx_01"
    )
    assert reply.status == 200
    return reply


USAGE = TokenUsage(input=6, cached_input=3, cache_creation_input=0, output=6, total=12)
SSE_STREAM = b"".join(anthropic_messages.sse_frame(e) for e in _answer(True).events or [])


def test_json_answers_for_both_clients():
    message = orjson.dumps(_answer(False).body)
    openai_translator = OpenAIToGCPAnthropic(clock=lambda: NOW)
    openai_translator.translate_request(_openai({"messages": [USER]}), VERTEX, MODEL)
    completion = orjson.loads(openai_translator.translate_response_body(message, True))
    assert completion["id"] == "msg_vrtx_01" and completion["model"] == MODEL
    assert completion["usage"]["prompt_tokens_details"] == {"cached_tokens": 3}
    assert openai_translator.usage == USAGE
    anthropic_translator = AnthropicToGCPAnthropic()
    anthropic_translator.translate_request(_anthropic(), VERTEX, MODEL)
    assert anthropic_translator.translate_response_body(message, True) is None
    assert anthropic_translator.usage == USAGE


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def _feed(translator: Any, pieces: list[bytes]) -> bytes:
    out = []
    for i, piece in enumerate(pieces):
        result = translator.translate_response_body(piece, i == len(pieces) - 1)
        out.append(piece if result is None else result)
    return b"".join(out)


def _openai_streaming(cls: type[OpenAIToAnthropic] = OpenAIToGCPAnthropic) -> Any:
    translator = cls(clock=lambda: NOW)
    body = {"messages": [USER], "stream": True, "stream_options": {"include_usage": True}}
    translator.translate_request(_openai(body), VERTEX if cls is OpenAIToGCPAnthropic else ANTHROPIC, MODEL)
    return translator


def _anthropic_streaming() -> AnthropicToGCPAnthropic:
    translator = AnthropicToGCPAnthropic()
    translator.translate_request(
        _anthropic({"model": "c", "max_tokens": 5, "messages": [USER], "stream": True}), VERTEX, MODEL
    )
    return translator


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(SSE_STREAM)), max_size=30))
def test_streams_for_any_split_are_the_anthropic_translation(cuts: list[int]):
    pieces = _split(SSE_STREAM, cuts)
    openai_translator = _openai_streaming()
    assert openai_translator.translate_response_headers({"content-type": "text/event-stream"}) is None
    out = _feed(openai_translator, pieces)
    assert out == _feed(_openai_streaming(OpenAIToAnthropic), [SSE_STREAM])
    assert out.endswith(b"data: [DONE]\n\n")
    assert openai_translator.usage == USAGE
    anthropic_translator = _anthropic_streaming()
    assert anthropic_translator.translate_response_headers({"content-type": "text/event-stream"}) is None
    assert _feed(anthropic_translator, pieces) == SSE_STREAM  # passed through untouched
    assert anthropic_translator.usage == USAGE
    assert anthropic_translator.response_model == MODEL


def test_streamed_text_with_multibyte_characters_survives_byte_by_byte_feeding():
    out = _feed(_openai_streaming(), [SSE_STREAM[i : i + 1] for i in range(len(SSE_STREAM))])
    text = ""
    for event in SSEParser().feed(out):
        if event.data and event.data != "[DONE]":  # skips keep-alive comments
            chunk = orjson.loads(event.data)
            text += "".join(c["delta"].get("content") or "" for c in chunk["choices"])
    assert text == " ".join(anthropic_messages.ANSWER.split()[:6])


# ---- errors -------------------------------------------------------------------------------------------

GOOGLE_429 = orjson.dumps(
    {"error": {"code": 429, "message": "Quota exceeded for aiplatform.googleapis.com", "status": "RESOURCE_EXHAUSTED"}}
)


@pytest.mark.parametrize(
    ("status", "raw", "error_type", "message"),
    [
        (429, GOOGLE_429, "rate_limit_error", "RESOURCE_EXHAUSTED: Quota exceeded for aiplatform.googleapis.com"),
        (
            429,
            b"[" + GOOGLE_429 + b"]",
            "rate_limit_error",
            "RESOURCE_EXHAUSTED: Quota exceeded for aiplatform.googleapis.com",
        ),
        (
            404,
            b'{"error": {"code": 404, "message": "Publisher Model `claude-x` not found.", "status": "NOT_FOUND"}}',
            "not_found_error",
            "NOT_FOUND: Publisher Model `claude-x` not found.",
        ),
        (
            400,
            orjson.dumps(anthropic_messages.error_body("max_tokens: Field required")),
            "invalid_request_error",
            "max_tokens: Field required",
        ),
        (
            529,
            orjson.dumps(anthropic_messages.error_body("Overloaded", "overloaded_error")),
            "overloaded_error",
            "Overloaded",
        ),
        (503, b"upstream connect error", "overloaded_error", "upstream connect error"),
    ],
)
def test_google_and_anthropic_shaped_errors_reach_both_clients_with_the_status(
    status: int, raw: bytes, error_type: str, message: str
):
    openai_translator = OpenAIToGCPAnthropic()
    openai_translator.translate_request(_openai({"messages": [USER]}), VERTEX, MODEL)
    assert orjson.loads(openai_translator.translate_error(status, {"content-type": "application/json"}, raw)) == {
        "type": "error",
        "error": {"type": error_type, "code": str(status), "message": message},
    }
    anthropic_translator = AnthropicToGCPAnthropic()
    anthropic_translator.translate_request(_anthropic(), VERTEX, MODEL)
    assert orjson.loads(anthropic_translator.translate_error(status, {"content-type": "application/json"}, raw)) == {
        "type": "error",
        "error": {"type": error_type, "message": message},
    }


def test_direct_anthropic_errors_still_pass_through_untouched():
    """The refactor kept Anthropic's own API byte-exact on errors (only the clouds rewrite them)."""
    translator = AnthropicToAnthropic()
    translator.translate_request(_anthropic(), ANTHROPIC, "claude")
    assert translator.translate_error(429, {}, GOOGLE_429) is None
