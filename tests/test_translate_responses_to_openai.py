"""Responses API client → OpenAI and Azure OpenAI backends: a pass-through that reads usage (bodies and
streams, split anywhere), rewrites only the model, and keeps ``store``/``previous_response_id``."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenvoy.config.model import Backend, Endpoint
from tokenvoy.extproc.errors import UpstreamShapeError
from tokenvoy.extproc.translate import translator_for
from tokenvoy.extproc.translate.base import ClientAPI, ClientRequest
from tokenvoy.extproc.translate.responses_common import responses_usage
from tokenvoy.extproc.translate.responses_to_openai import InputTokensToOpenAI, ResponsesToAzure, ResponsesToOpenAI
from tokenvoy.extproc.usage import TokenUsage
from tokenvoy.testupstream import openai_responses as fake

OPENAI = Backend("openai", "OpenAI", None, "/v1", Endpoint("api.openai.com", 443, tls=True))
AZURE = Backend("azure", "AzureOpenAI", "2024-10-21", "", Endpoint("res.openai.azure.com", 443, tls=True))
# OpenAI's documented usage example with cached and reasoning tokens.
USAGE = {
    "input_tokens": 36,
    "input_tokens_details": {"cached_tokens": 12},
    "output_tokens": 87,
    "output_tokens_details": {"reasoning_tokens": 40},
    "total_tokens": 123,
}


def request(body: dict[str, Any], capture: bool = False) -> ClientRequest:
    return ClientRequest(
        api=ClientAPI.OPENAI_RESPONSES,
        path="/v1/responses",
        raw=orjson.dumps(body),
        body=body,
        model=body["model"],
        stream=body.get("stream") is True,
        needs_usage=True,
        capture_output=capture,
    )


def test_registry_maps_responses_to_the_pass_through_translators() -> None:
    assert translator_for(ClientAPI.OPENAI_RESPONSES, "OpenAI") is ResponsesToOpenAI
    assert translator_for(ClientAPI.OPENAI_RESPONSES, "AzureOpenAI") is ResponsesToAzure


def test_usage_is_read_with_cached_and_reasoning_tokens() -> None:
    assert responses_usage(USAGE) == TokenUsage(input=36, cached_input=12, output=87, reasoning=40, total=123)
    assert responses_usage({"input_tokens": 3, "output_tokens": 4}).total == 7


def test_the_request_goes_through_unchanged_to_openai() -> None:
    body = {"model": "gpt-4o", "input": "hi", "store": True, "previous_response_id": "resp_1"}
    upstream = ResponsesToOpenAI().translate_request(request(body), OPENAI, "gpt-4o")
    assert (upstream.path, upstream.body) == ("/v1/responses", None)


def test_azure_gets_the_v1_path_and_the_override_in_the_body() -> None:
    body = {"model": "alias", "input": "hi", "store": False, "previous_response_id": "resp_9"}
    upstream = ResponsesToAzure().translate_request(request(body), AZURE, "gpt-4o-prod")
    assert upstream.path == "/openai/v1/responses"
    assert orjson.loads(upstream.body) == {**body, "model": "gpt-4o-prod"}


def test_a_buffered_answer_gives_usage_model_and_text() -> None:
    translator = ResponsesToOpenAI()
    translator.translate_request(request({"model": "gpt-4o", "input": "hi"}, capture=True), OPENAI, "gpt-4o")
    reply = fake.create_response({"model": "gpt-4o-2024-08-06", "input": "hi"}, response_id="resp_1", created=1)
    raw = orjson.dumps({**reply.body, "usage": USAGE})
    assert translator.translate_response_body(raw, True) is None  # unchanged for the client
    assert translator.usage == responses_usage(USAGE)
    assert translator.response_model == "gpt-4o-2024-08-06"
    assert translator.answer.text == reply.body["output"][0]["content"][0]["text"]


def test_errors_are_passed_through_without_usage() -> None:
    translator = ResponsesToOpenAI()
    translator.translate_request(request({"model": "gpt-4o", "input": "hi"}), OPENAI, "gpt-4o")
    error = orjson.dumps({"error": {"message": "Previous response with id 'x' not found.", "type": "x"}})
    assert translator.translate_error(400, {}, error) is None
    assert translator.take_usage() is None and translator.usage is None


def _stream(body: dict[str, Any]) -> bytes:
    reply = fake.create_response(body, response_id="resp_7", created=1)
    return b"".join(fake.sse_frame(event) for event in reply.events)


STREAM = _stream({"model": "gpt-4o", "input": "say something", "stream": True})


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(STREAM) - 1), max_size=12))
def test_a_stream_split_anywhere_gives_the_usage_of_response_completed(cuts: list[int]) -> None:
    translator = ResponsesToOpenAI()
    translator.translate_request(request({"model": "gpt-4o", "input": "x", "stream": True}, True), OPENAI, "gpt-4o")
    bounds = [0, *sorted(set(cuts)), len(STREAM)]
    pieces = [STREAM[a:b] for a, b in itertools.pairwise(bounds)]
    for index, piece in enumerate(pieces):
        assert translator.translate_response_body(piece, index == len(pieces) - 1) is None
    assert translator.usage == TokenUsage(input=2, output=16, total=18)
    assert translator.response_model == "gpt-4o"
    assert translator.answer.text == " ".join(fake.openai_chat.WORDS[:16])


def test_an_incomplete_stream_is_metered_from_response_incomplete() -> None:
    raw = _stream({"model": "gpt-4o", "input": "a b c", "stream": True, "max_output_tokens": 16})
    assert b"event: response.incomplete" in raw
    translator = ResponsesToOpenAI()
    translator.translate_request(request({"model": "gpt-4o", "input": "x", "stream": True}), OPENAI, "gpt-4o")
    translator.translate_response_body(raw, True)
    assert translator.usage == TokenUsage(input=3, output=16, total=19)


def test_input_tokens_pass_through_and_are_never_charged() -> None:
    assert translator_for(ClientAPI.OPENAI_RESPONSES_INPUT_TOKENS, "OpenAI") is InputTokensToOpenAI
    assert translator_for(ClientAPI.OPENAI_RESPONSES_INPUT_TOKENS, "Anthropic") is None
    translator = InputTokensToOpenAI()
    upstream = translator.translate_request(request({"model": "alias", "input": "hi"}), OPENAI, "gpt-4o")
    assert upstream.path == "/v1/responses/input_tokens"
    assert orjson.loads(upstream.body)["model"] == "gpt-4o"
    assert translator.translate_response_body(b'{"object":"response.input_tokens","input_tokens":3}', True) is None
    assert translator.usage == TokenUsage()


# ---- found by tests/test_translate_fuzz.py: junk and cut streams passed through as a success ------------


@pytest.mark.parametrize("answer", [b"", b"null", b"<html>502</html>", b'{"id": "resp_1", "output": true}'])
def test_a_2xx_that_is_no_response_is_a_502(answer: bytes) -> None:
    translator = ResponsesToOpenAI()
    translator.translate_request(request({"model": "gpt-4o", "input": "x"}, True), OPENAI, "gpt-4o")
    with pytest.raises(UpstreamShapeError) as raised:
        translator.translate_response_body(answer, True)
    assert raised.value.status == 502


def test_message_content_that_is_no_array_is_read_as_no_text() -> None:
    translator = ResponsesToOpenAI()
    translator.translate_request(request({"model": "gpt-4o", "input": "x"}, True), OPENAI, "gpt-4o")
    answer = {"object": "response", "model": "gpt-4o", "output": [{"type": "message", "content": 7}]}
    assert translator.translate_response_body(orjson.dumps(answer), True) is None
    assert translator.answer.text == ""


def test_a_stream_cut_before_its_terminal_event_ends_with_an_error() -> None:
    cut = STREAM[: STREAM.index(b"event: response.completed")]
    translator = ResponsesToOpenAI()
    translator.translate_request(request({"model": "gpt-4o", "input": "x", "stream": True}), OPENAI, "gpt-4o")
    with pytest.raises(UpstreamShapeError) as raised:
        translator.translate_response_body(cut, True)
    assert "response.completed" in raised.value.message
    assert raised.value.emitted == cut  # what came still reaches the client, then the error event


def test_a_stream_ended_by_an_error_event_is_whole() -> None:
    error = b'event: error\ndata: {"type":"error","code":"server_error","message":"boom","sequence_number":1}\n\n'
    translator = ResponsesToOpenAI()
    translator.translate_request(request({"model": "gpt-4o", "input": "x", "stream": True}), OPENAI, "gpt-4o")
    assert translator.translate_response_body(error, True) is None


@pytest.mark.parametrize("answer", [b"[]", b'{"object": "response.input_tokens"}', b'{"input_tokens": "3"}'])
def test_an_input_token_count_without_its_count_is_a_502(answer: bytes) -> None:
    translator = InputTokensToOpenAI()
    translator.translate_request(request({"model": "gpt-4o", "input": "hi"}), OPENAI, "gpt-4o")
    with pytest.raises(UpstreamShapeError):
        translator.translate_response_body(answer, True)


def test_an_event_whose_type_is_no_string_is_not_an_end() -> None:
    odd = b'data: {"type": ["response.completed"], "response": {"model": "gpt-4o"}}\n\n'
    translator = ResponsesToOpenAI()
    translator.translate_request(request({"model": "gpt-4o", "input": "x", "stream": True}), OPENAI, "gpt-4o")
    with pytest.raises(UpstreamShapeError):
        translator.translate_response_body(odd, True)
