"""OpenAI Embeddings client → AWS Bedrock backend (``schema.name: AWSBedrock``) running an Amazon Titan
text embeddings model, through ``InvokeModel``.

* Path: ``/model/{modelId}/invoke`` (the model id percent-encoded, ``:`` → ``%3A``, as the AWS SDKs send
  it); SigV4 signing is the backend's AWSCredentials' business, not this translator's.
* Request: ``{"inputText": text}`` plus ``dimensions`` when the client set it (Titan V2 takes 256, 512
  or 1024; V1 takes none). ``normalize`` is left to Titan's default (true on V2, like OpenAI's unit
  vectors) so the same body also works for Titan V1. Titan embeds one text per call: an ``input`` array
  of one string is accepted, several → 422 naming ``input`` (send one request per text); token arrays
  → 422. ``user`` is dropped.
* Answer: ``{"embedding": […], "inputTextTokenCount": n}`` → one-item OpenAI list (base64 float32 when
  the client asked), ``usage.prompt_tokens = total_tokens = n``, ``model`` = the model id sent. Errors
  (``{"message": …}`` with ``x-amzn-errortype: ValidationException:…``) → OpenAI's shape, the status kept
  and the exception name as the error type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from tokenvoy.config.model import Backend
from tokenvoy.extproc.errors import untranslatable_field
from tokenvoy.extproc.translate.base import ClientRequest
from tokenvoy.extproc.translate.embeddings_common import RebuiltEmbeddings, float_list, input_texts
from tokenvoy.extproc.usage import token_count

AWS_ERROR_TYPE_HEADER = "x-amzn-errortype"


class EmbeddingsToTitan(RebuiltEmbeddings):
    target = "an AWS Bedrock Titan embeddings model"

    def build(self, request: ClientRequest, backend: Backend, model: str) -> tuple[str, dict[str, Any]]:
        body = request.body
        texts = input_texts(body, self.target)
        if len(texts) != 1:
            raise untranslatable_field(
                "input", self.target, f"Titan embeds one text per request, got {len(texts)}; send one per request"
            )
        out: dict[str, Any] = {"inputText": texts[0]}
        if body.get("dimensions") is not None:
            out["dimensions"] = body["dimensions"]
        return f"{backend.path_prefix}/model/{quote(model, safe='')}/invoke", out

    def read(self, payload: dict[str, Any]) -> tuple[list[list[float]], int] | None:
        values = float_list(payload.get("embedding"))
        if values is None:
            return None
        count = payload.get("inputTextTokenCount")
        return [values], token_count(count, "inputTextTokenCount")

    def error_details(self, status: int, payload: Any, headers: Mapping[str, str]) -> tuple[str | None, str | None]:
        error_type = headers.get(AWS_ERROR_TYPE_HEADER, "").split(":", 1)[0].strip() or None
        message = None
        if isinstance(payload, dict):
            value = payload.get("message", payload.get("Message"))
            message = value if isinstance(value, str) and value else None
        return error_type, message
