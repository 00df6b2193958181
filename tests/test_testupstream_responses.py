"""The fake OpenAI Responses API: refuses what OpenAI's API reference says it refuses, answers
deterministically, and streams the documented event sequence."""

from __future__ import annotations

from tokenvoy.testupstream import openai_responses as fake
from tokenvoy.testupstream.openai_chat import WORDS

TOOL = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}, "required": []}}


def create(body: dict, stored: set[str] | None = None) -> fake.ResponsesReply:
    return fake.create_response(body, response_id="resp_3", created=100, stored=stored or set())


def error(reply: fake.ResponsesReply) -> tuple[str, str | None, str | None]:
    assert reply.status == 400
    err = reply.body["error"]
    return err["message"], err["param"], err["code"]


def test_unknown_fields_are_refused_as_openai_does() -> None:
    assert error(create({"model": "m", "input": "x", "messages": []})) == (
        "Unknown parameter: 'messages'.",
        "messages",
        "unknown_parameter",
    )


def test_a_missing_model_and_bad_types_are_refused() -> None:
    assert error(create({"input": "x"}))[2] == "missing_required_parameter"
    assert error(create({"model": "m", "input": 3}))[1] == "input"
    assert error(create({"model": "m", "input": "x", "stream": "yes"}))[1] == "stream"
    assert error(create({"model": "m", "input": "x", "max_output_tokens": 15}))[2] == "integer_below_min_value"


def test_input_items_are_checked() -> None:
    assert error(create({"model": "m", "input": [{"role": "tool", "content": "x"}]}))[1] == "input[0].role"
    assert error(create({"model": "m", "input": [{"type": "chat", "content": "x"}]}))[1] == "input[0].type"
    bad_part = {"role": "user", "content": [{"type": "text", "text": "x"}]}
    assert error(create({"model": "m", "input": [bad_part]}))[1] == "input[0].content[0].type"
    assert error(create({"model": "m", "input": "x", "tools": [{"type": "function"}]}))[1] == "tools[0].name"


def test_previous_response_id_must_name_a_stored_response() -> None:
    message, _param, code = error(create({"model": "m", "input": "x", "previous_response_id": "resp_1"}))
    assert (message, code) == ("Previous response with id 'resp_1' not found.", "previous_response_not_found")
    assert create({"model": "m", "input": "x", "previous_response_id": "resp_1"}, {"resp_1"}).status == 200
    assert create({"model": "m", "input": "x", "store": False}).stored is None
    assert create({"model": "m", "input": "x"}).stored == "resp_3"


def test_a_text_answer_and_its_usage() -> None:
    reply = create({"model": "m", "instructions": "be brief", "input": [{"role": "user", "content": "a b c"}]})
    assert reply.body["status"] == "completed"
    assert reply.body["output"][0]["content"][0]["text"] == " ".join(WORDS[:16])
    assert reply.body["usage"]["input_tokens"] == 5 and reply.body["usage"]["output_tokens"] == 16


def test_a_limit_makes_the_answer_incomplete() -> None:
    reply = create({"model": "m", "input": "x", "max_output_tokens": 20})
    assert (reply.body["status"], reply.body["incomplete_details"]) == ("incomplete", {"reason": "max_output_tokens"})


def test_offered_tools_are_called_then_answered_after_their_output() -> None:
    call = create({"model": "m", "input": "x", "tools": [TOOL]}).body["output"][0]
    assert (call["type"], call["name"], call["arguments"]) == ("function_call", "lookup", "{}")
    history = [
        {"role": "user", "content": "x"},
        {"type": "function_call", "call_id": call["call_id"], "name": "lookup", "arguments": "{}"},
        {"type": "function_call_output", "call_id": call["call_id"], "output": "found"},
    ]
    answer = create({"model": "m", "input": history, "tools": [TOOL]}).body
    assert answer["output"][0]["content"][0]["text"] == " ".join(WORDS)


def test_the_stream_has_the_documented_event_sequence() -> None:
    events = create({"model": "m", "input": "x", "stream": True, "max_output_tokens": 16}).events
    kinds = [event["type"] for event in events]
    assert kinds[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",
    ]
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    deltas = "".join(event["delta"] for event in events if event["type"] == "response.output_text.delta")
    assert deltas == events[-1]["response"]["output"][0]["content"][0]["text"]


def test_input_tokens_are_counted_with_their_own_field_list() -> None:
    counted = fake.count_input_tokens({"model": "m", "instructions": "be brief", "input": "a b c"})
    assert (counted.status, counted.body) == (200, {"object": "response.input_tokens", "input_tokens": 5})
    assert (
        error(fake.count_input_tokens({"model": "m", "input": "x", "max_output_tokens": 20}))[2] == "unknown_parameter"
    )
