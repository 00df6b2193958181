"""Compressed provider answers through real Envoy + extproc, read by the official SDKs.

The gateway asks every provider for ``accept-encoding: identity``; the fake provider compresses anyway when
told to (``x-testupstream-content-encoding``), as a CDN or a misbehaving proxy may. Streams are compressed
as one stream flushed per event, with a pause between events, so Envoy hands extproc the compressed bytes
in separate chunks. Whatever the coding, the client must get the plain answer with consistent headers, and
the usage must reach both the SDK and the access log; corrupt data must become an error in the client's
API shape, never garbage.
"""

from __future__ import annotations

import base64
import gzip
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from anthropic import Anthropic
from openai import OpenAI

from tests.integration.conftest import Gateway, free_port, gateway_config, start_gateway
from tests.integration.test_anthropic_backend import anthropic_config
from tokenvoy.testupstream.openai_chat import WORDS

CODINGS = ["gzip", "deflate", "deflate-raw", "br"]  # deflate-raw: raw RFC 1951 data labelled "deflate"
MESSAGES: list[Any] = [{"role": "user", "content": "hello there gateway"}]
PROMPT_WORDS = 3  # the fakes count words
CORRUPT_GZIP = base64.b64encode(gzip.compress(b'{"id":"chatcmpl-1","choices":[]}')[:-6]).decode()
DECODE_ERROR = (
    "the provider's answer cannot be decoded (content-encoding: gzip): "
    "truncated: the body ends before the gzip data does"
)


def _start(tmp_path_factory: pytest.TempPathFactory, name: str, config: Any) -> Iterator[Gateway]:
    directory: Path = tmp_path_factory.mktemp(name)
    listener_port, fake_port = free_port(), free_port()
    running = start_gateway(directory, config_text=config(listener_port, fake_port), fake_port=fake_port)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def openai_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    yield from _start(tmp_path_factory, "compressed-openai", lambda port, fake: gateway_config(port, fake, 10**9))


@pytest.fixture(scope="module")
def anthropic_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    yield from _start(tmp_path_factory, "compressed-anthropic", anthropic_config)


def _headers(request_id: str, coding: str | None, **extra: str) -> dict[str, str]:
    headers = {"x-request-id": request_id, "x-user-id": f"user-{uuid.uuid4()}", "x-testupstream-chunk-delay-ms": "3"}
    if coding:
        headers["x-testupstream-content-encoding"] = coding
    return {**headers, **extra}


def openai_client(gateway: Gateway, request_id: str, coding: str | None, **extra: str) -> OpenAI:
    headers = _headers(request_id, coding, **extra)
    return OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", default_headers=headers, max_retries=0)


def anthropic_client(gateway: Gateway, request_id: str, coding: str | None, **extra: str) -> Anthropic:
    headers = _headers(request_id, coding, **extra)
    return Anthropic(base_url=f"{gateway.url}/anthropic", api_key="unused", default_headers=headers, max_retries=0)


def _new_id(kind: str) -> str:
    return f"compressed-{kind}-{uuid.uuid4()}"


def logged_tokens(gateway: Gateway, request_id: str) -> tuple[int, int, int]:
    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert entry["response_code"] == 200
    return entry["genai_tokens_input"], entry["genai_tokens_output"], entry["genai_tokens_total"]


def sent_to_provider(gateway: Gateway, request_id: str) -> dict[str, Any]:
    received = httpx.get(f"{gateway.fake_url}/__testupstream/requests").json()
    return next(r for r in received if r["headers"].get("x-request-id") == request_id)


# ---- OpenAI SDK → OpenAI-schema backend ---------------------------------------------------------------------


@pytest.mark.parametrize("coding", CODINGS)
def test_openai_chat(openai_gateway: Gateway, coding: str) -> None:
    request_id = _new_id(f"chat-{coding}")
    raw = openai_client(openai_gateway, request_id, coding).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=5
    )
    reply = raw.parse()
    assert reply.choices[0].message.content == " ".join(WORDS[:5])
    usage = (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens)
    assert usage == (PROMPT_WORDS, 5, PROMPT_WORDS + 5)
    assert "content-encoding" not in raw.headers
    assert raw.headers["content-length"] == str(len(raw.http_response.content))
    assert logged_tokens(openai_gateway, request_id) == usage
    # the gateway asked for an uncompressed answer; the provider compressed anyway
    assert sent_to_provider(openai_gateway, request_id)["headers"]["accept-encoding"] == "identity"


