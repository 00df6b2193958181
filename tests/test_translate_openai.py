"""OpenAI client → OpenAI backend: minimal request edits, usage always read, the client's stream untouched."""

from __future__ import annotations

import itertools

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenvoy.config.model import Backend, Endpoint
from tokenvoy.extproc.errors import UpstreamShapeError
from tokenvoy.extproc.translate.base import ClientAPI, ClientRequest
from tokenvoy.extproc.translate.openai_to_openai import OpenAIToOpenAI
from tokenvoy.extproc.usage import TokenUsage

BACKEND = Backend(
    name="openai",
    schema="OpenAI",
    schema_version=None,
    path_prefix="/v1",
    endpoint=Endpoint("api.openai.com", 443, tls=True),
)

# A client body as an SDK might send it: odd spacing, a nested "model" in the history and in a tool.
RAW = (
    b'{ "messages" : [{"role":"user","content":"use \\"model\\": x","model":"nested"}],\n'
    b'  "tools": [{"type":"function","function":{"name":"f","parameters":{"model":{"type":"string"}}}}],\n'
    b'  "model":"gpt-4o-mini" , "temperature": 0.2 }'
)


def _request(raw: bytes, needs_usage: bool = True) -> ClientRequest:
    body = orjson.loads(raw)
    return ClientRequest(
        api=ClientAPI.OPENAI_CHAT,
        path="/v1/chat/completions",
        raw=raw,
        body=body,
        model=body["model"],
        stream=bool(body.get("stream")),
        needs_usage=needs_usage,
    )


def _with(raw: bytes, extra: bytes) -> bytes:
    return raw[:-1] + b", " + extra + b"}"


# ---- requests ----------------------------------------------------------------------------------------


def test_path_is_the_backend_prefix_plus_chat_completions():
    upstream = OpenAIToOpenAI().translate_request(_request(RAW), BACKEND, "gpt-4o-mini")
    assert upstream.path == "/v1/chat/completions"
    assert upstream.body is None  # nothing to change: the client's bytes go through


def test_model_override_edits_only_the_top_level_model():
    upstream = OpenAIToOpenAI().translate_request(_request(RAW), BACKEND, "gpt-4o-2024-08-06")
    assert upstream.body == RAW.replace(b'"model":"gpt-4o-mini"', b'"model":"gpt-4o-2024-08-06"')


@pytest.mark.parametrize(
    ("extra", "needs_usage", "expected_options"),
    [
        # Streaming with costs and the client did not ask for usage: forced on.
        (b'"stream": true', True, {"include_usage": True}),
        (b'"stream": true, "stream_options": {"include_usage": false}', True, {"include_usage": True}),
        # Other stream options the client set are kept.
        (
            b'"stream": true, "stream_options": {"continuous_usage_stats": true}',
            True,
            {"continuous_usage_stats": True, "include_usage": True},
        ),
        # The client asked already: no edit.
        (b'"stream": true, "stream_options": {"include_usage": true}', True, None),
        # No costs configured: the usage is not needed.
        (b'"stream": true', False, None),
        # Not streaming: the usage is in the body; stream_options would be rejected by OpenAI.
        (b'"stream": false', True, None),
    ],
)
def test_stream_options_forced_only_when_streaming_with_costs(extra, needs_usage, expected_options):
    raw = _with(RAW, extra)
    client_options = orjson.loads(raw).get("stream_options")
    upstream = OpenAIToOpenAI().translate_request(_request(raw, needs_usage), BACKEND, "gpt-4o-mini")
    if expected_options is None:
        assert upstream.body is None
        return
    sent = orjson.loads(upstream.body)
    assert sent == {**orjson.loads(raw), "stream_options": expected_options}
    if client_options is not None:
        # An in-place edit: everything but the stream_options value is byte-identical.
        before, _, after = raw.partition(orjson.dumps(client_options).replace(b":", b": "))
        assert upstream.body.startswith(before)
        assert upstream.body.endswith(after)


# ---- streamed responses --------------------------------------------------------------------------------


def _chunk(payload: dict) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


_BASE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini-2024-07-18"}
USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 3,
    "total_tokens": 15,
    "prompt_tokens_details": {"cached_tokens": 8},
    "completion_tokens_details": {"reasoning_tokens": 1},
}
EXPECTED_USAGE = TokenUsage(input=12, cached_input=8, output=3, reasoning=1, total=15)

# What OpenAI streams with include_usage: every chunk carries "usage": null, then a choices-less usage chunk.
BEFORE_USAGE = (
    _chunk({**_BASE, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}], "usage": None})
    + b": keep-alive\n\n"
    + _chunk({**_BASE, "choices": [{"index": 0, "delta": {"content": "h\u00e9llo \U0001f680"}}], "usage": None})
    + _chunk({**_BASE, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None})
)
USAGE_EVENT = _chunk({**_BASE, "choices": [], "usage": USAGE})
DONE = b"data: [DONE]\n\n"
UPSTREAM = BEFORE_USAGE + USAGE_EVENT + DONE


