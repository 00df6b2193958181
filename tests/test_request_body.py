"""The router's reading of the client request: what it refuses, and in whose words (extproc/request.py)."""

from __future__ import annotations

import json

import orjson
import pytest

from tokenvoy.extproc.errors import GatewayError
from tokenvoy.extproc.request import MAX_MODEL_LENGTH, check_identity_headers, duplicate_key, read_body
from tokenvoy.extproc.translate.base import ClientAPI
from tokenvoy.pb.envoy.config.core.v3.base_pb2 import HeaderValue

CHAT = ClientAPI.OPENAI_CHAT
MESSAGES = ClientAPI.ANTHROPIC_MESSAGES
HI = [{"role": "user", "content": "hi"}]


def _refused(raw: bytes, api: ClientAPI = CHAT) -> str:
    with pytest.raises(GatewayError) as excinfo:
        read_body(raw, api)
    assert excinfo.value.status == 400
    return excinfo.value.message


@pytest.mark.parametrize("char", ["\x00", "\r", "\n", "\t", "\x1b", "\x7f"])
def test_a_model_name_with_a_control_character_is_refused_naming_it(char):
    message = _refused(orjson.dumps({"model": f"gpt-4o{char}x", "messages": HI}))
    assert message == (
        f"invalid `model`: it contains the control character U+{ord(char):04X}, which an HTTP header cannot carry"
    )


def test_a_model_name_longer_than_the_limit_is_refused_with_its_length():
    message = _refused(orjson.dumps({"model": "g" * 70_000, "messages": HI}))
    assert message == "invalid `model`: 70000 characters, longer than the 256 a model name may have"


def test_real_model_names_pass():
    for model in (
        "gpt-4o-mini",
        "ft:gpt-4o-mini-2024-07-18:my-org:custom-suffix:9abc123",
        "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6",
        "claude-sonnet-4-5@20250929",
        "modèle-é",  # non-ASCII letters are valid header bytes (UTF-8)
        "m" * MAX_MODEL_LENGTH,
    ):
        assert read_body(orjson.dumps({"model": model, "messages": HI}), CHAT).model == model


@pytest.mark.parametrize(
    ("value", "name"), [("yes", "a string"), (1, "an integer"), (0.0, "a decimal"), ({}, "an object"), ([], "an array")]
)
def test_stream_must_be_a_boolean_in_openais_words(value, name):
    message = _refused(orjson.dumps({"model": "m", "messages": HI, "stream": value}))
    assert message == f"Invalid type for 'stream': expected a boolean, but got {name} instead."
    completions = _refused(orjson.dumps({"model": "m", "prompt": "p", "stream": value}), ClientAPI.OPENAI_COMPLETIONS)
    assert completions == message


def test_stream_must_be_a_boolean_in_anthropics_words():
    raw = orjson.dumps({"model": "m", "max_tokens": 5, "messages": HI, "stream": "yes"})
    assert _refused(raw, MESSAGES) == "stream: Input should be a valid boolean"


@pytest.mark.parametrize(("stream", "streams"), [(True, True), (False, False), (None, False)])
def test_a_boolean_or_null_stream_is_read(stream, streams):
    assert read_body(orjson.dumps({"model": "m", "messages": HI, "stream": stream}), CHAT).stream is streams


@pytest.mark.parametrize(
    ("max_tokens", "message"),
    [
        (None, "max_tokens: Field required"),
        ("5", "max_tokens: Input should be a valid integer"),
        (True, "max_tokens: Input should be a valid integer"),
        (0, "max_tokens: Input should be greater than or equal to 1"),
    ],
)
def test_anthropic_messages_need_max_tokens(max_tokens, message):
    body = {"model": "m", "messages": HI} | ({} if max_tokens is None else {"max_tokens": max_tokens})
    assert _refused(orjson.dumps(body), MESSAGES) == message
    assert read_body(orjson.dumps(body), CHAT).model == "m"  # OpenAI's chat API has no such requirement


def test_a_token_count_needs_no_max_tokens_never_streams_and_words_errors_as_anthropic():
    count = ClientAPI.ANTHROPIC_COUNT_TOKENS
    read = read_body(orjson.dumps({"model": "m", "messages": HI, "stream": True}), count)
    assert (read.model, read.stream) == ("m", False)
    assert _refused(orjson.dumps({"messages": HI}), count) == "model: Field required"


def test_anthropic_model_wording():
    assert _refused(orjson.dumps({"max_tokens": 5, "messages": HI}), MESSAGES) == "model: Field required"
    assert _refused(orjson.dumps({"model": 3, "max_tokens": 5}), MESSAGES) == "model: Input should be a valid string"


@pytest.mark.parametrize("key", ["model", "stream", "stream_options", "max_tokens", "max_completion_tokens"])
def test_a_field_tokenvoy_reads_sent_twice_is_refused(key):
    value = {"model": '"a"', "stream": "true", "stream_options": "{}"}.get(key, "5")
    raw = f'{{"model":"m","messages":[],"{key}":{value},"{key}":{value}}}'.encode()
    assert _refused(raw) == f"the request body has the field `{key}` more than once: send each field once"


def test_a_key_spelled_with_escapes_is_the_same_key():
    raw = b'{"model":"cheap","\\u006dodel":"expensive","messages":[]}'
    assert json.loads(raw)["model"] == "expensive"  # what a provider's parser reads
    assert _refused(raw) == "the request body has the field `model` more than once: send each field once"


def test_the_same_word_elsewhere_is_not_a_duplicate():
    # "model" as a nested key and as a string value: quoted twice in the bytes, once at the top level.
    raw = orjson.dumps({"model": "m", "messages": [{"role": "model", "content": "model"}], "tools": [{"model": 1}]})
    assert duplicate_key(raw, orjson.loads(raw)) is None
    assert read_body(raw, CHAT).model == "m"
    nested = b'{"metadata":{"stream":1,"stream":2},"model":"m","stream":false}'
    assert duplicate_key(nested, orjson.loads(nested)) is None


def test_other_duplicate_keys_are_left_to_the_provider():
    raw = b'{"model":"m","temperature":1,"temperature":0,"messages":[]}'
    assert read_body(raw, CHAT).body["temperature"] == 0


def _headers(*pairs: tuple[str, str]) -> list[HeaderValue]:
    return [HeaderValue(key=key, raw_value=value.encode()) for key, value in pairs]


def test_a_budget_header_sent_twice_is_refused():
    identity = {"x-user-id": True}
    with pytest.raises(GatewayError) as excinfo:
        check_identity_headers(_headers(("x-user-id", "alice"), ("x-user-id", "bob")), identity)
    assert excinfo.value.status == 400
    assert excinfo.value.message == (
        "the header `x-user-id` is sent more than once: a token budget counts one value, send it once"
    )
    with pytest.raises(GatewayError):  # an Exact selector's header too: Envoy would match neither copy
        check_identity_headers(_headers(("x-team", "a"), ("x-team", "a")), {"x-team": False})


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_per_value_budget_header_is_refused(value):
    with pytest.raises(GatewayError) as excinfo:
        check_identity_headers(_headers(("x-user-id", value)), {"x-user-id": True})
    assert excinfo.value.message == (
        "the header `x-user-id` is empty: token budgets count per value of it; send a value or leave it out"
    )


def test_other_headers_and_single_values_pass():
    identity = {"x-user-id": True, "x-team": False}
    check_identity_headers(_headers(("x-user-id", "alice"), ("x-team", ""), ("accept", "a"), ("accept", "b")), identity)
