"""Requests Envoy cannot carry, or whose meaning is ambiguous, are refused with a 400 naming the problem.

Through ``tokenvoy run`` with the default config (a per-``x-user-id`` budget, an OpenAI-schema fake).
Before: a model name with CR/LF, NUL or 70 KB gave Envoy's empty 500; duplicate ``x-user-id`` headers
charged the first copy and an empty one a shared ``""`` counter; ``stream: "yes"`` went through as a
non-stream; ``/anthropic/v1/messages`` without ``max_tokens`` was translated for OpenAI.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from tests.integration.conftest import Gateway

HI = [{"role": "user", "content": "hi"}]


def _post(gateway: Gateway, body: Any, path: str = "/v1/chat/completions", **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"content-type": "application/json", "x-user-id": "validation", **headers}
    return httpx.post(gateway.url + path, content=content, headers=headers, timeout=10)


def _openai_error(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["code"] == "400", body
    return body["error"]["message"]


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("gpt-4o\r\nx-injected: 1", "invalid `model`: it contains the control character U+000D"),
        ("gpt\x00x", "invalid `model`: it contains the control character U+0000"),
        ("g" * 70_000, "invalid `model`: 70000 characters, longer than the 256 a model name may have"),
    ],
)
def test_a_model_name_envoy_cannot_carry_is_a_400_naming_it(gateway: Gateway, model: str, message: str):
    assert _openai_error(_post(gateway, {"model": model, "messages": HI})).startswith(message)


def test_a_model_name_envoy_cannot_carry_on_anthropic_paths_is_in_anthropics_shape(gateway: Gateway):
    response = _post(gateway, {"model": "a\nb", "max_tokens": 5, "messages": HI}, "/anthropic/v1/messages")
    assert response.status_code == 400
    assert response.json() == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "invalid `model`: it contains the control character U+000A, which an HTTP header cannot carry",
        },
    }


@pytest.mark.parametrize(("stream", "name"), [("yes", "a string"), (1, "an integer")])
def test_a_stream_that_is_not_a_boolean_is_a_400(gateway: Gateway, stream: Any, name: str):
    message = _openai_error(_post(gateway, {"model": "gpt-4o-mini", "messages": HI, "stream": stream}))
    assert message == f"Invalid type for 'stream': expected a boolean, but got {name} instead."


def test_anthropic_messages_without_max_tokens_are_refused_toward_an_openai_backend(gateway: Gateway):
    response = _post(gateway, {"model": "gpt-4o-mini", "messages": HI}, "/anthropic/v1/messages")
    assert response.status_code == 400
    assert response.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }
    answered = _post(gateway, {"model": "gpt-4o-mini", "max_tokens": 5, "messages": HI}, "/anthropic/v1/messages")
    assert answered.status_code == 200, answered.text


def test_a_body_with_two_model_keys_is_refused(gateway: Gateway):
    raw = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"model":"gpt-4o"}'
    message = _openai_error(_post(gateway, raw))
    assert message == "the request body has the field `model` more than once: send each field once"


def _with_headers(gateway: Gateway, headers: list[tuple[str, str]]) -> httpx.Response:
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": HI})
    return httpx.post(
        gateway.url + "/v1/chat/completions",
        content=body,
        headers=[("content-type", "application/json"), *headers],
        timeout=10,
    )


def test_two_user_ids_are_refused(gateway: Gateway):
    response = _with_headers(gateway, [("x-user-id", "alice"), ("x-user-id", "bob")])
    assert _openai_error(response) == (
        "the header `x-user-id` is sent more than once: a token budget counts one value, send it once"
    )


def test_an_empty_user_id_is_refused_not_counted_in_a_shared_bucket(gateway: Gateway):
    response = _with_headers(gateway, [("x-user-id", "")])
    assert _openai_error(response) == (
        "the header `x-user-id` is empty: token budgets count per value of it; send a value or leave it out"
    )
    assert _with_headers(gateway, [("x-user-id", "carol")]).status_code == 200
