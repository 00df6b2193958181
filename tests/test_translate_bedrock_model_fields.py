"""Claude-only Converse fields reach only Claude: a non-Claude Bedrock model gets no ``thinking`` or
``anthropic_beta`` (Bedrock answers them 400 "extraneous key"), Nova gets ``top_k`` as its ``inferenceConfig``;
every translated body is then sent to the fake Converse, which refuses what Bedrock refuses for that model."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tokenvoy.config.model import Backend, Endpoint
from tokenvoy.extproc.translate.anthropic_to_bedrock import AnthropicToBedrock
from tokenvoy.extproc.translate.base import ClientAPI, ClientRequest
from tokenvoy.extproc.translate.bedrock_common import fit_model_fields
from tokenvoy.extproc.translate.openai_to_bedrock import OpenAIToBedrock
from tokenvoy.testupstream import bedrock_converse

BACKEND = Backend(
    name="bedrock",
    schema="AWSBedrock",
    schema_version=None,
    path_prefix="",
    endpoint=Endpoint("bedrock-runtime.us-east-1.amazonaws.com", 443, tls=True),
)
CLAUDE_CODE_BETAS = "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27"
ANTHROPIC_BODY = {
    "max_tokens": 4096,
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "top_k": 7,
    "messages": [{"role": "user", "content": "hi there"}],
}
OPENAI_BODY = {
    "max_completion_tokens": 4096,
    "reasoning_effort": "low",
    "messages": [{"role": "user", "content": "hi"}],
}


def _anthropic(model: str, body: dict[str, Any] = ANTHROPIC_BODY) -> dict[str, Any]:
    request = ClientRequest(
        api=ClientAPI.ANTHROPIC_MESSAGES,
        path="/anthropic/v1/messages",
        raw=orjson.dumps({"model": model, **body}),
        body={"model": model, **body},
        model=model,
        stream=False,
        needs_usage=True,
        headers={"anthropic-beta": CLAUDE_CODE_BETAS},
    )
    return orjson.loads(AnthropicToBedrock().translate_request(request, BACKEND, model).body)


def _openai(model: str, body: dict[str, Any] = OPENAI_BODY) -> dict[str, Any]:
    request = ClientRequest(
        api=ClientAPI.OPENAI_CHAT,
        path="/v1/chat/completions",
        raw=orjson.dumps({"model": model, **body}),
        body={"model": model, **body},
        model=model,
        stream=False,
        needs_usage=True,
    )
    return orjson.loads(OpenAIToBedrock().translate_request(request, BACKEND, model).body)


def _accepted(body: dict[str, Any], model: str) -> None:
    reply = bedrock_converse.converse(orjson.dumps(body), stream=False, model_id=model)
    assert reply.status == 200, reply.body


@pytest.mark.parametrize(
    "model", ["amazon.nova-pro-v1:0", "us.amazon.nova-lite-v1:0", "global.amazon.nova-2-lite-v1:0"]
)
def test_nova_gets_no_claude_fields_and_its_own_top_k(model: str) -> None:
    sent = _anthropic(model)
    assert sent["additionalModelRequestFields"] == {"inferenceConfig": {"topK": 7}}
    _accepted(sent, model)


@pytest.mark.parametrize("model", ["meta.llama3-1-70b-instruct-v1:0", "mistral.mistral-large-2407-v1:0"])
def test_other_families_get_no_claude_fields(model: str) -> None:
    sent = _anthropic(model)
    assert sent["additionalModelRequestFields"] == {"top_k": 7}
    _accepted(sent, model)
    openai_sent = _openai(model)
    assert "additionalModelRequestFields" not in openai_sent  # reasoning_effort became Claude's thinking only
    _accepted(openai_sent, model)


@pytest.mark.parametrize(
    "model",
    [
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123",  # says nothing: kept
    ],
)
def test_claude_and_unnamed_models_keep_them(model: str) -> None:
    sent = _anthropic(model)
    fields = sent["additionalModelRequestFields"]
    assert fields["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert fields["anthropic_beta"] == ["interleaved-thinking-2025-05-14", "context-management-2025-06-27"]
    _accepted(sent, model)
    assert _openai(model)["additionalModelRequestFields"]["thinking"]["type"] == "enabled"


def test_no_empty_object_is_left_behind() -> None:
    body = {"messages": [], "additionalModelRequestFields": {"thinking": {"type": "adaptive"}}}
    assert fit_model_fields(body, "amazon.nova-micro-v1:0") == {"messages": []}
    assert fit_model_fields(body, "anthropic.claude-x") is body
