"""What the fake providers refuse as the real APIs do: betas, unknown fields, per-model fields, API versions."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from tokenvoy.testupstream import azure, bedrock_converse
from tokenvoy.testupstream.anthropic_betas import ANTHROPIC_BETAS, BEDROCK_BETAS, unknown_betas
from tokenvoy.testupstream.anthropic_messages import create_message
from tokenvoy.testupstream.openai_chat import KNOWN_FIELDS, chat_completion, takes_reasoning_effort
from tokenvoy.testupstream.server import BackgroundServer, run_in_thread

ANTHROPIC_HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
CLAUDE = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
CONVERSE = {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}


@pytest.fixture(scope="module")
def upstream() -> Iterator[BackgroundServer]:
    with run_in_thread() as server:
        yield server


def _message(headers: dict[str, str], body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    reply = create_message(orjson.dumps(body or CLAUDE), headers, message_id="msg_1")
    assert reply.body is not None
    return reply.status, reply.body


# ---- Anthropic ------------------------------------------------------------------------------------------


def test_unknown_anthropic_beta_is_400_naming_the_flags() -> None:
    status, body = _message(
        {**ANTHROPIC_HEADERS, "anthropic-beta": "interleaved-thinking-2025-05-14,made-up-2099-01-01"}
    )
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith(
        "Unexpected value(s) `made-up-2099-01-01` for the `anthropic-beta` header."
    )


def test_a_stale_beta_date_is_refused_like_a_made_up_one() -> None:
    """The documented flag is dated 2025-05-14; a client sending 2025-04-14 is refused by Anthropic."""
    status, body = _message({**ANTHROPIC_HEADERS, "anthropic-beta": "interleaved-thinking-2025-04-14"})
    assert status == 400 and "`interleaved-thinking-2025-04-14`" in body["error"]["message"]


def test_claude_codes_betas_are_accepted() -> None:
    betas = (
        "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,"
        "thinking-token-count-2026-05-13,effort-2025-11-24"
    )
    status, _ = _message({**ANTHROPIC_HEADERS, "anthropic-beta": betas})
    assert status == 200


def test_an_empty_beta_is_refused() -> None:
    assert unknown_betas("context-1m-2025-08-07,", ANTHROPIC_BETAS) == [""]
    status, body = _message({**ANTHROPIC_HEADERS, "anthropic-beta": ""})
    assert status == 400 and "Unexpected value(s) ``" in body["error"]["message"]


def test_every_flag_the_anthropic_sdk_names_is_taken() -> None:
    """The SDK's ``AnthropicBetaParam`` is generated from Anthropic's API spec: a flag it names and the fake
    refuses makes the fake stricter than the API (Cline sent ``structured-outputs-2025-11-13`` and failed)."""
    from anthropic.types import AnthropicBetaParam

    (_, literal) = typing.get_args(AnthropicBetaParam)
    named = sorted(typing.get_args(literal))
    assert "structured-outputs-2025-11-13" in named and len(named) > 40
    status, body = _message({**ANTHROPIC_HEADERS, "anthropic-beta": ",".join(named)})
    assert status == 200, body


def test_bedrock_betas_are_a_subset_of_anthropics() -> None:
    """Bedrock takes fewer flags than Anthropic: every flag AWS lists is one Anthropic documents too."""
    assert BEDROCK_BETAS <= ANTHROPIC_BETAS
    assert "claude-code-20250219" not in BEDROCK_BETAS


@pytest.mark.parametrize(
    ("sampling", "refused"),
    [
        ({"temperature": 0.5}, "`temperature` may only be set to 1 when thinking is enabled"),
        ({"top_k": 5}, "`top_k`"),
        ({"top_p": 0.9}, "`top_p`"),
        ({"temperature": 1, "top_p": 0.95}, None),
    ],
)
def test_thinking_takes_no_sampling_changes(sampling: dict[str, Any], refused: str | None) -> None:
    for thinking in ({"type": "enabled", "budget_tokens": 1024}, {"type": "adaptive"}):
        status, body = _message(ANTHROPIC_HEADERS, {**CLAUDE, "max_tokens": 2048, "thinking": thinking, **sampling})
        assert (status == 400) == (refused is not None), body
        if refused:
            assert refused in body["error"]["message"]
    assert _message(ANTHROPIC_HEADERS, {**CLAUDE, **sampling})[0] == 200  # without thinking: fine


def test_unknown_top_level_field_and_missing_version(upstream: BackgroundServer) -> None:
    client = anthropic.Anthropic(base_url=upstream.url, api_key="k", max_retries=0)
    with client, pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(**CLAUDE, extra_body={"xyz": 1})  # type: ignore[arg-type]
    assert caught.value.body["error"]["message"] == "xyz: Extra inputs are not permitted"  # type: ignore[index]
    r = httpx.post(upstream.url + "/v1/messages", json=CLAUDE, headers={"x-api-key": "k"})
    assert (r.status_code, r.json()["error"]["message"]) == (400, "anthropic-version: header is required")


def test_beta_refused_through_the_sdk(upstream: BackgroundServer) -> None:
    client = anthropic.Anthropic(base_url=upstream.url, api_key="k", max_retries=0)
    with client, pytest.raises(anthropic.BadRequestError, match="anthropic-beta"):
        client.beta.messages.create(**CLAUDE, betas=["not-a-beta-2025-01-01"])  # type: ignore[arg-type]


# ---- OpenAI chat ----------------------------------------------------------------------------------------


def test_unknown_chat_field_is_unrecognized_request_argument() -> None:
    reply = chat_completion({**CHAT, "thinking": {"type": "enabled"}}, completion_id="c", created=0)
    assert reply.status == 400
    assert reply.body == {
        "error": {
            "message": "Unrecognized request argument supplied: thinking",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }


def test_every_documented_chat_field_passes_the_field_check() -> None:
    for name in KNOWN_FIELDS:
        reply = chat_completion({**CHAT, name: None}, completion_id="c", created=0)
        message = (reply.body or {}).get("error", {}).get("message", "")
        assert not message.startswith("Unrecognized"), name


@pytest.mark.parametrize(
    "model", ["gpt-4o-mini", "gpt-4o-2024-08-06", "gpt-4.1", "gpt-4.1-nano", "gpt-3.5-turbo", "gpt-4"]
)
def test_reasoning_effort_on_a_model_without_reasoning_is_refused(model: str) -> None:
    reply = chat_completion({**CHAT, "model": model, "reasoning_effort": "low"}, completion_id="c", created=0)
    assert reply.status == 400
    assert reply.body is not None
    assert reply.body["error"]["message"] == "Unrecognized request argument supplied: reasoning_effort"


@pytest.mark.parametrize("model", ["o3-mini", "o4-mini", "gpt-5", "gpt-5-mini", "some-local-model"])
def test_reasoning_effort_on_reasoning_and_unknown_models_is_taken(model: str) -> None:
    assert takes_reasoning_effort(model)
    reply = chat_completion({**CHAT, "model": model, "reasoning_effort": "low"}, completion_id="c", created=0)
    assert reply.status == 200


@pytest.mark.parametrize("model", ["o3-mini", "o1", "gpt-5-mini"])
def test_max_tokens_on_a_reasoning_model_is_unsupported_parameter(model: str) -> None:
    reply = chat_completion({**CHAT, "model": model, "max_tokens": 5}, completion_id="c", created=0)
    assert reply.status == 400 and reply.body is not None
    assert (reply.body["error"]["param"], reply.body["error"]["code"]) == ("max_tokens", "unsupported_parameter")
    fine = chat_completion({**CHAT, "model": model, "max_completion_tokens": 5}, completion_id="c", created=0)
    assert fine.status == 200
    assert chat_completion({**CHAT, "max_tokens": 5}, completion_id="c", created=0).status == 200  # gpt-4o-mini


def test_reasoning_effort_must_be_one_of_its_values() -> None:
    reply = chat_completion({**CHAT, "model": "gpt-5", "reasoning_effort": "extreme"}, completion_id="c", created=0)
    assert reply.status == 400 and reply.body is not None
    assert (reply.body["error"]["param"], reply.body["error"]["code"]) == ("reasoning_effort", "invalid_value")
    assert reply.body["error"]["message"].startswith("Invalid value: 'extreme'. Supported values are: 'none',")
    assert (
        chat_completion({**CHAT, "model": "gpt-5", "reasoning_effort": "xhigh"}, completion_id="c", created=0).status
        == 200
    )


def test_reasoning_effort_null_is_no_reasoning_effort() -> None:
    assert chat_completion({**CHAT, "reasoning_effort": None}, completion_id="c", created=0).status == 200


def test_sdk_sees_the_refusal(upstream: BackgroundServer) -> None:
    client = openai.OpenAI(base_url=upstream.url + "/v1", api_key="k", max_retries=0)
    with client, pytest.raises(openai.BadRequestError, match="reasoning_effort"):
        client.chat.completions.create(model="gpt-4o-mini", messages=CHAT["messages"], reasoning_effort="low")  # type: ignore[arg-type]


def test_unknown_embeddings_field_is_unrecognized(upstream: BackgroundServer) -> None:
    body = {"model": "text-embedding-3-small", "input": "hi", "task_type": "RETRIEVAL_QUERY"}
    r = httpx.post(upstream.url + "/v1/embeddings", json=body)
    assert (r.status_code, r.json()["error"]["message"]) == (400, "Unrecognized request argument supplied: task_type")
    azure_body = {"input": "hi", "input_type": "query"}
    path = "/openai/deployments/emb/embeddings?api-version=2024-10-21"
    assert httpx.post(upstream.url + path, json=azure_body).status_code == 200


# ---- Azure OpenAI ---------------------------------------------------------------------------------------


def test_azure_takes_its_own_fields_and_no_model_check() -> None:
    body = {**CHAT, "data_sources": [], "reasoning_effort": "low"}  # the deployment name says nothing of the model
    assert azure.chat_completion(body, "my-deployment", completion_id="c", created=0).status == 200
    assert azure.chat_completion({**CHAT, "xyz": 1}, "d", completion_id="c", created=0).status == 400


@pytest.mark.parametrize(
    ("version", "status"),
    [("2024-10-21", None), ("2025-01-01-preview", None), ("2024-10-22", 400), ("2099-01-01-preview", 400)],
)
def test_azure_api_version_must_be_documented(version: str, status: int | None) -> None:
    refused = azure.check_request(f"api-version={version}", {}, "gpt-4o")
    assert (refused[0] if refused else None) == status
    if refused:
        assert refused[1] == {"error": {"code": "BadRequest", "message": "API version not supported"}}


def test_azure_unknown_deployment_is_404(upstream: BackgroundServer) -> None:
    r = httpx.post(
        upstream.url + "/openai/deployments/nope/chat/completions?api-version=2024-10-21",
        json=CHAT,
        headers={azure.DEPLOYMENTS_HEADER: "gpt-4o, prod"},
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "DeploymentNotFound"
    missing = httpx.post(upstream.url + "/openai/deployments/gpt-4o/chat/completions", json=CHAT)
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "Resource not found"


# ---- Bedrock Converse -----------------------------------------------------------------------------------


def _converse(model: str, additional: dict[str, Any]) -> bedrock_converse.ConverseReply:
    body = {**CONVERSE, "inferenceConfig": {"maxTokens": 2000}, "additionalModelRequestFields": additional}
    return bedrock_converse.converse(orjson.dumps(body), stream=False, model_id=model)


@pytest.mark.parametrize(
    ("model", "field"),
    [
        ("amazon.nova-pro-v1:0", {"thinking": {"type": "enabled", "budget_tokens": 1024}}),
        ("us.amazon.nova-lite-v1:0", {"anthropic_beta": ["context-1m-2025-08-07"]}),
        ("global.amazon.nova-2-lite-v1:0", {"top_k": 5}),
        ("meta.llama3-1-70b-instruct-v1:0", {"thinking": {"type": "adaptive"}}),
        ("mistral.mistral-large-2407-v1:0", {"anthropic_beta": ["interleaved-thinking-2025-05-14"]}),
    ],
)
def test_claude_only_fields_are_refused_for_other_models(model: str, field: dict[str, Any]) -> None:
    reply = _converse(model, field)
    assert (reply.status, reply.error_type) == (400, "ValidationException")
    assert reply.body == {
        "message": f"Malformed input request: #: extraneous key [{next(iter(field))}] is not permitted, please "
        "reformat your input and try again."
    }


def test_claude_fields_are_taken_by_claude_and_nova_fields_by_nova() -> None:
    thinking = {"thinking": {"type": "enabled", "budget_tokens": 1024}, "top_k": 5}
    for model in (
        "anthropic.claude-sonnet-4-v1:0",
        "us.anthropic.claude-x",
        "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-x-v1:0",
    ):
        assert _converse(model, thinking).status == 200, model
    assert _converse("amazon.nova-pro-v1:0", {"inferenceConfig": {"topK": 5}}).status == 200
    assert _converse("meta.llama3-1-70b-instruct-v1:0", {"top_k": 5}).status == 200  # not Claude's alone


def test_a_model_id_that_does_not_say_is_checked_as_claude() -> None:
    profile = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123"
    assert bedrock_converse.model_family(profile) is None
    assert _converse(profile, {"thinking": {"type": "enabled", "budget_tokens": 1024}}).status == 200
    assert _converse(profile, {"anthropic_beta": ["claude-code-20250219"]}).status == 400  # not a Bedrock flag


def test_converse_route_reads_the_model_from_the_path(upstream: BackgroundServer) -> None:
    body = {**CONVERSE, "additionalModelRequestFields": {"thinking": {"type": "adaptive"}}}
    nova = httpx.post(upstream.url + "/model/amazon.nova-lite-v1%3A0/converse", json=body)
    assert nova.status_code == 400 and nova.headers["x-amzn-errortype"].startswith("ValidationException")
    assert httpx.post(upstream.url + "/model/anthropic.claude-x/converse", json=body).status_code == 200
