"""Chat through real Envoy + extproc + ratelimit, as a user of the OpenAI SDK sees it."""

from __future__ import annotations

import uuid

import httpx
import openai
import pytest
from openai import OpenAI

from tests.integration.conftest import BUDGET_TOKENS, Gateway

MESSAGES = [{"role": "user", "content": "hello there gateway"}]


def client(gateway: Gateway, user: str | None = None, **headers: str) -> OpenAI:
    if user:
        headers["x-user-id"] = user
    return OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", default_headers=headers, max_retries=0)


def direct(gateway: Gateway) -> OpenAI:
    """The fake provider without the gateway: the oracle for what the gateway must pass through."""
    return OpenAI(base_url=f"{gateway.fake_url}/v1", api_key="unused", max_retries=0)


def test_plain_chat_returns_the_providers_answer_and_usage(gateway: Gateway) -> None:
    reply = client(gateway).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=5)
    expected = direct(gateway).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=5)

    assert reply.choices[0].message.content == expected.choices[0].message.content
    assert len(reply.choices[0].message.content.split()) == 5
    assert reply.model == "gpt-4o-mini"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (3, 5, 8)


def test_streamed_chat_gives_the_same_text_and_a_final_usage_chunk(gateway: Gateway) -> None:
    plain = client(gateway).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=7)
    chunks = list(
        client(gateway).chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            max_tokens=7,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (3, 7)


def test_stream_without_include_usage_hides_the_forced_usage_chunk_but_logs_tokens(gateway: Gateway) -> None:
    request_id = f"stream-{uuid.uuid4()}"
    stream = client(gateway, **{"x-request-id": request_id}).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=4, stream=True
    )
    chunks = list(stream)
    assert all(chunk.choices for chunk in chunks), "the client did not ask for a usage chunk"
    assert all(chunk.usage is None for chunk in chunks)
    # extproc forced include_usage upstream, so the tokens are still counted
    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert (entry["genai_tokens_input"], entry["genai_tokens_output"], entry["genai_tokens_total"]) == (3, 4, 7)
    received = httpx.get(f"{gateway.fake_url}/__testupstream/requests").json()
    sent = next(r for r in received if r["headers"].get("x-request-id") == request_id)
    assert '"include_usage":true' in sent["body"].replace(" ", "")


def test_access_log_line_carries_model_backend_and_tokens(gateway: Gateway) -> None:
    request_id = f"log-{uuid.uuid4()}"
    client(gateway, user="log-user", **{"x-request-id": request_id}).chat.completions.create(
        model="claude-or-anything", messages=MESSAGES, max_tokens=6
    )
    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert entry["response_code"] == 200
    assert entry["genai_model_name"] == "claude-or-anything"
    assert entry["genai_response_model"] == "claude-or-anything"
    assert entry["genai_backend_name"] == "fake"
    assert entry["genai_tokens_input"] == 3
    assert entry["genai_tokens_output"] == 6
    assert entry["genai_tokens_total"] == 9
    assert entry["x-user-id"] == "log-user"


def test_internal_headers_never_reach_the_provider(gateway: Gateway) -> None:
    request_id = f"hdr-{uuid.uuid4()}"
    client(gateway, **{"x-request-id": request_id}).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=1
    )
    received = httpx.get(f"{gateway.fake_url}/__testupstream/requests").json()
    sent = next(r for r in received if r["headers"].get("x-request-id") == request_id)
    assert not [name for name in sent["headers"] if name.startswith("x-tokenvoy")]
    assert "x-ai-eg-original-path" not in sent["headers"]
    # the SDK asks for gzip; the gateway asks the provider for an uncompressed answer (upstream.py)
    assert sent["headers"]["accept-encoding"] == "identity"


