"""Provider errors through the router (translator contract v2): the router collects a non-2xx body whole and
hands it to ``translate_error``; a rewritten error reaches the client as JSON with no stale length, one the
client's API already speaks goes through byte for byte."""

from __future__ import annotations

import gzip

import orjson
import pytest

from tests.test_decoding import CHAT, Exchange, _attributes, _client_body, _header_changes, _headers, _metadata
from tokenvoy.config.defaults import default_config_yaml
from tokenvoy.config.loader import load_text
from tokenvoy.extproc.registry import RequestRegistry
from tokenvoy.extproc.router import RouterStream
from tokenvoy.extproc.runtime import Runtime
from tokenvoy.extproc.server import build_runtime
from tokenvoy.pb.envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as pm
from tokenvoy.pb.envoy.service.ext_proc.v3 import external_processor_pb2 as ep

ANTHROPIC_OVERLOADED = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
OPENAI_RATE_LIMIT = b'{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}'


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    return build_runtime(load_text(default_config_yaml({}), "<default>"))


def test_an_error_in_another_shape_is_rewritten_whole_as_json_without_its_length(runtime: Runtime) -> None:
    exchange = Exchange(runtime, "/v1/chat/completions", {**CHAT, "stream": True}, "Anthropic")
    headers = {"content-type": "text/plain", "content-length": str(len(ANTHROPIC_OVERLOADED))}
    pieces = [ANTHROPIC_OVERLOADED[:20], ANTHROPIC_OVERLOADED[20:]]
    replies = exchange.answer(529, headers, pieces)

    assert _header_changes(replies[0], "response_headers") == ({}, set())  # decided with the whole body
    assert replies[1].response_body.response.body_mutation.body == b""  # held until the body is whole
    set_at_end, removed_at_end = _header_changes(replies[-1], "response_body")
    assert set_at_end == {"content-type": "application/json"}
    assert removed_at_end == {"content-length"}
    assert orjson.loads(_client_body(pieces, replies)) == {
        "type": "error",
        "error": {"type": "overloaded_error", "code": "529", "message": "Overloaded"},
    }


def test_an_error_already_in_the_clients_shape_goes_through_untouched(runtime: Runtime) -> None:
    exchange = Exchange(runtime, "/v1/chat/completions", CHAT, "OpenAI")
    headers = {"content-type": "application/json", "content-length": str(len(OPENAI_RATE_LIMIT))}
    replies = exchange.answer(429, headers, [OPENAI_RATE_LIMIT])

    # Nothing to read in its body: the stream ends at the headers, which switch the body off (one message less)
    assert len(replies) == 1 and exchange.router.done
    assert replies[0].mode_override.response_body_mode == pm.ProcessingMode.NONE
    assert _header_changes(replies[0], "response_headers") == ({}, set())
    assert _client_body([OPENAI_RATE_LIMIT], replies) == OPENAI_RATE_LIMIT
    metadata = _metadata(replies[0])  # what the access log and a budget's charge read, set with the headers
    assert metadata["backend_name"] == "fake" and metadata["llm_total_token"] == 0


def test_an_error_the_translator_rewrites_is_still_read_whole(runtime: Runtime) -> None:
    exchange = Exchange(runtime, "/anthropic/v1/messages", {**CHAT, "max_tokens": 4}, "OpenAI")
    replies = exchange.answer(429, {"content-type": "application/json"}, [OPENAI_RATE_LIMIT])

    assert not replies[0].HasField("mode_override")
    assert len(replies) == 2 and replies[1].response_body.response.body_mutation.body


def test_envoys_own_reply_ends_the_stream_at_its_headers(runtime: Runtime) -> None:
    registry = RequestRegistry()
    router = RouterStream(runtime, registry)
    headers = {":path": "/v1/chat/completions", ":method": "POST", "content-type": "application/json"}
    router.handle(_attributes(ep.ProcessingRequest(request_headers=_headers(headers))))
    router.handle(ep.ProcessingRequest(request_body=ep.HttpBody(body=orjson.dumps(CHAT), end_of_stream=True)))
    # the budget's 429 (Envoy's local reply): no upstream attempt ran
    local_reply = {":status": "429", "content-type": "application/json"}
    reply = router.handle(ep.ProcessingRequest(response_headers=_headers(local_reply)))

    assert router.done
    assert reply.mode_override.response_body_mode == pm.ProcessingMode.NONE
    assert router.messages == {"request_headers": 1, "request_body": 1, "response_headers": 1}
    router.close()


def test_a_compressed_error_is_decoded_then_rewritten_with_its_new_length(runtime: Runtime) -> None:
    exchange = Exchange(runtime, "/anthropic/v1/messages", {**CHAT, "max_tokens": 4}, "OpenAI")
    compressed = gzip.compress(OPENAI_RATE_LIMIT)
    headers = {"content-type": "application/json", "content-encoding": "gzip", "content-length": str(len(compressed))}
    replies = exchange.answer(429, headers, [compressed])

    _, removed = _header_changes(replies[0], "response_headers")
    assert {"content-encoding", "content-length"} <= removed
    body = _client_body([compressed], replies)
    expected = {"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limit reached"}}
    assert orjson.loads(body) == expected
    set_at_end, _ = _header_changes(replies[-1], "response_body")
    assert set_at_end == {"content-type": "application/json", "content-length": str(len(body))}
