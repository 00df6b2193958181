"""What Claude Code sends, through real Envoy and extproc to the default config's schemas: its beta flags
(all accepted by the fake Anthropic, which refuses flags Anthropic does not document; filtered for Bedrock,
left out for Nova), its mid-conversation system message (translated for OpenAI and Converse), adaptive
thinking, and what its stream reads (message_start's estimate); the access log names the backend of a refusal."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from tests.integration.conftest import Gateway, free_port, gateway_config, start_gateway

BETAS = (
    "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,"
    "thinking-token-count-2026-05-13,effort-2025-11-24"
)
DOCUMENTED = ["interleaved-thinking-2025-05-14", "context-management-2025-06-27", "effort-2025-11-24"]
MESSAGES = [
    {"role": "user", "content": "hello there"},
    {"role": "system", "content": "Answer briefly."},
]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    listener_port, fake_port = free_port(), free_port()
    config = gateway_config(listener_port, fake_port, 10_000_000, showcase=True)
    running = start_gateway(tmp_path_factory.mktemp("claude-code"), config_text=config, fake_port=fake_port)
    try:
        yield running
    finally:
        running.stop()


def _client(gateway: Gateway, request_id: str, **headers: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=f"{gateway.url}/anthropic",
        api_key="unused",
        max_retries=0,
        default_headers={"x-request-id": request_id, "anthropic-beta": BETAS, **headers},
    )


def _sent(gateway: Gateway, request_id: str) -> dict[str, Any]:
    received = httpx.get(f"{gateway.fake_url}/__testupstream/requests").json()
    return next(r for r in received if r["headers"].get("x-request-id") == request_id)


def _create(client: anthropic.Anthropic, model: str, messages: list[dict[str, Any]]) -> anthropic.types.Message:
    return client.messages.create(
        model=model,
        max_tokens=8000,
        messages=messages,  # type: ignore[arg-type]
        thinking={"type": "adaptive"},  # type: ignore[typeddict-item]
        extra_body={"output_config": {"effort": "medium"}, "context_management": {"edits": []}},
    )


def test_claude_on_bedrock_gets_only_the_beta_flags_aws_documents(gateway: Gateway) -> None:
    request_id = f"betas-{uuid.uuid4()}"
    answer = _create(_client(gateway, request_id), "anthropic.claude-haiku-4-5-20251001-v1:0", MESSAGES[:1])
    assert answer.content and answer.stop_reason == "end_turn"
    sent = _sent(gateway, request_id)
    assert orjson.loads(sent["body"])["anthropic_beta"] == DOCUMENTED
    assert "anthropic-beta" not in sent["headers"]


def test_converse_to_nova_gets_no_claude_fields_and_the_system_message_as_a_system_block(gateway: Gateway) -> None:
    """Claude Code's adaptive thinking and beta flags are Claude's: Bedrock answers Nova 400 "extraneous key
    [thinking]" (the fake does too, so the answer proves they were left out)."""
    request_id = f"converse-{uuid.uuid4()}"
    answer = _create(_client(gateway, request_id), "amazon.nova-lite-v1:0", MESSAGES)
    assert answer.content
    sent = orjson.loads(_sent(gateway, request_id)["body"])
    assert "additionalModelRequestFields" not in sent
    assert sent["system"][-1] == {"text": "Answer briefly."}
    assert [m["role"] for m in sent["messages"]] == ["user"]


def test_openai_gets_the_system_message_in_place_and_no_effort_gpt_4o_mini_refuses(gateway: Gateway) -> None:
    request_id = f"openai-{uuid.uuid4()}"
    client = _client(gateway, request_id)
    with client.messages.stream(
        model="gpt-4o-mini",
        max_tokens=32000,
        messages=MESSAGES,  # type: ignore[arg-type]
        thinking={"type": "adaptive"},  # type: ignore[typeddict-item]
        extra_body={"output_config": {"effort": "medium"}},
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    start = next(e for e in events if e.type == "message_start")
    assert start.message.usage.input_tokens == 7 + 2 * 4  # the estimate: (11 + 15 bytes) / 4, 4 a message
    assert final.usage.input_tokens > 0 and final.content
    sent = orjson.loads(_sent(gateway, request_id)["body"])
    assert [m["role"] for m in sent["messages"]] == ["user", "system"]
    assert "reasoning_effort" not in sent  # OpenAI answers 400 to it for gpt-4o-mini
    assert "anthropic-beta" not in _sent(gateway, request_id)["headers"]


def test_a_bedrock_refusal_is_logged_with_its_backend(gateway: Gateway) -> None:
    request_id = f"refused-{uuid.uuid4()}"
    client = _client(gateway, request_id, **{"x-testupstream-status": "400"})
    with pytest.raises(anthropic.BadRequestError):
        _create(client, "anthropic.claude-haiku-4-5-20251001-v1:0", MESSAGES[:1])
    entry = gateway.wait_for_log(lambda e: e.get("x-request-id") == request_id)
    assert (entry["response_code"], entry["genai_backend_name"]) == (400, "fake-bedrock-anthropic")


def test_counting_claude_on_bedrock_sends_the_invoke_body_with_the_documented_flags(gateway: Gateway) -> None:
    request_id = f"count-{uuid.uuid4()}"
    model = "anthropic.claude-haiku-4-5-20251001-v1:0"
    counted = _client(gateway, request_id).messages.count_tokens(model=model, messages=MESSAGES[:1])
    assert counted.input_tokens == 2
    sent = orjson.loads(_sent(gateway, request_id)["body"])
    invoke = orjson.loads(base64.b64decode(sent["input"]["invokeModel"]["body"]))
    assert invoke["anthropic_beta"] == DOCUMENTED


def test_anthropic_gets_every_flag_claude_code_sends_and_the_backends_key(gateway: Gateway) -> None:
    """The fake Anthropic refuses flags Anthropic does not document and, told the only valid key, any other:
    a 200 proves the flags are ones Anthropic takes and the gateway sent the backend's key, not the client's."""
    request_id = f"anthropic-{uuid.uuid4()}"
    client = _client(gateway, request_id, **{"x-testupstream-api-keys": "sk-ant-fake"})
    answer = _create(client, "claude-sonnet-4-6", MESSAGES[:1])
    assert answer.content and answer.stop_reason == "end_turn"
    sent = _sent(gateway, request_id)["headers"]
    assert (sent["anthropic-beta"], sent["x-api-key"]) == (BETAS, "sk-ant-fake")


def test_anthropics_refusals_of_a_flag_and_of_a_key_reach_the_client_as_anthropic_sent_them(gateway: Gateway) -> None:
    flagged = _client(gateway, f"flag-{uuid.uuid4()}", **{"anthropic-beta": BETAS + ",not-a-flag-2099-01-01"})
    with pytest.raises(anthropic.BadRequestError) as bad_flag:
        _create(flagged, "claude-sonnet-4-6", MESSAGES[:1])
    assert "`not-a-flag-2099-01-01` for the `anthropic-beta` header" in str(bad_flag.value)
    keyed = _client(gateway, f"key-{uuid.uuid4()}", **{"x-testupstream-api-keys": "sk-ant-rotated"})
    with pytest.raises(anthropic.AuthenticationError) as bad_key:
        _create(keyed, "claude-sonnet-4-6", MESSAGES[:1])
    assert bad_key.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
    }