def test_user_over_budget_gets_429_with_ratelimit_headers_while_others_are_served(gateway: Gateway) -> None:
    user = f"budget-{uuid.uuid4()}"
    spender = client(gateway, user=user)
    spent = 0
    rejected: openai.RateLimitError | None = None
    # each request costs 3 + 16 = 19 tokens; the charge lands after the response, so allow two in flight
    for _ in range(BUDGET_TOKENS // 19 + 3):
        try:
            reply = spender.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=16)
        except openai.RateLimitError as error:
            rejected = error
            break
        spent += reply.usage.total_tokens
    assert rejected is not None, f"spent {spent} tokens of a {BUDGET_TOKENS} budget without a 429"
    assert spent > BUDGET_TOKENS, "rejected before the budget was used up"
    assert spent <= BUDGET_TOKENS + 2 * 19
    headers = rejected.response.headers
    assert headers["x-ratelimit-remaining"] == "0"
    assert headers["x-ratelimit-limit"].startswith(str(BUDGET_TOKENS))
    assert int(headers["x-ratelimit-reset"]) > 0
    body = rejected.response.json()
    assert body["error"]["type"] == "rate_limit_exceeded"
    assert body["error"]["code"] == "429"

    other = client(gateway, user=f"other-{uuid.uuid4()}").chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=1
    )
    assert other.choices[0].message.content


def test_remaining_budget_is_reported_on_every_answer(gateway: Gateway) -> None:
    user = f"remaining-{uuid.uuid4()}"
    first = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        headers={"x-user-id": user},
        json={"model": "m", "messages": MESSAGES, "max_tokens": 2},
    )
    assert first.status_code == 200
    assert first.headers["x-ratelimit-remaining"] == str(BUDGET_TOKENS)


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b'{"model": "gpt-4o-mini", "messages": [', 400, "not valid JSON"),
        (b'{"messages": []}', 400, "`model`"),
        (b"[1, 2]", 400, "JSON object"),
    ],
)
def test_bad_requests_get_an_openai_error_naming_the_problem(
    gateway: Gateway, body: bytes, status: int, fragment: str
) -> None:
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == str(status)
    assert fragment in error["message"]


def test_unknown_path_is_a_404_in_openai_shape(gateway: Gateway) -> None:
    request_id = f"nope-{uuid.uuid4()}"
    response = httpx.post(f"{gateway.url}/v1/nope", json={"model": "m"}, headers={"x-request-id": request_id})
    assert response.status_code == 404
    assert "/v1/nope" in response.json()["error"]["message"]
    assert response.json()["error"]["type"] == "invalid_request_error"  # OpenAI's word, not Anthropic's
    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert entry["x-envoy-origin-path"] == "/v1/nope"  # recorded even when extproc answers itself


def test_provider_errors_reach_the_client_with_their_status(gateway: Gateway) -> None:
    with pytest.raises(openai.InternalServerError) as raised:
        client(gateway, **{"x-testupstream-status": "503"}).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES
        )
    assert raised.value.status_code == 503


@pytest.mark.parametrize("stream", [False, True])
def test_a_provider_refusal_is_logged_with_the_backend_that_refused(gateway: Gateway, stream: bool) -> None:
    """The access log names the backend of a 4xx answer too: that is where one looks for who refused."""
    request_id = f"refused-{uuid.uuid4()}"
    with pytest.raises(openai.BadRequestError):
        client(gateway, **{"x-testupstream-status": "400", "x-request-id": request_id}).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=stream
        )
    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert (entry["response_code"], entry["genai_backend_name"]) == (400, "fake")
    assert entry["genai_tokens_total"] in (0, None, "-"), entry


def test_tool_calls_round_trip_through_the_gateway(gateway: Gateway) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
    request_id = f"tools-{uuid.uuid4()}"
    reply = client(gateway, **{"x-request-id": request_id}).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, tools=[tool]
    )
    (call,) = reply.choices[0].message.tool_calls or []
    assert (reply.choices[0].finish_reason, call.function.name) == ("tool_calls", "get_weather")
    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert entry["genai_tokens_output"] == 2  # the call: 1 + one argument
    history = [
        *MESSAGES,
        {"role": "assistant", "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    chunks = list(
        client(gateway).chat.completions.create(model="gpt-4o-mini", messages=history, tools=[tool], stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
