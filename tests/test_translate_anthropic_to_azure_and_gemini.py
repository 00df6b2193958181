"""Anthropic Messages client → Azure OpenAI and → Gemini on Vertex AI: the last two cells of the chat matrix.

Requests follow Anthropic's documented Messages examples (system, tool use and results, streaming); what
the gateway sends is checked by the fake Azure and Vertex providers (which refuse what the real APIs
refuse) and their answers, plain and streamed, are read back with the official ``anthropic`` SDK's types
and stream accumulator.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenvoy.config.model import Backend, Endpoint
from tokenvoy.extproc.sse import SSEParser
from tokenvoy.extproc.translate import translator_for
from tokenvoy.extproc.translate.anthropic_to_azure import AnthropicToAzure
from tokenvoy.extproc.translate.base import ClientAPI, ClientRequest
from tokenvoy.extproc.translate.openai_to_gemini import SIGNATURE_SEPARATOR
from tokenvoy.testupstream import azure, gemini, openai_chat

JSON_HEADERS = {"content-type": "application/json"}
AZURE = Backend(
    name="azure",
    schema="AzureOpenAI",
    schema_version="2024-10-21",
    path_prefix="",
    endpoint=Endpoint("res.openai.azure.com", 443, tls=True),
)
VERTEX = Backend(
    name="vertex",
    schema="GCPVertexAI",
    schema_version=None,
    path_prefix="/v1/projects/my-project/locations/us-central1",
    endpoint=Endpoint("us-central1-aiplatform.googleapis.com", 443, tls=True),
)
WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string", "description": "The city and state"}},
        "required": ["location"],
    },
}
SENTENCE = " ".join(openai_chat.WORDS)


def _request(body: dict[str, Any], model: str) -> ClientRequest:
    body = {"model": model, "max_tokens": 1024, **body}
    return ClientRequest(
        api=ClientAPI.ANTHROPIC_MESSAGES,
        path="/anthropic/v1/messages",
        raw=orjson.dumps(body),
        body=body,
        model=model,
        stream=body.get("stream") is True,
        needs_usage=True,
        headers={"anthropic-version": "2023-06-01"},
    )


def _events(data: bytes) -> list[dict[str, Any]]:
    parser = SSEParser()
    events = parser.feed(data) + parser.flush()
    return [orjson.loads(event.data) for event in events if event.data]


def _accumulate(events: list[dict[str, Any]]) -> Message:
    from anthropic.types import RawMessageStreamEvent
    from pydantic import TypeAdapter

    adapter = TypeAdapter(RawMessageStreamEvent)
    message = None
    json_bufs: dict[int, bytes] = {}
    for event in events:
        if event["type"] in ("ping", "error"):
            continue
        message = accumulate_event(event=adapter.validate_python(event), current_snapshot=message, json_bufs=json_bufs)
    assert message is not None
    return message


# ---- Azure ------------------------------------------------------------------------------------------------


def _azure_answer(sent: bytes, deployment: str, stream: bool) -> bytes:
    reply = azure.chat_completion(orjson.loads(sent), deployment, completion_id="chatcmpl-az1", created=1_700_000_000)
    assert reply.status == 200, reply.body
    if not stream:
        return orjson.dumps(reply.body)
    return b"".join(openai_chat.sse_frame(chunk) for chunk in reply.chunks or ()) + b"data: [DONE]\n\n"


def test_registered_for_azure_and_vertex() -> None:
    assert translator_for(ClientAPI.ANTHROPIC_MESSAGES, "AzureOpenAI") is AnthropicToAzure
    assert translator_for(ClientAPI.ANTHROPIC_MESSAGES, "GCPVertexAI") is not None


def test_azure_gets_its_deployment_path_and_no_anthropic_headers() -> None:
    translator = AnthropicToAzure()
    upstream = translator.translate_request(
        _request({"messages": [{"role": "user", "content": "Hello"}]}, "gpt-4o"), AZURE, "my-deployment"
    )
    assert upstream.path == "/openai/deployments/my-deployment/chat/completions?api-version=2024-10-21"
    assert {"anthropic-version", "anthropic-beta"} <= set(upstream.remove_headers)
    sent = orjson.loads(upstream.body)
    assert sent["messages"] == [{"role": "user", "content": "Hello"}]
    assert sent["max_completion_tokens"] == 1024


def test_azure_answer_is_an_anthropic_message_without_the_filter_results() -> None:
    translator = AnthropicToAzure()
    body = {"system": "Be brief.", "max_tokens": 5, "messages": [{"role": "user", "content": "Hello"}]}
    upstream = translator.translate_request(_request(body, "gpt-4o"), AZURE, "gpt-4o")
    answer = translator.translate_response_body(_azure_answer(upstream.body, "gpt-4o", False), True)
    message = Message.model_validate(orjson.loads(answer))
    assert message.content[0].text == " ".join(openai_chat.WORDS[:5])  # the fake fills the limit it is given
    assert message.stop_reason == "max_tokens"
    assert message.model == "gpt-4o"
    assert "prompt_filter_results" not in orjson.loads(answer)
    assert translator.usage is not None and translator.usage.output == 5
    assert message.usage.output_tokens == translator.usage.output


def test_azure_stream_with_its_choices_less_opening_chunk_and_a_tool_call() -> None:
    translator = AnthropicToAzure()
    body = {"stream": True, "tools": [WEATHER], "messages": [{"role": "user", "content": "Weather in Paris?"}]}
    upstream = translator.translate_request(_request(body, "gpt-4o"), AZURE, "gpt-4o")
    assert orjson.loads(upstream.body)["stream_options"] == {"include_usage": True}
    stream = _azure_answer(upstream.body, "gpt-4o", True)
    assert b'"choices":[]' in stream.split(b"\n\n")[0]  # Azure's prompt-filter chunk comes first
    events = _events(translator.translate_response_body(stream, True))
    message = _accumulate(events)
    assert message.stop_reason == "tool_use"
    (call,) = message.content
    assert call.type == "tool_use" and call.name == "get_weather" and "location" in call.input
    assert events[-1]["type"] == "message_stop"
    assert translator.usage is not None and translator.usage.total > 0


def test_azure_error_is_in_anthropics_shape_with_its_status() -> None:
    translator = AnthropicToAzure()
    translator.translate_request(_request({"messages": [{"role": "user", "content": "Hi"}]}, "gpt-4o"), AZURE, "nope")
    azure_error = azure.error_body("DeploymentNotFound", "The API deployment for this resource does not exist.")
    body = orjson.loads(translator.translate_error(404, JSON_HEADERS, orjson.dumps(azure_error)))
    assert body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "The API deployment for this resource does not exist."},
    }


# ---- Gemini on Vertex AI ----------------------------------------------------------------------------------


def _gemini_translator():
    factory = translator_for(ClientAPI.ANTHROPIC_MESSAGES, "GCPVertexAI")
    assert factory is not None
    return factory()


def _vertex_answer(path: str, sent: bytes) -> bytes:
    """What the fake Vertex AI answers (it refuses what Vertex refuses: a 400 fails the test)."""
    model, _, method = path.rsplit("/models/", 1)[1].partition(":")
    stream = method.startswith("streamGenerateContent")
    reply = gemini.generate_content(sent, model, stream=stream, response_id="resp-1")
    assert reply.status == 200, reply.body
    if not stream:
        return orjson.dumps(reply.body)
    return b"".join(gemini.sse_frame(chunk) for chunk in reply.chunks or ())


def test_gemini_request_path_and_body() -> None:
    translator = _gemini_translator()
    body = {
        "system": [{"type": "text", "text": "You are terse."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello, Gemini"}]}],
        "stop_sequences": ["END"],
        "temperature": 0.2,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
    }
    upstream = translator.translate_request(_request(body, "gemini-2.5-flash"), VERTEX, "gemini-2.5-flash")
    assert upstream.path == (
        "/v1/projects/my-project/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent"
    )
    assert "anthropic-version" in upstream.remove_headers
    sent = orjson.loads(upstream.body)
    assert sent["systemInstruction"] == {"parts": [{"text": "You are terse."}]}
    assert sent["contents"] == [{"role": "user", "parts": [{"text": "Hello, Gemini"}]}]
    config = sent["generationConfig"]
    assert config["maxOutputTokens"] == 1024 and config["stopSequences"] == ["END"] and config["temperature"] == 0.2
    assert config["thinkingConfig"] == {"thinkingBudget": 1024, "includeThoughts": True}  # low
    assert "model" not in sent  # Gemini takes the model in the path


def test_gemini_answer_with_thoughts_is_an_anthropic_message_with_usage() -> None:
    translator = _gemini_translator()
    body = {"messages": [{"role": "user", "content": "Hello"}], "thinking": {"type": "enabled", "budget_tokens": 2048}}
    upstream = translator.translate_request(_request(body, "gemini-2.5-flash"), VERTEX, "gemini-2.5-flash")
    raw = _vertex_answer(upstream.path, upstream.body)
    assert translator.translate_response_headers({"content-type": "application/json"}) is not None
    message = Message.model_validate(orjson.loads(translator.translate_response_body(raw, True)))
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == gemini.THINKING_TEXT
    assert message.content[1].text == SENTENCE
    assert message.model == "gemini-2.5-flash"
    usage = orjson.loads(raw)["usageMetadata"]
    assert translator.usage is not None
    assert translator.usage.input == usage["promptTokenCount"]
    assert translator.usage.output == usage["candidatesTokenCount"] + usage["thoughtsTokenCount"]
    assert message.usage.output_tokens == translator.usage.output
    assert translator.response_model == "gemini-2.5-flash"


def _tool_loop_first_turn(stream: bool) -> tuple[Message, dict[str, Any]]:
    translator = _gemini_translator()
    body = {"tools": [WEATHER], "messages": [{"role": "user", "content": "Weather in Paris?"}], "stream": stream}
    upstream = translator.translate_request(_request(body, "gemini-2.5-flash"), VERTEX, "gemini-2.5-flash")
    assert upstream.path.endswith(":streamGenerateContent?alt=sse" if stream else ":generateContent")
    raw = _vertex_answer(upstream.path, upstream.body)
    out = translator.translate_response_body(raw, True)
    message = _accumulate(_events(out)) if stream else Message.model_validate(orjson.loads(out))
    return message, body


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_gemini_tool_call_round_trip_keeps_the_thought_signature(stream: bool) -> None:
    message, body = _tool_loop_first_turn(stream)
    assert message.stop_reason == "tool_use"
    (call,) = message.content
    assert call.type == "tool_use" and call.name == "get_weather" and set(call.input) == {"location"}
    assert call.id.endswith(SIGNATURE_SEPARATOR + gemini.THOUGHT_SIGNATURE)

    # The client runs the tool and sends the history back, as Claude Code and the SDKs do.
    translator = _gemini_translator()
    history = {
        **body,
        "stream": False,
        "messages": [
            *body["messages"],
            {"role": "assistant", "content": [call.model_dump(exclude_none=True)]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18 degrees and sunny"}],
            },
        ],
    }
    upstream = translator.translate_request(_request(history, "gemini-2.5-flash"), VERTEX, "gemini-2.5-flash")
    sent = orjson.loads(upstream.body)
    model_turn, result_turn = sent["contents"][1:]
    assert model_turn["parts"] == [
        {
            "functionCall": {"name": "get_weather", "args": call.input},
            "thoughtSignature": gemini.THOUGHT_SIGNATURE,
        }
    ]
    assert result_turn == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"output": "18 degrees and sunny"}}}],
    }
    answer = Message.model_validate(
        orjson.loads(translator.translate_response_body(_vertex_answer(upstream.path, upstream.body), True))
    )
    assert answer.stop_reason == "end_turn" and answer.content[0].text == SENTENCE


def test_gemini_stream_events_and_usage() -> None:
    translator = _gemini_translator()
    body = {"stream": True, "messages": [{"role": "user", "content": "Hello"}]}
    upstream = translator.translate_request(_request(body, "gemini-2.5-flash"), VERTEX, "gemini-2.5-flash")
    assert translator.translate_response_headers({"content-type": "text/event-stream"}) is None
    raw = _vertex_answer(upstream.path, upstream.body)
    events = _events(translator.translate_response_body(raw, True))
    kinds = [event["type"] for event in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("content_block_delta") == len(openai_chat.WORDS)
    message = _accumulate(events)
    assert message.content[0].text == SENTENCE
    assert events[-2]["usage"]["output_tokens"] == len(openai_chat.WORDS) == translator.usage.output


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12))
def test_gemini_stream_translation_is_the_same_for_any_split(cuts: list[int]) -> None:
    body = {"stream": True, "messages": [{"role": "user", "content": "Hello"}]}
    whole_translator = _gemini_translator()
    upstream = whole_translator.translate_request(_request(body, "gemini-2.5-flash"), VERTEX, "gemini-2.5-flash")
    raw = _vertex_answer(upstream.path, upstream.body)
    whole = _events(whole_translator.translate_response_body(raw, True))

    split_translator = _gemini_translator()
    split_translator.translate_request(_request(body, "gemini-2.5-flash"), VERTEX, "gemini-2.5-flash")
    points = sorted({min(cut, len(raw)) for cut in cuts})
    pieces = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    out = b"".join(
        split_translator.translate_response_body(piece, index == len(pieces) - 1) or b""
        for index, piece in enumerate(pieces)
    )
    assert _events(out) == whole


def test_gemini_error_is_in_anthropics_shape_with_its_status() -> None:
    translator = _gemini_translator()
    translator.translate_request(
        _request({"messages": [{"role": "user", "content": "Hi"}]}, "gemini-9"), VERTEX, "gemini-9"
    )
    error = gemini.error_body(404, "Publisher Model `gemini-9` was not found or your project does not have access.")
    out = orjson.loads(translator.translate_error(404, JSON_HEADERS, orjson.dumps(error)))
    assert out == {
        "type": "error",
        "error": {
            "type": "not_found_error",
            "message": "Publisher Model `gemini-9` was not found or your project does not have access.",
        },
    }


def test_gemini_error_mid_stream_is_an_anthropic_error_event() -> None:
    translator = _gemini_translator()
    body = {"stream": True, "messages": [{"role": "user", "content": "Hello"}]}
    translator.translate_request(_request(body, "gemini-2.5-flash"), VERTEX, "gemini-2.5-flash")
    first = gemini.sse_frame(
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "The"}]}}], "responseId": "r"}
    )
    failure = gemini.sse_frame({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}})
    events = _events(translator.translate_response_body(first + failure, True))
    assert events[-1] == {"type": "error", "error": {"type": "api_error", "message": "The model is overloaded."}}
    assert "message_stop" not in [event["type"] for event in events]


def test_what_gemini_cannot_take_is_422_naming_the_field() -> None:
    translator = _gemini_translator()
    body = {
        "tools": [{"type": "web_search_20250305", "name": "web_search"}],
        "messages": [{"role": "user", "content": "Search"}],
    }
    with pytest.raises(Exception) as raised:
        translator.translate_request(_request(body, "gemini-2.5-flash"), VERTEX, "gemini-2.5-flash")
    assert getattr(raised.value, "status", None) == 422
    assert "tools[0]" in str(raised.value)


# ---- what Claude Code reads before the first token: the input estimate and keep-alives ----------------------

LONG_PROMPT = "Summarise the following log. " + "GET /v1/models 200 0.4ms\n" * 200


@pytest.mark.parametrize("backend", ["azure", "vertex"])
def test_message_start_carries_the_gateways_input_estimate(backend: str) -> None:
    """Claude Code sizes its context from message_start; Azure and Gemini tell their usage only at the end."""
    from tokenvoy.extproc.estimate import prompt_tokens

    body = {"stream": True, "messages": [{"role": "user", "content": LONG_PROMPT}]}
    if backend == "azure":
        translator, model = AnthropicToAzure(), "gpt-4o"
        upstream = translator.translate_request(_request(body, model), AZURE, model)
        raw = _azure_answer(upstream.body, model, True)
    else:
        translator, model = _gemini_translator(), "gemini-2.5-flash"
        upstream = translator.translate_request(_request(body, model), VERTEX, model)
        raw = _vertex_answer(upstream.path, upstream.body)
    events = _events(translator.translate_response_body(raw, True))
    start = events[0]
    assert start["type"] == "message_start"
    expected = prompt_tokens(_request(body, model).body)
    assert start["message"]["usage"]["input_tokens"] == expected > len(LONG_PROMPT) // 8


def test_gemini_chunks_with_nothing_to_show_become_anthropic_pings() -> None:
    """Gemini has no keep-alive; a chunk that carries nothing readable still reaches Claude Code, as a ping."""
    translator = _gemini_translator()
    body = {"stream": True, "messages": [{"role": "user", "content": "Hello"}]}
    translator.translate_request(_request(body, "gemini-2.5-flash"), VERTEX, "gemini-2.5-flash")
    usage = {"promptTokenCount": 3, "totalTokenCount": 3}
    nothing = gemini.sse_frame({"candidates": [{"content": {"role": "model", "parts": []}}], "usageMetadata": usage})
    events = _events(translator.translate_response_body(nothing * 3, False))
    # the first chunk opens the message (Gemini's role), the next two carry nothing else
    assert [event["type"] for event in events] == ["message_start", "ping", "ping"]
    assert events[0]["message"]["usage"]["input_tokens"] > 0  # the estimate, before Gemini's usage is known


def test_azure_keepalive_comments_become_anthropic_pings() -> None:
    translator = AnthropicToAzure()
    body = {"stream": True, "messages": [{"role": "user", "content": "Hello"}]}
    translator.translate_request(_request(body, "gpt-4o"), AZURE, "gpt-4o")
    events = _events(translator.translate_response_body(b": keep-alive\n\n", False))
    assert [event["type"] for event in events] == ["message_start", "ping"]
