"""Anthropic Messages client → Anthropic backend: a pass-through that edits only what it must and reads
usage from JSON answers and from SSE streams (examples from Anthropic's documented Messages API)."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenvoy.config.model import Backend, Endpoint
from tokenvoy.extproc.errors import GatewayError
from tokenvoy.extproc.translate import translator_for
from tokenvoy.extproc.translate.anthropic_to_anthropic import AnthropicToAnthropic
from tokenvoy.extproc.translate.base import ClientAPI, ClientRequest
from tokenvoy.render import bootstrap as render_bootstrap
from tokenvoy.testupstream import anthropic_messages

BACKEND = Backend(
    name="anthropic",
    schema="Anthropic",
    schema_version=None,
    path_prefix="/v1",
    endpoint=Endpoint("api.anthropic.com", 443, tls=True),
)
BODY = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 1024,
    "messages": [{"role": "user", "content": "Hello, world"}],
}


def _request(body: dict[str, Any] = BODY, headers: dict[str, str] | None = None) -> ClientRequest:
    raw = orjson.dumps(body)
    return ClientRequest(
        api=ClientAPI.ANTHROPIC_MESSAGES,
        path="/anthropic/v1/messages",
        raw=raw,
        body=body,
        model=body["model"],
        stream=body.get("stream") is True,
        needs_usage=True,
        headers=headers if headers is not None else {"anthropic-version": "2023-06-01"},
    )


def test_registered_for_the_anthropic_schema():
    factory = translator_for(ClientAPI.ANTHROPIC_MESSAGES, "Anthropic")
    assert factory is not None and isinstance(factory(), AnthropicToAnthropic)


def test_body_unchanged_path_from_prefix_version_kept():
    upstream = AnthropicToAnthropic().translate_request(
        _request(headers={"anthropic-version": "2024-01-01"}), BACKEND, "claude-sonnet-4-5"
    )
    assert upstream.path == "/v1/messages"
    assert upstream.body is None  # the client's bytes go through
    assert upstream.set_headers == {"anthropic-version": "2024-01-01"}
    prefixed = dataclasses.replace(BACKEND, path_prefix="/anthropic/v1")
    assert AnthropicToAnthropic().translate_request(_request(), prefixed, "m").path == "/anthropic/v1/messages"


def test_version_defaulted_and_model_override_is_an_in_place_edit():
    raw = b'{"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}'
    request = _request(orjson.loads(raw), headers={})
    request.raw = raw
    upstream = AnthropicToAnthropic().translate_request(request, BACKEND, "claude-opus-4-1")
    assert upstream.set_headers == {"anthropic-version": "2023-06-01"}
    assert upstream.body == raw.replace(b'"claude-sonnet-4-5"', b'"claude-opus-4-1"')


MESSAGE = {
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "Hi! My name is Claude."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 2095,
        "output_tokens": 503,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 1000,
    },
}


def test_json_answer_usage_normalised_and_model_recorded():
    translator = AnthropicToAnthropic()
    translator.translate_request(_request(), BACKEND, "claude-sonnet-4-5")
    assert translator.translate_response_headers({}) is None
    assert translator.translate_response_body(orjson.dumps(MESSAGE), True) is None
    assert translator.response_model == "claude-sonnet-4-5-20250929"
    usage = translator.usage
    assert usage is not None
    assert (usage.input, usage.cached_input, usage.cache_creation_input, usage.output, usage.total) == (
        3195,
        1000,
        100,
        503,
        3698,
    )


def test_errors_pass_through_without_usage():
    translator = AnthropicToAnthropic()
    translator.translate_request(_request(), BACKEND, "claude-sonnet-4-5")
    body = orjson.dumps(anthropic_messages.error_body("max_tokens: Field required"))
    assert translator.translate_error(400, {}, body) is None
    assert translator.take_usage() is None and translator.usage is None


def _recorded_stream() -> bytes:
    body = {
        **BODY,
        "stream": True,
        "system": [{"type": "text", "text": "be kind", "cache_control": {"type": "ephemeral"}}],
    }
    reply = anthropic_messages.create_message(
        orjson.dumps(body), {"anthropic-version": "2023-06-01", "x-api-key": "k"}, message_id="msg_1"
    )
    assert reply.status == 200 and reply.events is not None
    return b"".join(anthropic_messages.sse_frame(e) for e in reply.events)


STREAM = _recorded_stream()


def _read(pieces: list[bytes]) -> AnthropicToAnthropic:
    translator = AnthropicToAnthropic()
    translator.translate_request(_request({**BODY, "stream": True}), BACKEND, "claude-sonnet-4-5")
    for index, piece in enumerate(pieces):
        assert translator.translate_response_body(piece, index == len(pieces) - 1) is None
    return translator


def test_stream_usage_from_message_start_and_message_delta():
    translator = _read([STREAM])
    usage = translator.usage
    assert usage is not None
    # the fake reports the cache_control'd system words as cache reads; output from message_delta
    assert usage.cached_input == 2
    assert usage.input == 2 + 2  # "be kind" (cached) + "Hello, world"
    assert usage.output == 28
    assert usage.total == usage.input + usage.output
    assert translator.response_model == "claude-sonnet-4-5"


def test_documented_stream_example():
    events = [
        {
            "type": "message_start",
            "message": {
                **MESSAGE,
                "content": [],
                "stop_reason": None,
                "usage": {"input_tokens": 25, "output_tokens": 1},
            },
        },
        {"type": "ping"},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 15},
        },
        {"type": "message_stop"},
    ]
    translator = _read([b"".join(anthropic_messages.sse_frame(e) for e in events)])
    assert translator.usage is not None
    assert (translator.usage.input, translator.usage.output, translator.usage.total) == (25, 15, 40)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=30))
def test_stream_usage_is_the_same_for_any_split(cuts):
    points = sorted(set(cuts))
    pieces = [STREAM[a:b] for a, b in itertools.pairwise([0, *points, len(STREAM)])]
    assert _read(pieces).usage == _read([STREAM]).usage


def test_gateway_errors_in_each_client_apis_shape():
    error = GatewayError(404, "model 'x' is not served by this gateway", "model_not_found")
    assert orjson.loads(ClientAPI.ANTHROPIC_MESSAGES.error_body(error)) == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "model 'x' is not served by this gateway"},
    }
    assert orjson.loads(ClientAPI.OPENAI_CHAT.error_body(error))["error"]["code"] == "404"


def test_envoy_local_replies_have_anthropic_variants_keyed_on_the_clients_path():
    mappers = render_bootstrap.to_json(render_bootstrap.local_reply_config())["mappers"]
    anthropic = [m for m in mappers if "code" not in m["body_format_override"]["json_format"]["error"]]
    assert len(anthropic) * 3 == len(mappers)  # Anthropic's, Google's (Gemini API) and OpenAI's shapes
    assert mappers[: len(anthropic)] == anthropic  # first match wins
    assert {m["status_code"] for m in anthropic} == {400, 401, 403, 404, 408, 413, 429, 431, 500, 502, 503, 504}
    for mapper in anthropic:
        keyed = mapper["filter"]["and_filter"]["filters"][0]["extension_filter"]["typed_config"]["expression"]
        assert "original_path" in keyed and "request.path" in keyed and "'/anthropic/'" in keyed
