"""POST /v1/completions (legacy text completions) → OpenAI-schema backend: a pass-through that reads usage,
plain and streamed, whatever the byte split of the stream."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenvoy.config.model import Backend, Endpoint
from tokenvoy.extproc.sse import SSEParser
from tokenvoy.extproc.translate import translator_for
from tokenvoy.extproc.translate.base import ClientAPI, ClientRequest
from tokenvoy.extproc.translate.completions_to_openai import CompletionsToOpenAI
from tokenvoy.extproc.usage import TokenUsage
from tokenvoy.testupstream import completions as fake
from tokenvoy.testupstream import openai_chat

BACKEND = Backend(
    name="openai", schema="OpenAI", schema_version=None, path_prefix="/v1", endpoint=Endpoint("api.openai.com", 443)
)
MODEL = "gpt-3.5-turbo-instruct"

# A stream as api.openai.com sends it with include_usage (recorded shape: usage null on every chunk, the
# usage on a last choices-less chunk, then [DONE]); \r\n line ends on one event, as some proxies write.
RECORDED = (
    b'data: {"id":"cmpl-A1","object":"text_completion","created":1735000000,"choices":[{"text":"\\n\\n","index":0,'
    b'"logprobs":null,"finish_reason":null}],"model":"gpt-3.5-turbo-instruct","usage":null}\n\n'
    b'data: {"id":"cmpl-A1","object":"text_completion","created":1735000000,"choices":[{"text":"Hello","index":0,'
    b'"logprobs":null,"finish_reason":null}],"model":"gpt-3.5-turbo-instruct","usage":null}\r\n\r\n'
    b'data: {"id":"cmpl-A1","object":"text_completion","created":1735000000,"choices":[{"text":" w\xc3\xb6rld",'
    b'"index":0,"logprobs":null,"finish_reason":"length"}],"model":"gpt-3.5-turbo-instruct","usage":null}\n\n'
    b'data: {"id":"cmpl-A1","object":"text_completion","created":1735000000,"choices":[],'
    b'"model":"gpt-3.5-turbo-instruct-0914","usage":{"prompt_tokens":4,"completion_tokens":3,"total_tokens":7}}\n\n'
    b"data: [DONE]\n\n"
)


def request(body: dict[str, Any], needs_usage: bool = True, capture: bool = False) -> ClientRequest:
    return ClientRequest(
        api=ClientAPI.OPENAI_COMPLETIONS,
        path="/v1/completions",
        raw=orjson.dumps(body),
        body=body,
        model=body["model"],
        stream=body.get("stream") is True,
        needs_usage=needs_usage,
        capture_output=capture,
    )


def feed(translator: CompletionsToOpenAI, raw: bytes, cuts: list[int]) -> bytes:
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    out = []
    for i, piece in enumerate(pieces):
        replaced = translator.translate_response_body(piece, i == len(pieces) - 1)
        out.append(piece if replaced is None else replaced)
    return b"".join(out)


def datas(raw: bytes) -> list[str]:
    parser = SSEParser()
    return [e.data for e in [*parser.feed(raw), *parser.flush()]]


def test_registry_and_path() -> None:
    assert translator_for(ClientAPI.OPENAI_COMPLETIONS, "OpenAI") is CompletionsToOpenAI
    upstream = CompletionsToOpenAI().translate_request(request({"model": MODEL, "prompt": "hi"}), BACKEND, MODEL)
    assert upstream.path == "/v1/completions"
    assert upstream.body is None


def test_plain_answer_usage_model_and_text_are_read() -> None:
    body = {"model": MODEL, "prompt": "say this is a test", "max_tokens": 6}
    translator = CompletionsToOpenAI()
    translator.translate_request(request(body, capture=True), BACKEND, MODEL)
    reply = fake.completion(body, completion_id="cmpl-1", created=1)
    assert translator.translate_response_body(orjson.dumps(reply.body), True) is None
    assert translator.usage == TokenUsage(input=5, output=6, total=11)
    assert translator.response_model == MODEL
    assert translator.answer.text == openai_chat.completion_text(6)


@pytest.mark.parametrize("asked", [True, False])
def test_stream_options_are_forced_only_when_needed(asked: bool) -> None:
    body: dict[str, Any] = {"model": MODEL, "prompt": "hi", "stream": True}
    if asked:
        body["stream_options"] = {"include_usage": True}
    upstream = CompletionsToOpenAI().translate_request(request(body), BACKEND, "other-model")
    sent = orjson.loads(upstream.body)
    assert sent["model"] == "other-model"
    assert sent["stream_options"] == {"include_usage": True}


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_recorded_stream_any_split_client_did_not_ask_for_usage(data: st.DataObject) -> None:
    translator = CompletionsToOpenAI()
    translator.translate_request(
        request({"model": MODEL, "prompt": "hi", "stream": True}, capture=True), BACKEND, MODEL
    )
    cuts = sorted(data.draw(st.lists(st.integers(0, len(RECORDED)), max_size=10)))
    out = datas(feed(translator, RECORDED, cuts))
    assert translator.usage == TokenUsage(input=4, output=3, total=7)
    assert translator.response_model == "gpt-3.5-turbo-instruct-0914"
    assert translator.answer.text == "\n\nHello wörld"
    assert out[-1] == "[DONE]"
    assert len(out) == 4  # the usage chunk, which the client did not ask for, is taken out
    assert "".join(orjson.loads(d)["choices"][0]["text"] for d in out[:-1]) == "\n\nHello wörld"


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_recorded_stream_any_split_client_asked_for_usage(data: st.DataObject) -> None:
    translator = CompletionsToOpenAI()
    body = {"model": MODEL, "prompt": "hi", "stream": True, "stream_options": {"include_usage": True}}
    translator.translate_request(request(body), BACKEND, MODEL)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(RECORDED)), max_size=10)))
    assert feed(translator, RECORDED, cuts) == RECORDED  # byte for byte
    assert translator.usage == TokenUsage(input=4, output=3, total=7)


def test_fake_stream_round_trip_with_several_prompts() -> None:
    client = {"model": MODEL, "prompt": ["one two", "three"], "max_tokens": 3, "stream": True}
    translator = CompletionsToOpenAI()
    sent = orjson.loads(translator.translate_request(request(client), BACKEND, MODEL).body)
    reply = fake.completion(sent, completion_id="cmpl-2", created=1)
    raw = b"".join(openai_chat.sse_frame(c) for c in reply.chunks) + openai_chat.SSE_DONE
    out = datas(feed(translator, raw, [7, 100, 101]))
    assert translator.usage == TokenUsage(input=3, output=6, total=9)
    texts: dict[int, str] = {}
    for chunk in (orjson.loads(d) for d in out[:-1]):
        for choice in chunk["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
    assert texts == {0: openai_chat.completion_text(3), 1: openai_chat.completion_text(3)}
