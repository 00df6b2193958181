"""The fake providers' credential checks: each refuses a missing or unknown credential as the provider does."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from tokenvoy.testupstream import credentials
from tokenvoy.testupstream.credentials import H_KEYS, H_REQUIRE, Policy
from tokenvoy.testupstream.server import BackgroundServer, run_in_thread

STRICT = {H_REQUIRE: "true", H_KEYS: "sk-good,good-token"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
CLAUDE = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
GEMINI = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
CONVERSE = {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}
VERTEX = "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent"


@pytest.fixture(scope="module")
def upstream() -> Iterator[BackgroundServer]:
    with run_in_thread() as server:
        yield server


@pytest.fixture(scope="module")
def web(upstream: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=upstream.url) as c:
        yield c


# ---- OpenAI ---------------------------------------------------------------------------------------------


def test_openai_without_a_key_is_401_when_keys_are_required(web: httpx.Client) -> None:
    r = web.post("/v1/chat/completions", json=CHAT, headers=STRICT)
    assert r.status_code == 401
    error = r.json()["error"]
    assert error["message"].startswith("You didn't provide an API key.")
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", None, None)


def test_openai_unknown_key_is_401_invalid_api_key_with_the_key_masked(web: httpx.Client) -> None:
    r = web.post("/v1/chat/completions", json=CHAT, headers={**STRICT, "authorization": "Bearer sk-wrong-key-123"})
    assert r.status_code == 401
    error = r.json()["error"]
    assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
    assert "sk-wrong-key-123" not in error["message"] and error["message"].startswith("Incorrect API key provided")


def test_openai_known_key_is_answered(web: httpx.Client) -> None:
    r = web.post("/v1/chat/completions", json=CHAT, headers={**STRICT, "authorization": "Bearer sk-good"})
    assert r.status_code == 200, r.text


def test_openai_keyless_is_answered_unless_required_but_a_bad_authorization_is_not(web: httpx.Client) -> None:
    assert web.post("/v1/chat/completions", json=CHAT).status_code == 200  # the keyless demo config
    assert web.post("/v1/chat/completions", json=CHAT, headers={"authorization": "Basic eDp5"}).status_code == 401
    assert web.post("/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer"}).status_code == 401


def test_openai_sdk_sees_authentication_error(upstream: BackgroundServer) -> None:
    client = openai.OpenAI(base_url=upstream.url + "/v1", api_key="sk-wrong", max_retries=0)
    with client, pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(**CHAT, extra_headers=STRICT)  # type: ignore[arg-type]
    assert caught.value.code == "invalid_api_key"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/responses", {"model": "gpt-5", "input": "hi"}),
        ("/v1/embeddings", {"model": "text-embedding-3-small", "input": "hi"}),
        ("/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "hi"}),
    ],
)
def test_every_openai_route_checks_the_key(web: httpx.Client, path: str, body: dict) -> None:
    refused = web.post(path, json=body, headers={**STRICT, "authorization": "Bearer nope"})
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    assert web.post(path, json=body, headers={**STRICT, "authorization": "Bearer sk-good"}).status_code == 200


# ---- Anthropic ------------------------------------------------------------------------------------------


def test_anthropic_unknown_key_is_401_authentication_error(web: httpx.Client) -> None:
    headers = {**STRICT, "x-api-key": "sk-ant-wrong", "anthropic-version": "2023-06-01"}
    r = web.post("/v1/messages", json=CLAUDE, headers=headers)
    assert (r.status_code, r.json()) == (
        401,
        {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}},
    )


def test_anthropic_key_is_required_even_without_the_switch(web: httpx.Client) -> None:
    r = web.post("/v1/messages", json=CLAUDE, headers={"anthropic-version": "2023-06-01"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


def test_anthropic_sdk_with_a_known_key_or_auth_token(upstream: BackgroundServer) -> None:
    for client in (
        anthropic.Anthropic(base_url=upstream.url, api_key="sk-good", max_retries=0),
        anthropic.Anthropic(base_url=upstream.url, auth_token="good-token", max_retries=0),
    ):
        with client:
            message = client.messages.create(**CLAUDE, extra_headers=STRICT)  # type: ignore[arg-type]
            assert message.stop_reason == "max_tokens"
    bad = anthropic.Anthropic(base_url=upstream.url, api_key="sk-bad", max_retries=0)
    with bad, pytest.raises(anthropic.AuthenticationError):
        bad.messages.count_tokens(model="claude-x", messages=CLAUDE["messages"], extra_headers=STRICT)  # type: ignore[arg-type]


# ---- Azure OpenAI ---------------------------------------------------------------------------------------

AZURE = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"


def test_azure_wants_api_key_or_entra_token(web: httpx.Client) -> None:
    missing = web.post(AZURE, json=CHAT, headers=STRICT)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "401"
    assert "invalid subscription key" in missing.json()["error"]["message"]
    wrong = web.post(AZURE, json=CHAT, headers={**STRICT, "api-key": "nope"})
    assert wrong.status_code == 401
    token = web.post(AZURE, json=CHAT, headers={**STRICT, "authorization": "Bearer expired"})
    assert token.status_code == 401 and "Access token is missing, invalid" in token.json()["error"]["message"]
    assert web.post(AZURE, json=CHAT, headers={**STRICT, "api-key": "sk-good"}).status_code == 200
    assert web.post(AZURE, json=CHAT, headers={**STRICT, "authorization": "Bearer good-token"}).status_code == 200


def test_azure_sdk_sees_authentication_error(upstream: BackgroundServer) -> None:
    client = openai.AzureOpenAI(azure_endpoint=upstream.url, api_version="2024-10-21", api_key="nope", max_retries=0)
    with client, pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt-4o", messages=CHAT["messages"], extra_headers=STRICT)  # type: ignore[arg-type]


# ---- Google Vertex AI -----------------------------------------------------------------------------------


def test_vertex_wants_an_oauth_token_or_api_key(web: httpx.Client) -> None:
    missing = web.post(VERTEX, json=GEMINI, headers=STRICT)
    assert missing.status_code == 401
    error = missing.json()["error"]
    assert (error["code"], error["status"]) == (401, "UNAUTHENTICATED")
    assert error["message"].startswith("Request is missing required authentication credential.")
    assert error["details"][0]["reason"] == "CREDENTIALS_MISSING"
    bad_token = web.post(VERTEX, json=GEMINI, headers={**STRICT, "authorization": "Bearer ya29.nope"})
    assert bad_token.status_code == 401 and bad_token.json()["error"]["status"] == "UNAUTHENTICATED"
    bad_key = web.post(VERTEX, json=GEMINI, headers={**STRICT, "x-goog-api-key": "AIza-nope"})
    assert bad_key.status_code == 400
    assert bad_key.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert bad_key.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    assert web.post(VERTEX + "?key=sk-good", json=GEMINI, headers=STRICT).status_code == 200
    assert web.post(VERTEX, json=GEMINI, headers={**STRICT, "authorization": "Bearer good-token"}).status_code == 200


def test_claude_on_vertex_checks_the_token_too(web: httpx.Client) -> None:
    path = "/v1/projects/p/locations/us-east5/publishers/anthropic/models/claude-x:rawPredict"
    body = {"anthropic_version": "vertex-2023-10-16", "max_tokens": 5, "messages": CLAUDE["messages"]}
    assert web.post(path, json=body, headers=STRICT).status_code == 401
    assert web.post(path, json=body, headers={**STRICT, "authorization": "Bearer good-token"}).status_code == 200


# ---- AWS Bedrock ----------------------------------------------------------------------------------------


def test_bedrock_unsigned_is_403_missing_authentication_token_when_required(web: httpx.Client) -> None:
    r = web.post("/model/amazon.nova-lite-v1:0/converse", json=CONVERSE, headers=STRICT)
    assert (r.status_code, r.json()) == (403, {"message": "Missing Authentication Token"})
    assert r.headers["x-amzn-errortype"].startswith("MissingAuthenticationTokenException:")
    assert web.post("/model/amazon.nova-lite-v1:0/converse", json=CONVERSE).status_code == 200  # keyless demo


def test_bedrock_api_key_must_be_known(web: httpx.Client) -> None:
    path = "/model/amazon.nova-lite-v1:0/converse"
    wrong = web.post(path, json=CONVERSE, headers={**STRICT, "authorization": "Bearer ABSK-nope"})
    assert wrong.status_code == 403 and wrong.headers["x-amzn-errortype"].startswith("UnrecognizedClientException")
    assert web.post(path, json=CONVERSE, headers={**STRICT, "authorization": "Bearer good-token"}).status_code == 200


# ---- the policy -----------------------------------------------------------------------------------------


def test_policy_from_environment_and_headers() -> None:
    default = credentials.from_environ({credentials.KEYS_ENV: "a, b", credentials.REQUIRE_ENV: "1"})
    assert default == Policy(True, frozenset({"a", "b"}))
    assert credentials.from_environ({}) == Policy(False, None)
    assert credentials.policy({}, default) is default
    assert credentials.policy({H_REQUIRE: "false"}, default) == Policy(False, frozenset({"a", "b"}))
    assert credentials.policy({H_KEYS: "c"}, Policy()) == Policy(False, frozenset({"c"}))
