"""The fake Anthropic provider (``POST /v1/messages``), driven by the official ``anthropic`` SDK and httpx."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import jsonschema
import orjson
import pytest

from tokenvoy.testupstream import anthropic_messages
from tokenvoy.testupstream.anthropic_messages import THINKING_TEXT, create_message, sample_value
from tokenvoy.testupstream.openai_chat import WORDS
from tokenvoy.testupstream.server import BackgroundServer, run_in_thread

SENTENCE = " ".join(WORDS)
HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {
        "type": "object",
        "properties": {
            "location": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1},
        },
        "required": ["location", "unit", "days"],
    },
}
USER = {"role": "user", "content": "What is the weather like in Paris today"}  # 8 words


@pytest.fixture(scope="module")
def upstream() -> Iterator[BackgroundServer]:
    with run_in_thread() as server:
        yield server


@pytest.fixture(scope="module")
def client(upstream: BackgroundServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=upstream.url, api_key="sk-ant-test", max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def web(upstream: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=upstream.url, headers=HEADERS) as c:
        yield c


def _create(body: dict[str, Any], headers: dict[str, str] | None = None) -> anthropic_messages.MessagesReply:
    return create_message(orjson.dumps(body), HEADERS if headers is None else headers, message_id="msg_7")


# ---- answers through the SDK ------------------------------------------------------------------------------


def test_text_answer_and_honest_usage(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model="claude-fake", max_tokens=1024, system="Be brief please", messages=[USER])
    assert message.model == "claude-fake"
    assert message.id.startswith("msg_")
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == SENTENCE
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 3 + 8
    assert message.usage.output_tokens == len(WORDS)
    assert message.usage.cache_read_input_tokens == 0


def test_max_tokens_cuts_the_answer(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model="m", max_tokens=3, messages=[USER])
    assert message.content[0].text == "The quick brown"
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 3


def test_stop_sequence(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model="m", max_tokens=100, messages=[USER], stop_sequences=["zzz", " fox"])
    assert message.content[0].text == "The quick brown"
    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == " fox"


def test_stream_joins_to_the_same_answer(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model="m", max_tokens=10, system=[{"type": "text", "text": "a b"}], messages=[USER]
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == " ".join(WORDS[:10])
    assert final.content[0].text == text
    assert final.stop_reason == "max_tokens"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (10, 10)


def test_stream_wire_format(web: httpx.Client) -> None:
    reply = web.post("/v1/messages", json={"model": "m", "max_tokens": 2, "messages": [USER], "stream": True})
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in reply.content.split(b"\n\n") if b]
    names = []
    for block in blocks:
        event_line, data_line = block.split(b"\n")
        name = event_line.removeprefix(b"event: ").decode()
        assert orjson.loads(data_line.removeprefix(b"data: "))["type"] == name
        names.append(name)
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = orjson.loads(blocks[0].split(b"data: ")[1])
    assert start["message"]["usage"]["input_tokens"] == 8
    assert start["message"]["usage"]["output_tokens"] == 1
    delta = orjson.loads(blocks[-2].split(b"data: ")[1])
    assert delta["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert delta["usage"] == {"output_tokens": 2}


def test_tools_get_a_call_to_the_first_tool_with_schema_valid_input(client: anthropic.Anthropic) -> None:
    other = {"name": "other", "input_schema": {"type": "object"}}
    message = client.messages.create(model="m", max_tokens=100, messages=[USER], tools=[WEATHER, other])
    assert message.stop_reason == "tool_use"
    (block,) = message.content
    assert block.type == "tool_use"
    assert block.name == "get_weather"
    assert block.id.startswith("toolu_")
    jsonschema.validate(block.input, WEATHER["input_schema"])
    assert block.input == {"location": "fox", "unit": "celsius", "days": 1}
    assert message.usage.output_tokens == 1 + 3


def test_streamed_tool_call_accumulates_to_the_same_input(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model="m", max_tokens=100, messages=[USER], tools=[WEATHER]) as stream:
        final = stream.get_final_message()
    assert final.content[0].input == {"location": "fox", "unit": "celsius", "days": 1}
    assert final.stop_reason == "tool_use"


def test_tool_result_turn_is_answered_with_text_and_a_named_tool_is_forced(client: anthropic.Anthropic) -> None:
    first = client.messages.create(model="m", max_tokens=100, messages=[USER], tools=[WEATHER])
    history = [
        USER,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": first.content[0].id, "content": "sunny and 20"}],
        },
    ]
    second = client.messages.create(model="m", max_tokens=100, messages=history, tools=[WEATHER])
    assert second.stop_reason == "end_turn"
    assert second.usage.input_tokens == 8 + 3  # tool_result text counts
    other = {"name": "lookup", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}
    forced = client.messages.create(
        model="m",
        max_tokens=100,
        messages=history,
        tools=[WEATHER, other],
        tool_choice={"type": "tool", "name": "lookup"},
    )
    assert forced.content[0].name == "lookup"
    assert forced.content[0].input == {}
    none = client.messages.create(
        model="m", max_tokens=5, messages=[USER], tools=[WEATHER], tool_choice={"type": "none"}
    )
    assert none.content[0].type == "text"


def test_thinking_comes_first_and_counts_as_output(client: anthropic.Anthropic) -> None:
    thinking = {"type": "enabled", "budget_tokens": 1024}
    message = client.messages.create(model="m", max_tokens=2000, messages=[USER], thinking=thinking)
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == THINKING_TEXT
    assert message.content[0].signature
    assert message.usage.output_tokens == len(THINKING_TEXT.split()) + len(WORDS)
    with client.messages.stream(model="m", max_tokens=2000, messages=[USER], thinking=thinking) as stream:
        final = stream.get_final_message()
    assert final.content[0].thinking == THINKING_TEXT
    assert final.content[0].signature == message.content[0].signature


def test_cache_control_marks_the_cached_prefix(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model="m",
        max_tokens=1,
        system=[{"type": "text", "text": "one two three", "cache_control": {"type": "ephemeral"}}],
        messages=[USER],
    )
    assert message.usage.cache_read_input_tokens == 3
    assert message.usage.input_tokens == 8


def test_images_are_accepted_and_not_counted(client: anthropic.Anthropic) -> None:
    png = base64.b64encode(b"\x89PNG").decode()
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
        {"type": "text", "text": "what is this"},
    ]
    message = client.messages.create(model="m", max_tokens=1, messages=[{"role": "user", "content": content}])
    assert message.usage.input_tokens == 3


# ---- validation ---------------------------------------------------------------------------------------------

BASE = {"model": "m", "max_tokens": 10, "messages": [USER]}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"model": "m", "messages": [USER]}, "max_tokens: Field required"),
        ({"max_tokens": 5, "messages": [USER]}, "model: Field required"),
        ({**BASE, "max_tokens": 0}, "max_tokens"),
        ({**BASE, "max_tokens": 10**6}, "maximum allowed number of output tokens"),
        ({**BASE, "messages": []}, "messages"),
        ({**BASE, "n": 1}, "n: Extra inputs are not permitted"),
        ({**BASE, "messages": [{"role": "assistant", "content": "hi"}]}, 'first message must use the "user" role'),
        ({**BASE, "messages": [USER, USER]}, "roles must alternate"),
        ({**BASE, "messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        ({**BASE, "messages": [{"role": "user", "content": ""}]}, "non-empty content"),
        ({**BASE, "messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]}, "must be non-empty"),
        ({**BASE, "messages": [{"role": "user", "content": "x", "name": "bob"}]}, "messages.0.name: Extra inputs"),
        (
            {**BASE, "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]}]},
            "unexpected `tool_use_id`",
        ),
        (
            {
                **BASE,
                "messages": [
                    USER,
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
                    {"role": "user", "content": "go on"},
                ],
            },
            "`tool_use` ids were found without `tool_result` blocks immediately after: t1",
        ),
        (
            {
                **BASE,
                "messages": [{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}],
            },
            "not allowed in user messages",
        ),
        ({**BASE, "tools": [{"name": "bad name", "input_schema": {"type": "object"}}]}, "tools.0.custom.name"),
        ({**BASE, "tools": [{"name": "f", "input_schema": {"type": "string"}}]}, "input_schema.type"),
        ({**BASE, "tools": [{"type": "function", "function": {"name": "f"}, "name": "f"}]}, "input_schema"),
        ({**BASE, "tool_choice": {"type": "required"}}, "tool_choice"),
        ({**BASE, "tool_choice": {"type": "any"}}, "needs `tools`"),
        ({**BASE, "temperature": 1.5}, "temperature"),
        ({**BASE, "stop_sequences": "x"}, "stop_sequences"),
        ({**BASE, "metadata": {"user": "x"}}, "metadata.user"),
        ({**BASE, "thinking": {"type": "enabled", "budget_tokens": 512}}, "greater than or equal to 1024"),
        ({**BASE, "thinking": {"type": "enabled", "budget_tokens": 2048}}, "`max_tokens` must be greater"),
        (
            {
                **BASE,
                "messages": [
                    {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "x"}}]}
                ],
            },
            "media_type",
        ),
    ],
)
def test_invalid_requests_are_anthropic_400s(body: dict[str, Any], fragment: str) -> None:
    reply = _create(body)
    assert reply.status == 400
    assert reply.body is not None
    assert reply.body["type"] == "error"
    assert reply.body["error"]["type"] == "invalid_request_error"
    assert fragment in reply.body["error"]["message"]


def test_headers_are_required() -> None:
    no_key = _create(BASE, {"anthropic-version": "2023-06-01"})
    assert no_key.status == 401
    assert no_key.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "x-api-key header is required"},
    }
    assert _create(BASE, {"authorization": "Bearer sk-ant", "anthropic-version": "2023-06-01"}).status == 200
    no_version = _create(BASE, {"x-api-key": "k"})
    assert no_version.status == 400
    assert "anthropic-version" in no_version.body["error"]["message"]


def test_invalid_json_and_errors_through_the_server(web: httpx.Client, client: anthropic.Anthropic) -> None:
    reply = web.post("/v1/messages", content=b"{nope")
    assert reply.status_code == 400
    assert reply.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.BadRequestError, match="roles must alternate"):
        client.messages.create(model="m", max_tokens=5, messages=[USER, USER])
    assert web.post("/v1/messages", json=BASE, headers={"x-api-key": ""}).status_code == 401


def test_forced_status_is_anthropic_shaped(web: httpx.Client) -> None:
    reply = web.post("/v1/messages", json=BASE, headers={"x-testupstream-status": "529"})
    assert reply.status_code == 529
    assert reply.json() == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "testupstream: forced status 529"},
    }
    reply = web.post("/anthropic/v1/messages", json=BASE)
    assert reply.status_code == 200  # any prefix, like the OpenAI route


def test_replies_are_deterministic() -> None:
    body = {**BASE, "tools": [WEATHER], "stream": True}
    assert _create(body) == _create(body)


# ---- schema samples ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"type": "string", "minLength": 8}}, "required": ["a"]},
        {"type": "object", "properties": {"n": {"type": "number", "exclusiveMinimum": 0}}, "required": ["n"]},
        {"type": "object", "properties": {"b": {"type": "boolean"}, "z": {"type": "null"}}, "required": ["b", "z"]},
        {
            "type": "object",
            "properties": {"xs": {"type": "array", "items": {"type": "integer", "minimum": 3}, "minItems": 2}},
            "required": ["xs"],
        },
        {
            "type": "object",
            "properties": {
                "inner": {"type": "object", "properties": {"k": {"const": "v"}}, "required": ["k"]},
                "choice": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                "maybe": {"type": ["null", "string"]},
            },
            "required": ["inner", "choice", "maybe"],
        },
    ],
)
def test_sample_values_are_valid_for_their_schema(schema: dict[str, Any]) -> None:
    jsonschema.validate(sample_value(schema), schema)


# -- what the real API accepts and refuses at the top level (its request reference) ------------------------

CLAUDE_CODE_FIELDS = {
    "thinking": {"type": "adaptive", "display": "omitted"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "output_config": {"effort": "high"},
    "metadata": {"user_id": "someone"},
    "service_tier": "auto",
    "container": "container_01",
    "mcp_servers": [],
}


def _with(**fields: Any) -> anthropic_messages.MessagesReply:
    body = {"model": "claude-sonnet-4-6", "max_tokens": 64, "messages": [USER], **fields}
    return create_message(orjson.dumps(body), HEADERS, message_id="msg_1")


def test_the_fields_claude_code_sends_are_accepted_and_adaptive_thinking_thinks() -> None:
    reply = _with(**CLAUDE_CODE_FIELDS)
    assert reply.status == 200, reply.body
    assert reply.body is not None
    assert [block["type"] for block in reply.body["content"]] == ["thinking", "text"]


def test_tool_search_fields_on_a_tool_are_accepted() -> None:
    tool = {**WEATHER, "defer_loading": True, "strict": True, "input_examples": [], "eager_input_streaming": True}
    reply = _with(tools=[tool])
    assert reply.status == 200, reply.body
    assert reply.body is not None and reply.body["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"frobnicate": 1}, "frobnicate: Extra inputs are not permitted"),
        ({"output_config": {"effort": "extreme"}}, "output_config.effort"),
        ({"output_config": {"speed": "fast"}}, "output_config.speed: Extra inputs are not permitted"),
        ({"thinking": {"type": "sometimes"}}, "'adaptive', 'disabled', 'enabled'"),
        ({"context_management": "clear"}, "context_management"),
        ({"service_tier": "priority"}, "service_tier"),
        ({"tools": [{**WEATHER, "colour": "red"}]}, "tools.0.custom.colour: Extra inputs are not permitted"),
    ],
)
def test_what_the_api_refuses_is_refused(fields: dict[str, Any], fragment: str) -> None:
    reply = _with(**fields)
    assert reply.status == 400
    assert reply.body is not None and fragment in reply.body["error"]["message"]


def test_anthropic_server_tools_are_accepted_and_the_first_custom_tool_is_called() -> None:
    """Cline's Anthropic provider offers ``web_search_20250305`` first; the API takes it (no input_schema)."""
    tools = [
        {"type": "web_search_20250305", "name": "web_search"},
        {"name": "read_files", "input_schema": {"type": "object", "properties": {}}},
    ]
    reply = _create({"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}], "tools": tools})
    assert reply.status == 200, reply.body
    assert [b["name"] for b in reply.body["content"] if b["type"] == "tool_use"] == ["read_files"]  # type: ignore[index]
    custom_without_schema = [{"type": "custom", "name": "x"}]
    refused = _create(
        {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], "tools": custom_without_schema}
    )
    assert refused.status == 400


def test_count_tokens_counts_like_the_messages_usage_and_refuses_generation_fields() -> None:
    body = {"model": "m", "system": "Be brief.", "messages": [{"role": "user", "content": "five words are here now"}]}
    counted = anthropic_messages.count_tokens(orjson.dumps(body), HEADERS)
    assert (counted.status, counted.body) == (200, {"input_tokens": 7})
    refused = anthropic_messages.count_tokens(orjson.dumps({**body, "max_tokens": 5}), HEADERS)
    assert refused.status == 400 and "max_tokens: Extra inputs are not permitted" in str(refused.body)
    assert anthropic_messages.count_tokens(orjson.dumps(body), {}).status == 401