def _streaming(client_options: bytes = b"") -> OpenAIToOpenAI:
    translator = OpenAIToOpenAI()
    raw = _with(RAW, b'"stream": true' + client_options)
    translator.translate_request(_request(raw), BACKEND, "gpt-4o-mini")
    return translator


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def _client_bytes(translator: OpenAIToOpenAI, chunks: list[bytes]) -> bytes:
    out = []
    for index, chunk in enumerate(chunks):
        replaced = translator.translate_response_body(chunk, index == len(chunks) - 1)
        out.append(chunk if replaced is None else replaced)
    return b"".join(out)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(UPSTREAM)), max_size=25))
def test_usage_chunk_the_client_did_not_ask_for_is_removed_at_any_split(cuts):
    translator = _streaming()
    assert _client_bytes(translator, _split(UPSTREAM, cuts)) == BEFORE_USAGE + DONE
    assert translator.usage == EXPECTED_USAGE
    assert translator.response_model == "gpt-4o-mini-2024-07-18"


def test_a_streams_usage_is_handed_to_the_router_once_when_its_chunk_arrives():
    """The router re-costs a stream (and writes the metadata a hang-up keeps) only when take_usage says so."""
    translator = _streaming()
    translator.translate_response_body(BEFORE_USAGE, False)
    assert translator.take_usage() is None  # nothing reported yet: nothing to cost
    translator.translate_response_body(USAGE_EVENT, False)
    assert translator.take_usage() == EXPECTED_USAGE
    assert translator.take_usage() is None  # taken: not costed again
    translator.translate_response_body(DONE, True)
    assert translator.take_usage() is None and translator.usage == EXPECTED_USAGE


def test_usage_chunk_removed_when_the_stream_ends_without_a_final_blank_line():
    translator = _streaming()
    stream = BEFORE_USAGE + USAGE_EVENT + b"data: [DONE]"
    assert _client_bytes(translator, [stream[:40], stream[40:]]) == BEFORE_USAGE + b"data: [DONE]"
    assert translator.usage == EXPECTED_USAGE


def test_usage_chunk_the_client_asked_for_is_kept():
    translator = _streaming(b', "stream_options": {"include_usage": true}')
    chunks = _split(UPSTREAM, [7, 100, 301, 302, len(UPSTREAM) - 3])
    for index, chunk in enumerate(chunks):
        assert translator.translate_response_body(chunk, index == len(chunks) - 1) is None
    assert translator.usage == EXPECTED_USAGE


def test_a_choices_less_chunk_without_usage_is_not_removed():
    # Azure OpenAI opens streams with a content-filter chunk that has no choices (and here "usage": null).
    filter_chunk = _chunk({**_BASE, "model": "", "choices": [], "prompt_filter_results": [], "usage": None})
    translator = _streaming()
    assert _client_bytes(translator, [filter_chunk + UPSTREAM]) == filter_chunk + BEFORE_USAGE + DONE
    assert translator.response_model == "gpt-4o-mini-2024-07-18"


def test_stream_without_costs_is_passed_through_and_usage_still_read_when_present():
    translator = OpenAIToOpenAI()
    translator.translate_request(_request(_with(RAW, b'"stream": true'), needs_usage=False), BACKEND, "m")
    for index, chunk in enumerate(_split(UPSTREAM, [50, 200])):
        assert translator.translate_response_body(chunk, index == 2) is None
    assert translator.usage == EXPECTED_USAGE


# ---- non-streamed responses and errors -------------------------------------------------------------------


def test_non_stream_usage_and_response_model_are_read_and_body_untouched():
    body = orjson.dumps(
        {
            "id": "chatcmpl-2",
            "object": "chat.completion",
            "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": USAGE,
        }
    )
    translator = OpenAIToOpenAI()
    translator.translate_request(_request(RAW), BACKEND, "gpt-4o")
    assert translator.translate_response_body(body[:30], False) is None
    assert translator.translate_response_body(body[30:], True) is None
    assert translator.usage == EXPECTED_USAGE
    assert translator.response_model == "gpt-4o-2024-08-06"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status", [400, 401, 429, 500, 503])
def test_non_2xx_passes_through_untouched_with_no_usage(stream, status):
    error = orjson.dumps(
        {
            "error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"},
            "usage": USAGE,  # must not be charged even if a provider puts it there
        }
    )
    translator = OpenAIToOpenAI()
    raw = _with(RAW, b'"stream": true') if stream else RAW
    translator.translate_request(_request(raw), BACKEND, "gpt-4o")
    assert translator.translate_error(status, {}, error) is None
    assert translator.take_usage() is None and translator.usage is None
    assert translator.response_model is None


@pytest.mark.parametrize("body", [b"<html>bad gateway</html>", b"null", b"[]", b"", b"\x89PNG"])
def test_a_success_body_that_is_no_json_object_is_a_502(body):
    translator = OpenAIToOpenAI()
    translator.translate_request(_request(RAW), BACKEND, "gpt-4o")
    with pytest.raises(UpstreamShapeError) as raised:
        translator.translate_response_body(body, True)
    assert raised.value.status == 502
    assert translator.usage is None
