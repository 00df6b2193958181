"""OpenAI chat client → Azure OpenAI backend: Azure's path, and Azure's answers (filter results, the
choices-less opening chunk) read for usage and passed on unchanged."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenvoy.config.model import Backend, Endpoint
from tokenvoy.extproc.sse import SSEParser
from tokenvoy.extproc.translate import translator_for
from tokenvoy.extproc.translate.base import ClientAPI, ClientRequest
from tokenvoy.extproc.translate.openai_to_azure import DEFAULT_API_VERSION, OpenAIToAzure
from tokenvoy.extproc.usage import TokenUsage
from tokenvoy.testupstream import azure as fake
from tokenvoy.testupstream import openai_chat


def backend(version: str | None = "2024-10-21", prefix: str = "") -> Backend:
    return Backend(
        name="azure",
        schema="AzureOpenAI",
        schema_version=version,
        path_prefix=prefix,
        endpoint=Endpoint("res.openai.azure.com", 443, tls=True),
    )


def request(body: dict[str, Any], needs_usage: bool = True) -> ClientRequest:
    return ClientRequest(
        api=ClientAPI.OPENAI_CHAT,
        path="/v1/chat/completions",
        raw=orjson.dumps(body),
        body=body,
        model=body["model"],
        stream=body.get("stream") is True,
        needs_usage=needs_usage,
    )


MESSAGES = [{"role": "user", "content": "hello azure deployment"}]


def test_registry_maps_chat_to_azure() -> None:
    assert translator_for(ClientAPI.OPENAI_CHAT, "AzureOpenAI") is OpenAIToAzure


def test_path_uses_the_deployment_and_the_schema_version() -> None:
    upstream = OpenAIToAzure().translate_request(
        request({"model": "gpt-4o", "messages": MESSAGES}), backend(), "gpt-4o"
    )
    assert upstream.path == "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
    assert upstream.body is None  # nothing else to change


def test_the_override_names_the_deployment() -> None:
    upstream = OpenAIToAzure().translate_request(
        request({"model": "gpt-4o", "messages": MESSAGES}), backend(prefix="/apim"), "prod gpt4o"
    )
    assert upstream.path == "/apim/openai/deployments/prod%20gpt4o/chat/completions?api-version=2024-10-21"
    assert orjson.loads(upstream.body)["model"] == "prod gpt4o"


def test_without_a_schema_version_the_default_is_sent() -> None:
    upstream = OpenAIToAzure().translate_request(request({"model": "m", "messages": MESSAGES}), backend(None), "m")
    assert upstream.path.endswith(f"?api-version={DEFAULT_API_VERSION}")
    assert fake.check_request(upstream.path.split("?", 1)[1], {}, "m") is None  # a version Azure accepts


def test_plain_answer_usage_and_model_are_read_and_the_body_is_untouched() -> None:
    translator = OpenAIToAzure()
    body = {"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 4}
    translator.translate_request(request(body), backend(), "gpt-4o")
    reply = fake.chat_completion(body, "gpt-4o", completion_id="chatcmpl-1", created=1)
    assert "prompt_filter_results" in reply.body
    assert translator.translate_response_body(orjson.dumps(reply.body), True) is None
    assert translator.usage == TokenUsage(input=3, output=4, total=7)
    assert translator.response_model == "gpt-4o"


def test_azure_errors_pass_through() -> None:
    translator = OpenAIToAzure()
    translator.translate_request(request({"model": "x", "messages": MESSAGES}), backend(), "x")
    _, error = fake.check_request("api-version=2024-10-21", {fake.DEPLOYMENTS_HEADER: "a"}, "x")
    assert translator.translate_error(404, {}, orjson.dumps(error)) is None
    assert translator.take_usage() is None and translator.usage is None


def stream_bytes(body: dict[str, Any]) -> bytes:
    reply = fake.chat_completion(body, "gpt-4o", completion_id="chatcmpl-9", created=1)
    return b"".join(openai_chat.sse_frame(c) for c in reply.chunks) + openai_chat.SSE_DONE


def feed(translator: OpenAIToAzure, raw: bytes, cuts: list[int]) -> bytes:
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    out = []
    for i, piece in enumerate(pieces):
        replaced = translator.translate_response_body(piece, i == len(pieces) - 1)
        out.append(piece if replaced is None else replaced)
    return b"".join(out)


def events(raw: bytes) -> list[str]:
    parser = SSEParser()
    return [e.data for e in [*parser.feed(raw), *parser.flush()]]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_stream_usage_is_forced_read_and_taken_out_at_any_split(data: st.DataObject) -> None:
    client_body = {"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 5, "stream": True}
    translator = OpenAIToAzure()
    upstream = translator.translate_request(request(client_body), backend(), "gpt-4o")
    sent = orjson.loads(upstream.body)
    assert sent["stream_options"] == {"include_usage": True}
    raw = stream_bytes(sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=8)))
    out = events(feed(translator, raw, cuts))
    assert translator.usage == TokenUsage(input=3, output=5, total=8)
    assert translator.response_model == "gpt-4o"
    # Azure's prompt-filter chunk opens the stream and is kept; the usage chunk the client did not ask for is gone.
    assert orjson.loads(out[0])["choices"] == [] and "prompt_filter_results" in orjson.loads(out[0])
    assert out[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in out[:-1]]
    assert all(not isinstance(c.get("usage"), dict) for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == openai_chat.completion_text(5)


def test_stream_usage_the_client_asked_for_is_kept() -> None:
    client_body = {
        "model": "gpt-4o",
        "messages": MESSAGES,
        "max_tokens": 2,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    translator = OpenAIToAzure()
    upstream = translator.translate_request(request(client_body), backend(), "gpt-4o")
    assert upstream.body is None
    raw = stream_bytes(client_body)
    assert feed(translator, raw, [len(raw) // 2]) == raw
    assert translator.usage == TokenUsage(input=3, output=2, total=5)


def test_streamed_tool_call_passes_through() -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    client_body = {"model": "gpt-4o", "messages": MESSAGES, "tools": [tool], "stream": True}
    translator = OpenAIToAzure()
    sent = orjson.loads(translator.translate_request(request(client_body), backend(), "gpt-4o").body)
    out = [orjson.loads(e) for e in events(feed(translator, stream_bytes(sent), []))[:-1]]
    calls = [tc for c in out if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls") or ()]
    assert calls[0]["function"]["name"] == "f"
    assert [c["choices"][0]["finish_reason"] for c in out if c["choices"]][-1] == "tool_calls"
    assert translator.usage == TokenUsage(input=3, output=1, total=4)
