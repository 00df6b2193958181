"""Anthropic token counting (``POST /anthropic/v1/messages/count_tokens``) → Bedrock Runtime ``CountTokens`` with
a Converse input (backend schema ``AWSBedrock``).

* ``POST {prefix}/model/{modelId}/count-tokens`` with ``{"input": {"converse": {...}}}``: the ``messages``,
  ``system``, ``toolConfig`` and ``additionalModelRequestFields`` the Converse translation
  (:mod:`anthropic_to_bedrock`) builds, mid-conversation system messages and beta filtering included.
* The answer ``{"inputTokens": N}`` becomes Anthropic's ``{"input_tokens": N}``. A model Bedrock cannot count
  for (Amazon Nova, inference profiles) answers 400 ``ValidationException``, passed on in Anthropic's shape.
"""

from __future__ import annotations

from urllib.parse import quote

import orjson

from tokenvoy.config.model import Backend
from tokenvoy.extproc.translate.anthropic_common import BEDROCK_CLAUDE_BETAS
from tokenvoy.extproc.translate.anthropic_to_bedrock import ANTHROPIC_HEADERS, build_request
from tokenvoy.extproc.translate.aws_anthropic import BEDROCK_INVOKE
from tokenvoy.extproc.translate.base import ClientRequest, UpstreamRequest
from tokenvoy.extproc.translate.count_tokens_to_anthropic import CountTokensToAnthropic, counted, input_tokens_body

CONVERSE_COUNT_FIELDS = ("messages", "system", "toolConfig", "additionalModelRequestFields")


class CountTokensToBedrock(CountTokensToAnthropic):
    wire = BEDROCK_INVOKE  # Bedrock's error shape ({"message"} + x-amzn-errortype) and its beta allowlist
    rewrites_answer = True

    def translate_request(self, request: ClientRequest, backend: Backend, model: str) -> UpstreamRequest:
        allowed = backend.anthropic_betas if backend.anthropic_betas is not None else BEDROCK_CLAUDE_BETAS
        converse = build_request(request.body, request.headers.get("anthropic-beta"), allowed)
        counted = {key: converse[key] for key in CONVERSE_COUNT_FIELDS if key in converse}
        body = orjson.dumps({"input": {"converse": counted}})
        path = f"{backend.path_prefix}/model/{quote(model, safe='')}/count-tokens"
        return UpstreamRequest(path, body, {"content-type": "application/json"}, ANTHROPIC_HEADERS)

    def answer_body(self, raw: bytes) -> bytes:
        return input_tokens_body(counted(raw, "inputTokens", "the provider"))
