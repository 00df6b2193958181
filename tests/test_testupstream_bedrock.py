"""The fake AWS Bedrock Converse provider, driven by botocore's own ``bedrock-runtime`` client (the AWS SDK
parses its JSON answers, event streams and errors) and by raw HTTP."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import botocore.session
import httpx
import jsonschema
import orjson
import pytest
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError, EventStreamError

from tokenvoy.extproc.eventstream import EventStreamDecoder
from tokenvoy.testupstream import bedrock_converse
from tokenvoy.testupstream.aws_auth import EXAMPLE_ACCESS_KEY_ID, EXAMPLE_SECRET_ACCESS_KEY
from tokenvoy.testupstream.bedrock_converse import THINKING_SIGNATURE, THINKING_TEXT, converse
from tokenvoy.testupstream.openai_chat import WORDS
from tokenvoy.testupstream.server import BackgroundServer, run_in_thread

SENTENCE = " ".join(WORDS)
MODEL = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5-v1:0"
USER = {"role": "user", "content": [{"text": "What is the weather like in Paris today"}]}  # 8 words
WEATHER = {
    "toolSpec": {
        "name": "get_weather",
        "description": "Get the current weather",
        "inputSchema": {
            "json": {
                "type": "object",
                "properties": {
                    "location": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    "days": {"type": "integer", "minimum": 1},
                },
                "required": ["location", "unit", "days"],
            }
        },
    }
}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake").decode()


@pytest.fixture(scope="module")
def upstream() -> Iterator[BackgroundServer]:
    with run_in_thread() as server:
        yield server


@pytest.fixture(scope="module")
def bedrock(upstream: BackgroundServer) -> BaseClient:
    """The AWS SDK's Bedrock Runtime client, signing with AWS's documented example key (the fake knows it)."""
    return botocore.session.get_session().create_client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=upstream.url,
        aws_access_key_id=EXAMPLE_ACCESS_KEY_ID,
        aws_secret_access_key=EXAMPLE_SECRET_ACCESS_KEY,
        config=Config(retries={"max_attempts": 1}),
    )


def _events(stream: Any) -> list[dict[str, Any]]:
    return list(stream["stream"])


# ---- answers through the AWS SDK --------------------------------------------------------------------------


def test_text_answer_and_usage(bedrock: BaseClient) -> None:
    reply = bedrock.converse(modelId=MODEL, system=[{"text": "Be brief please"}], messages=[USER])
    assert reply["output"]["message"] == {"role": "assistant", "content": [{"text": SENTENCE}]}
    assert reply["stopReason"] == "end_turn"
    assert reply["usage"]["inputTokens"] == 3 + 8
    assert reply["usage"]["outputTokens"] == len(WORDS)
    assert reply["usage"]["totalTokens"] == 3 + 8 + len(WORDS)
    assert reply["ResponseMetadata"]["RequestId"]  # x-amzn-requestid, what translators use as the answer id


def test_max_tokens_and_stop_sequences(bedrock: BaseClient) -> None:
    cut = bedrock.converse(modelId=MODEL, messages=[USER], inferenceConfig={"maxTokens": 3})
    assert cut["output"]["message"]["content"] == [{"text": "The quick brown"}]
    assert cut["stopReason"] == "max_tokens"
    stopped = bedrock.converse(modelId=MODEL, messages=[USER], inferenceConfig={"stopSequences": [" fox"]})
    assert stopped["output"]["message"]["content"] == [{"text": "The quick brown"}]
    assert stopped["stopReason"] == "stop_sequence"


def test_stream_joins_to_the_same_answer_with_usage_at_the_end(bedrock: BaseClient) -> None:
    events = _events(bedrock.converse_stream(modelId=MODEL, messages=[USER], inferenceConfig={"maxTokens": 5}))
    assert events[0] == {"messageStart": {"role": "assistant"}}
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == " ".join(WORDS[:5])
    assert not any("contentBlockStart" in e for e in events)  # Bedrock starts only tool blocks explicitly
    assert events[-2] == {"messageStop": {"stopReason": "max_tokens"}}
    assert events[-1]["metadata"]["usage"] == {
        "inputTokens": 8,
        "outputTokens": 5,
        "totalTokens": 13,
        "cacheReadInputTokens": 0,
        "cacheWriteInputTokens": 0,
    }


def test_tools_get_a_schema_valid_call_and_the_result_turn_gets_text(bedrock: BaseClient) -> None:
    reply = bedrock.converse(modelId=MODEL, messages=[USER], toolConfig={"tools": [WEATHER]})
    assert reply["stopReason"] == "tool_use"
    (block,) = reply["output"]["message"]["content"]
    use = block["toolUse"]
    assert use["name"] == "get_weather"
    jsonschema.validate(use["input"], WEATHER["toolSpec"]["inputSchema"]["json"])

    result = {"toolResult": {"toolUseId": use["toolUseId"], "content": [{"text": "sunny"}]}}
    history = [USER, reply["output"]["message"], {"role": "user", "content": [result]}]
    second = bedrock.converse(modelId=MODEL, messages=history, toolConfig={"tools": [WEATHER]})
    assert second["stopReason"] == "end_turn"
    assert second["output"]["message"]["content"] == [{"text": SENTENCE}]
    forced = bedrock.converse(
        modelId=MODEL,
        messages=history,
        toolConfig={"tools": [WEATHER], "toolChoice": {"tool": {"name": "get_weather"}}},
    )
    assert forced["stopReason"] == "tool_use"


def test_streamed_tool_call_accumulates_to_the_same_input(bedrock: BaseClient) -> None:
    events = _events(bedrock.converse_stream(modelId=MODEL, messages=[USER], toolConfig={"tools": [WEATHER]}))
    (start,) = [e["contentBlockStart"] for e in events if "contentBlockStart" in e]
    assert start["start"]["toolUse"]["name"] == "get_weather"
    arguments = "".join(e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in events if "contentBlockDelta" in e)
    jsonschema.validate(orjson.loads(arguments), WEATHER["toolSpec"]["inputSchema"]["json"])
    assert events[-2] == {"messageStop": {"stopReason": "tool_use"}}


def test_thinking_comes_first_signed_and_counts_as_output(bedrock: BaseClient) -> None:
    thinking = {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    reply = bedrock.converse(
        modelId=MODEL,
        messages=[USER],
        inferenceConfig={"maxTokens": 2048},
        additionalModelRequestFields=thinking,
    )
    first, second = reply["output"]["message"]["content"]
    assert first == {"reasoningContent": {"reasoningText": {"text": THINKING_TEXT, "signature": THINKING_SIGNATURE}}}
    assert second == {"text": SENTENCE}
    assert reply["usage"]["outputTokens"] == len(THINKING_TEXT.split()) + len(WORDS)


def test_cache_point_marks_the_cached_prefix(bedrock: BaseClient) -> None:
    system = [{"text": "a long shared preamble"}, {"cachePoint": {"type": "default"}}]
    reply = bedrock.converse(modelId=MODEL, system=system, messages=[USER])
    assert reply["usage"]["cacheReadInputTokens"] == 4
    assert reply["usage"]["inputTokens"] == 8
    assert reply["usage"]["totalTokens"] == 4 + 8 + len(WORDS)


def test_images_and_documents_are_accepted(bedrock: BaseClient) -> None:
    content = [
        {"image": {"format": "png", "source": {"bytes": b"\x89PNG fake"}}},
        {"document": {"format": "pdf", "name": "report (final)", "source": {"bytes": b"%PDF-1.4"}}},
        {"text": "describe"},
    ]
    reply = bedrock.converse(modelId=MODEL, messages=[{"role": "user", "content": content}])
    assert reply["usage"]["inputTokens"] == 1


def test_errors_are_aws_exceptions_the_sdk_recognises(bedrock: BaseClient) -> None:
    with pytest.raises(ClientError) as caught:
        bedrock.converse(modelId=MODEL, messages=[{"role": "assistant", "content": [{"text": "hi"}]}])
    error = caught.value.response
    assert error["Error"]["Code"] == "ValidationException"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "must start with a user message" in error["Error"]["Message"]
    assert isinstance(caught.value, bedrock.exceptions.ValidationException)


def test_forced_statuses_are_the_matching_bedrock_exceptions(upstream: BackgroundServer) -> None:
    for status, name in [
        (429, "ThrottlingException"),
        (403, "AccessDeniedException"),
        (503, "ServiceUnavailableException"),
        (500, "InternalServerException"),
    ]:
        reply = httpx.post(
            f"{upstream.url}/model/m/converse",
            content=orjson.dumps({"messages": [USER]}),
            headers={"x-testupstream-status": str(status)},
        )
        assert reply.status_code == status
        assert reply.headers["x-amzn-errortype"].split(":", 1)[0] == name
        assert reply.json() == {"message": f"testupstream: forced status {status}"}


def test_a_mid_stream_exception_reaches_the_sdk_as_that_exception(
    upstream: BackgroundServer, bedrock: BaseClient
) -> None:
    def add_header(request: Any, **_: Any) -> None:
        request.headers[bedrock_converse.STREAM_EXCEPTION_HEADER] = "throttlingException"

    bedrock.meta.events.register("before-sign.bedrock-runtime.ConverseStream", add_header)
    try:
        stream = bedrock.converse_stream(modelId=MODEL, messages=[USER])
        seen = []
        with pytest.raises(EventStreamError) as caught:
            for event in stream["stream"]:
                seen.append(event)
    finally:
        bedrock.meta.events.unregister("before-sign.bedrock-runtime.ConverseStream", add_header)
    assert caught.value.response["Error"]["Code"] == "throttlingException"
    assert [list(e) for e in seen] == [["messageStart"], ["contentBlockDelta"]]


def test_the_wire_format_is_an_event_stream_with_padding(upstream: BackgroundServer) -> None:
    reply = httpx.post(
        f"{upstream.url}/model/{MODEL.replace(':', '%3A').replace('/', '%2F')}/converse-stream",
        content=orjson.dumps({"messages": [USER], "inferenceConfig": {"maxTokens": 2}}),
    )
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/vnd.amazon.eventstream"
    assert reply.headers["x-amzn-requestid"]
    messages = EventStreamDecoder().feed(reply.content)
    kinds = [m.event_type for m in messages]
    assert kinds == [
        "messageStart",
        "contentBlockDelta",
        "contentBlockDelta",
        "contentBlockStop",
        "messageStop",
        "metadata",
    ]
    assert all(m.message_type == "event" and "p" in orjson.loads(m.payload) for m in messages)


# ---- validation, as Bedrock refuses ------------------------------------------------------------------------


def _text(text: str) -> dict[str, Any]:
    return {"text": text}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "required key [messages]"),
        ({"messages": []}, "must start with a user message"),
        ({"messages": [{"role": "assistant", "content": [_text("x")]}]}, "must start with a user message"),
        ({"messages": [USER, USER]}, "alternate between user and assistant"),
        ({"messages": [{"role": "user", "content": []}]}, "is empty"),
        ({"messages": [{"role": "user", "content": [_text("  ")]}]}, "is blank"),
        ({"messages": [{"role": "user", "content": [{"video": {}}]}]}, "extraneous key [video]"),
        ({"messages": [{"role": "user", "content": [{"text": "a", "image": {}}]}]}, "exactly one member"),
        ({"messages": [{"role": "user", "content": "hello"}]}, "is empty"),
        ({"messages": [USER], "model": "x"}, "extraneous key [model]"),
        ({"messages": [USER], "inferenceConfig": {"maxTokens": "5"}}, "inferenceConfig/maxTokens"),
        ({"messages": [USER], "inferenceConfig": {"temperature": 1.5}}, "inferenceConfig.temperature"),
        ({"messages": [USER], "inferenceConfig": {"max_tokens": 5}}, "extraneous key [max_tokens]"),
        ({"messages": [USER], "inferenceConfig": {"stopSequences": [""]}}, "stopSequences"),
        (
            {
                "messages": [
                    USER,
                    {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "f", "input": {}}}]},
                ]
            },
            "toolConfig field must be defined",
        ),
        (
            {
                "messages": [
                    USER,
                    {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "f", "input": {}}}]},
                    USER,
                ],
                "toolConfig": {"tools": [WEATHER]},
            },
            "Expected toolResult blocks",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"toolResult": {"toolUseId": "nope", "content": []}}]},
                ],
                "toolConfig": {"tools": [WEATHER]},
            },
            "answers toolUse id nope",
        ),
        ({"messages": [{"role": "user", "content": [{"toolUse": {}}]}]}, "not allowed in a user message"),
        ({"messages": [USER], "toolConfig": {"tools": []}}, "at least one tool"),
        ({"messages": [USER], "toolConfig": {"tools": [WEATHER], "toolChoice": {"none": {}}}}, "extraneous key [none]"),
        (
            {"messages": [USER], "toolConfig": {"tools": [WEATHER], "toolChoice": {"tool": {"name": "x"}}}},
            "not defined",
        ),
        (
            {
                "messages": [USER],
                "toolConfig": {"tools": [{"toolSpec": {"name": "bad name", "inputSchema": {"json": {}}}}]},
            },
            "does not match pattern",
        ),
        (
            {"messages": [{"role": "user", "content": [{"image": {"format": "bmp", "source": {"bytes": PNG}}}]}]},
            "not a valid enum value",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"document": {"format": "pdf", "name": "a.pdf", "source": {"bytes": PNG}}}],
                    }
                ]
            },
            "document name",
        ),
        ({"messages": [USER], "additionalModelRequestFields": {"frequency_penalty": 1}}, "extraneous key"),
        (
            {
                "messages": [USER],
                "additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 2048}},
            },
            "must be greater than `thinking.budget_tokens`",
        ),
    ],
)
def test_invalid_requests_are_validation_exceptions(body: dict[str, Any], fragment: str) -> None:
    reply = converse(orjson.dumps(body), stream=False)
    assert reply.status == 400
    assert reply.error_type == "ValidationException"
    assert reply.body is not None and fragment in reply.body["message"]


def test_invalid_json_through_the_server(upstream: BackgroundServer) -> None:
    reply = httpx.post(f"{upstream.url}/model/m/converse", content=b"{nope")
    assert reply.status_code == 400
    assert reply.headers["x-amzn-errortype"].startswith("ValidationException:")
    assert "Malformed input request" in reply.json()["message"]


def test_replies_are_deterministic() -> None:
    body = orjson.dumps({"messages": [USER], "toolConfig": {"tools": [WEATHER]}})
    assert converse(body, stream=False) == converse(body, stream=False)
    assert converse(body, stream=True) == converse(body, stream=True)
