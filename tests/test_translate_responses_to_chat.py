"""Responses API ⇄ Chat Completions (responses_to_chat.py), from OpenAI's documented examples, and the
composition with a backend's chat translator (responses_via_chat.py), answers and streams split anywhere."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenvoy.config.model import Backend, Endpoint
from tokenvoy.extproc.errors import GatewayError
from tokenvoy.extproc.translate import translator_for, translator_for_backend
from tokenvoy.extproc.translate.base import ClientAPI, ClientRequest
from tokenvoy.extproc.translate.responses_to_chat import ChatStreamToResponses, chat_request, response_from_chat
from tokenvoy.extproc.translate.responses_to_openai import ResponsesToOpenAI
from tokenvoy.extproc.translate.responses_via_chat import ResponsesViaChat
from tokenvoy.extproc.usage import TokenUsage
from tokenvoy.testupstream import anthropic_messages, openai_chat

TARGET = "backend 'b'"
# OpenAI's function-calling guide example tool.
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get current temperature for a given location.",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string", "description": "City and country e.g. Bogotá, Colombia"}},
        "required": ["location"],
        "additionalProperties": False,
    },
    "strict": True,
}


def chat(body: dict[str, Any]) -> dict[str, Any]:
    return chat_request({"model": "gpt-4.1", **body}, TARGET)


# ---- requests -------------------------------------------------------------------------------------------


def test_a_string_input_is_one_user_message_after_the_instructions() -> None:
    body = chat({"instructions": "Talk like a pirate.", "input": "Are semicolons optional in JavaScript?"})
    assert body == {
        "model": "gpt-4.1",
        "messages": [
            {"role": "system", "content": "Talk like a pirate."},
            {"role": "user", "content": "Are semicolons optional in JavaScript?"},
        ],
    }


def test_text_and_image_parts() -> None:
    url = "https://upload.wikimedia.org/wikipedia/commons/thumb/d/dd/Gfp-wisconsin-madison-the-nature-boardwalk.jpg"
    item = {
        "role": "user",
        "content": [
            {"type": "input_text", "text": "what is in this image?"},
            {"type": "input_image", "image_url": url, "detail": "low"},
            {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"},
        ],
    }
    assert chat({"input": [item]})["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is in this image?"},
                {"type": "image_url", "image_url": {"url": url, "detail": "low"}},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}},
            ],
        }
    ]


def test_a_function_call_round_trip_becomes_tool_calls_and_a_tool_message() -> None:
    """The guide's second request: the model's function_call item and its function_call_output appended."""
    call = {
        "type": "function_call",
        "id": "fc_12345xyz",
        "call_id": "call_12345xyz",
        "name": "get_weather",
        "arguments": '{"location":"Paris, France"}',
    }
    second = {**call, "id": "fc_2", "call_id": "call_2", "arguments": '{"location":"Bogotá, Colombia"}'}
    body = chat(
        {
            "input": [
                {"role": "user", "content": "What's the weather like in Paris and Bogotá today?"},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                call,
                second,
                {"type": "function_call_output", "call_id": "call_12345xyz", "output": "15°C"},
                {
                    "type": "function_call_output",
                    "call_id": "call_2",
                    "output": [{"type": "input_text", "text": "20°C"}],
                },
            ],
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "parallel_tool_calls": True,
        }
    )
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_12345xyz",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": call["arguments"]},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": second["arguments"]},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_12345xyz", "content": "15°C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "20°C"},
    ]
    function = {key: WEATHER[key] for key in ("name", "description", "parameters", "strict")}
    assert body["tools"] == [{"type": "function", "function": function}]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is True


def test_an_assistant_message_and_its_calls_are_one_chat_message() -> None:
    body = chat(
        {
            "input": [
                {"role": "user", "content": "hi"},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me check."}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": ""},
                {"type": "function_call_output", "call_id": "c1", "output": "ok"},
            ]
        }
    )
    assert body["messages"][1] == {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }


def test_settings_map_to_their_chat_names() -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "date": {"type": "string"}},
        "required": ["name", "date"],
        "additionalProperties": False,
    }
    body = chat(
        {
            "input": "Alice and Bob are going to a science fair on Friday.",
            "reasoning": {"effort": "medium", "summary": "auto"},
            "max_output_tokens": 500,
            "temperature": 0.2,
            "top_p": 0.9,
            "user": "u1",
            "text": {"format": {"type": "json_schema", "name": "calendar_event", "schema": schema, "strict": True}},
            "store": True,
            "include": ["reasoning.encrypted_content"],
            "metadata": {"k": "v"},
            "truncation": "auto",
            "stream": True,
        }
    )
    assert body["reasoning_effort"] == "medium"
    assert body["max_completion_tokens"] == 500
    assert (body["temperature"], body["top_p"], body["user"]) == (0.2, 0.9, "u1")
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "calendar_event", "schema": schema, "strict": True},
    }
    assert body["stream_options"] == {"include_usage": True}
    assert not {"store", "include", "metadata", "truncation", "reasoning", "text"} & set(body)


@pytest.mark.parametrize("key", ["previous_response_id", "conversation"])
def test_server_side_state_is_a_400_not_a_silent_loss_of_history(key: str) -> None:
    with pytest.raises(GatewayError) as refused:
        chat({"input": "and then?", key: "resp_68af"})
    assert refused.value.status == 400
    assert f"`{key}` cannot be resolved by backend 'b'" in refused.value.message


def test_built_in_tools_are_a_422_naming_every_one() -> None:
    tools = [WEATHER, {"type": "web_search"}, {"type": "namespace", "name": "multi_agent_v1", "tools": []}]
    with pytest.raises(GatewayError) as refused:
        chat({"input": "x", "tools": tools})
    assert refused.value.status == 422
    assert refused.value.message.startswith(
        "tools[1] ('web_search'), tools[2] ('namespace' 'multi_agent_v1') cannot be sent to backend 'b'"
    )


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, 422, "input[0]"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, 400, "input[0]"),
        ({"input": [{"role": "tool", "content": "x"}]}, 400, "input[0].role"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]}, 422, "input[0]"),
        ({"input": "x", "tool_choice": {"type": "web_search"}}, 422, "tool_choice"),
        ({"input": "x", "background": True}, 422, "background"),
        ({"input": []}, 400, "input"),
        # an item `type` that is not a string (found by tests/test_translate_fuzz.py: it was a TypeError, a 500)
        ({"input": [{"type": {"object": []}, "role": "user", "content": "x"}]}, 400, "input[0].type"),
    ],
)
def test_what_cannot_be_translated_is_refused_naming_the_field(body: dict[str, Any], status: int, field: str) -> None:
    with pytest.raises(GatewayError) as refused:
        chat(body)
    assert refused.value.status == status
    assert f"`{field}" in refused.value.message or refused.value.message.startswith(field)


# ---- answers --------------------------------------------------------------------------------------------


def test_a_completion_becomes_a_response() -> None:
    completion = {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1741570283,
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "The image shows a wooden boardwalk.",
                    "reasoning_content": "Looking at it.",
                    "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
    }
    request = {"model": "gpt-4o", "input": "x", "instructions": "be brief", "tools": [WEATHER]}
    usage = TokenUsage(input=1117, cached_input=1000, output=46, reasoning=10, total=1163)
    response = response_from_chat(completion, request, "gpt-4o", usage)
    assert response["id"] == "resp_chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG"
    assert (response["object"], response["status"], response["model"]) == ("response", "completed", "gpt-4o-2024-08-06")
    assert (response["created_at"], response["instructions"], response["tools"]) == (1741570283, "be brief", [WEATHER])
    assert [item["type"] for item in response["output"]] == ["reasoning", "message", "function_call"]
    assert response["output"][0]["summary"] == [{"type": "summary_text", "text": "Looking at it."}]
    assert response["output"][1]["content"] == [
        {"type": "output_text", "text": "The image shows a wooden boardwalk.", "annotations": []}
    ]
    call = response["output"][2]
    assert (call["call_id"], call["name"], call["arguments"], call["status"]) == ("call_1", "f", '{"a":1}', "completed")
    assert response["usage"] == {
        "input_tokens": 1117,
        "input_tokens_details": {"cached_tokens": 1000},
        "output_tokens": 46,
        "output_tokens_details": {"reasoning_tokens": 10},
        "total_tokens": 1163,
    }


def test_a_length_finish_is_an_incomplete_response() -> None:
    completion = {"id": "c", "choices": [{"message": {"content": "partial"}, "finish_reason": "length"}]}
    response = response_from_chat(completion, {"model": "m"}, "m", None)
    assert (response["status"], response["incomplete_details"]) == ("incomplete", {"reason": "max_output_tokens"})


# ---- streams --------------------------------------------------------------------------------------------


def _frames(chunks: list[dict[str, Any]]) -> bytes:
    return b"".join(openai_chat.sse_frame(chunk) for chunk in chunks) + openai_chat.SSE_DONE


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-9",
        "model": "m-1",
        "created": 7,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


MIXED = _frames(
    [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"reasoning_content": "Think"}),
        _chunk({"reasoning_content": "ing."}),
        _chunk({"content": "Héllo"}),
        _chunk({"content": " wörld"}),
        _chunk({"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "f", "arguments": '{"x"'}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}),
        _chunk({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "g", "arguments": "{}"}}]}),
        _chunk({}, "tool_calls"),
        {"id": "chatcmpl-9", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}},
    ]
)
USAGE = TokenUsage(input=3, output=9, total=12)


def _events(raw: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: ")]


def _translate(raw: bytes, cuts: list[int]) -> bytes:
    stream = ChatStreamToResponses({"model": "m", "input": "x"}, "m", 0)
    bounds = [0, *sorted(set(cuts)), len(raw)]
    pieces = [raw[a:b] for a, b in itertools.pairwise(bounds)]
    return b"".join(stream.feed(piece, index == len(pieces) - 1, USAGE) for index, piece in enumerate(pieces))


WHOLE = _translate(MIXED, [])


def test_a_stream_becomes_the_responses_event_sequence() -> None:
    events = _events(WHOLE)
    assert [event["type"] for event in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    final = events[-1]["response"]
    assert (final["id"], final["model"], final["status"]) == ("resp_chatcmpl-9", "m-1", "completed")
    assert [item["type"] for item in final["output"]] == ["reasoning", "message", "function_call", "function_call"]
    assert final["output"][1]["content"][0]["text"] == "Héllo wörld"
    assert [(c["call_id"], c["arguments"]) for c in final["output"][2:]] == [("call_a", '{"x":1}'), ("call_b", "{}")]
    assert final["usage"]["total_tokens"] == 12
    output_indexes = [event["output_index"] for event in events if event["type"] == "response.output_item.added"]
    assert output_indexes == [0, 1, 2, 3]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(MIXED) - 1), max_size=20))
def test_a_stream_split_anywhere_gives_the_same_events(cuts: list[int]) -> None:
    assert _translate(MIXED, cuts) == WHOLE


def test_a_stream_cut_to_length_is_incomplete() -> None:
    events = _events(_translate(_frames([_chunk({"content": "a"}), _chunk({}, "length")]), []))
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_an_error_or_a_cut_stream_ends_with_response_failed() -> None:
    error = {"error": {"message": "overloaded", "type": "server_error"}}
    events = _events(_translate(openai_chat.sse_frame(_chunk({"content": "a"})) + openai_chat.sse_frame(error), []))
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2]["message"] == "overloaded"
    events = _events(_translate(openai_chat.sse_frame(_chunk({"content": "a"})), []))
    assert events[-1]["type"] == "response.failed"
    assert "ended before the answer was complete" in events[-1]["response"]["error"]["message"]


# ---- composition with each schema's chat translator --------------------------------------------------------

ANTHROPIC = Backend("anthropic", "Anthropic", None, "/v1", Endpoint("api.anthropic.com", 443, tls=True))


def request(body: dict[str, Any]) -> ClientRequest:
    return ClientRequest(
        ClientAPI.OPENAI_RESPONSES,
        "/v1/responses",
        orjson.dumps(body),
        body,
        body["model"],
        body.get("stream") is True,
        True,
    )


def test_every_chat_schema_is_reached_and_openai_backends_choose() -> None:
    for schema in ("Anthropic", "AWSBedrock", "AWSAnthropic", "GCPVertexAI", "GCPAnthropic"):
        assert isinstance(translator_for(ClientAPI.OPENAI_RESPONSES, schema)(), ResponsesViaChat), schema
    native = Backend("o", "OpenAI", None, "/v1", Endpoint("h", 80))
    chat_only = Backend("o", "OpenAI", None, "/v1", Endpoint("h", 80), responses_via_chat=True)
    assert translator_for_backend(ClientAPI.OPENAI_RESPONSES, native) is ResponsesToOpenAI
    assert isinstance(translator_for_backend(ClientAPI.OPENAI_RESPONSES, chat_only)(), ResponsesViaChat)


@pytest.mark.parametrize("streamed", [False, True])
def test_responses_to_anthropic_through_the_chat_translator(streamed: bool) -> None:
    translator = translator_for(ClientAPI.OPENAI_RESPONSES, "Anthropic")()
    body = {"model": "claude-sonnet-4-6", "instructions": "be brief", "input": "hello claude", "max_output_tokens": 20}
    upstream = translator.translate_request(request({**body, "stream": streamed}), ANTHROPIC, "claude-sonnet-4-6")
    assert upstream.path == "/v1/messages"
    sent = orjson.loads(upstream.body)
    assert (sent["system"], sent["max_tokens"]) == ([{"type": "text", "text": "be brief"}], 20)
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hello claude"}]}]
    assert sent.get("stream", False) is streamed
    reply = anthropic_messages.create_message(
        upstream.body, {"anthropic-version": "2023-06-01", **upstream.set_headers, "x-api-key": "k"}, message_id="msg_1"
    )
    translator.translate_response_headers({"content-type": "application/json"})
    if not streamed:
        response = orjson.loads(translator.translate_response_body(orjson.dumps(reply.body), True))
        text = response["output"][0]["content"][0]["text"]
    else:
        raw = b"".join(anthropic_messages.sse_frame(event) for event in reply.events)
        out = b"".join(
            translator.translate_response_body(raw[i : i + 13], i + 13 >= len(raw)) for i in range(0, len(raw), 13)
        )
        events = _events(out)
        assert events[0]["type"] == "response.created" and events[-1]["type"] in (
            "response.completed",
            "response.incomplete",
        )
        response = events[-1]["response"]
        text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        assert text == response["output"][0]["content"][0]["text"]
    assert text and " ".join(openai_chat.WORDS).startswith(text)
    assert translator.usage is not None and translator.usage.output > 0
    assert response["usage"]["output_tokens"] == translator.usage.output


@pytest.mark.parametrize(
    ("extra", "status", "start"),
    [
        ({"text": {"format": {"type": "json_object"}}}, 422, "`text.format` cannot be sent to an Anthropic backend"),
        ({"reasoning": {"effort": "bogus"}}, 400, "invalid `reasoning.effort`: 'bogus' is not one of"),
    ],
)
def test_the_chat_translators_refusals_name_the_responses_fields(extra: dict, status: int, start: str) -> None:
    translator = translator_for(ClientAPI.OPENAI_RESPONSES, "Anthropic")()
    with pytest.raises(GatewayError) as refused:
        translator.translate_request(request({"model": "c", "input": "hi", **extra}), ANTHROPIC, "c")
    assert refused.value.status == status
    assert refused.value.message.startswith(start), refused.value.message


def test_keepalive_comments_reach_a_responses_client_as_sse_comments() -> None:
    """A chat-side keep-alive (Anthropic's ping, a provider's comment) keeps a Codex-style client's read alive."""
    raw = MIXED.replace(b"data: ", b": ping\n\ndata: ", 2)  # a keep-alive before each of the first two chunks
    out = _translate(raw, [])
    assert out.count(b": ping\n\n") == 2
    assert _events(out) == _events(WHOLE)  # the event sequence is unchanged around them


def test_anthropic_pings_reach_a_responses_client_as_comments() -> None:
    translator = translator_for(ClientAPI.OPENAI_RESPONSES, "Anthropic")()
    body = {"model": "claude-sonnet-4-6", "input": "hello claude", "max_output_tokens": 20, "stream": True}
    upstream = translator.translate_request(request(body), ANTHROPIC, "claude-sonnet-4-6")
    reply = anthropic_messages.create_message(
        upstream.body, {"anthropic-version": "2023-06-01", **upstream.set_headers, "x-api-key": "k"}, message_id="msg_1"
    )
    assert [event["type"] for event in reply.events].count("ping") == 1  # the fake sends one, as Anthropic does
    translator.translate_response_headers({"content-type": "text/event-stream"})
    raw = b"".join(anthropic_messages.sse_frame(event) for event in reply.events)
    out = translator.translate_response_body(raw, True)
    assert out.count(b": ping\n\n") == 1
    assert _events(out)[-1]["type"] in ("response.completed", "response.incomplete")  # 20 tokens may cut it