@pytest.mark.parametrize("coding", CODINGS)
def test_openai_streamed_chat(openai_gateway: Gateway, coding: str) -> None:
    request_id = _new_id(f"stream-{coding}")
    with openai_client(openai_gateway, request_id, coding).chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=7, stream=True, stream_options={"include_usage": True}
    ) as response:
        assert "content-encoding" not in response.headers
        chunks = list(response.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == " ".join(WORDS[:7])
    usage = (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens, chunks[-1].usage.total_tokens)
    assert usage == (PROMPT_WORDS, 7, PROMPT_WORDS + 7)
    assert logged_tokens(openai_gateway, request_id) == usage


def test_openai_corrupt_answer_is_a_502_in_openais_shape(openai_gateway: Gateway) -> None:
    request_id = _new_id("corrupt")
    client = openai_client(openai_gateway, request_id, "gzip", **{"x-testupstream-body": CORRUPT_GZIP})
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert caught.value.status_code == 502
    assert caught.value.body == {"type": "api_error", "code": "502", "message": DECODE_ERROR}
    entry = openai_gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert entry["response_code"] == 502


def test_openai_corrupt_stream_raises_the_decode_error_in_the_sdk(openai_gateway: Gateway) -> None:
    extra = {"x-testupstream-body": CORRUPT_GZIP, "x-testupstream-content-type": "text/event-stream"}
    client = openai_client(openai_gateway, _new_id("corrupt-stream"), "gzip", **extra)
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError) as caught:
        list(stream)
    assert caught.value.message == DECODE_ERROR


def test_openai_compressed_provider_error_is_read(openai_gateway: Gateway) -> None:
    client = openai_client(openai_gateway, _new_id("error"), "br", **{"x-testupstream-status": "429"})
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert caught.value.body["message"] == "testupstream: forced status 429"  # the provider's own, decoded


# ---- Anthropic SDK → Anthropic-schema backend (pass-through), OpenAI SDK → it (translated) ----------------


@pytest.mark.parametrize("coding", CODINGS)
def test_anthropic_messages(anthropic_gateway: Gateway, coding: str) -> None:
    request_id = _new_id(f"messages-{coding}")
    raw = anthropic_client(anthropic_gateway, request_id, coding).messages.with_raw_response.create(
        model="claude-sonnet-4-6", messages=MESSAGES, max_tokens=5
    )
    message = raw.parse()
    assert message.content[0].text == " ".join(WORDS[:5])  # type: ignore[union-attr]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (PROMPT_WORDS, 5)
    assert "content-encoding" not in raw.headers
    assert raw.headers["content-length"] == str(len(raw.http_response.content))
    assert logged_tokens(anthropic_gateway, request_id) == (PROMPT_WORDS, 5, PROMPT_WORDS + 5)


@pytest.mark.parametrize("coding", CODINGS)
def test_anthropic_streamed_messages(anthropic_gateway: Gateway, coding: str) -> None:
    request_id = _new_id(f"messages-stream-{coding}")
    with anthropic_client(anthropic_gateway, request_id, coding).messages.stream(
        model="claude-sonnet-4-6", messages=MESSAGES, max_tokens=7
    ) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    assert text == " ".join(WORDS[:7])
    assert (message.usage.input_tokens, message.usage.output_tokens) == (PROMPT_WORDS, 7)
    assert logged_tokens(anthropic_gateway, request_id) == (PROMPT_WORDS, 7, PROMPT_WORDS + 7)


@pytest.mark.parametrize("coding", ["gzip", "br"])
def test_openai_sdk_streamed_chat_translated_from_compressed_anthropic_events(
    anthropic_gateway: Gateway, coding: str
) -> None:
    request_id = _new_id(f"translated-{coding}")
    chunks = list(
        openai_client(anthropic_gateway, request_id, coding).chat.completions.create(
            model="claude-sonnet-4-5",
            messages=MESSAGES,
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == " ".join(WORDS[:6])
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (PROMPT_WORDS, 6)
    assert logged_tokens(anthropic_gateway, request_id) == (PROMPT_WORDS, 6, PROMPT_WORDS + 6)


def test_anthropic_corrupt_answer_is_a_502_in_anthropics_shape(anthropic_gateway: Gateway) -> None:
    client = anthropic_client(anthropic_gateway, _new_id("corrupt"), "gzip", **{"x-testupstream-body": CORRUPT_GZIP})
    with pytest.raises(anthropic.InternalServerError) as caught:
        client.messages.create(model="claude-sonnet-4-6", messages=MESSAGES, max_tokens=5)
    assert caught.value.status_code == 502
    assert caught.value.body == {"type": "error", "error": {"type": "api_error", "message": DECODE_ERROR}}


def test_anthropic_corrupt_stream_raises_the_decode_error_in_the_sdk(anthropic_gateway: Gateway) -> None:
    extra = {"x-testupstream-body": CORRUPT_GZIP, "x-testupstream-content-type": "text/event-stream"}
    client = anthropic_client(anthropic_gateway, _new_id("corrupt-stream"), "gzip", **extra)
    with pytest.raises(anthropic.APIStatusError) as caught:
        list(client.messages.create(model="claude-sonnet-4-6", messages=MESSAGES, max_tokens=5, stream=True))
    assert caught.value.body == {"type": "error", "error": {"type": "api_error", "message": DECODE_ERROR}}
