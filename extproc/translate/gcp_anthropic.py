"""Claude on Google Vertex AI (AIServiceBackend schema ``GCPAnthropic``), for both client APIs.

The body is Anthropic's Messages body; only the wire differs from Anthropic's own API:

* Path: ``{prefix}/publishers/anthropic/models/{model}:rawPredict``, or ``:streamRawPredict`` for a stream.
  The prefix is ``/v1/projects/{project}/locations/{region}`` (from the GCPCredentials policy or the
  AIServiceBackend's ``schema.prefix``); the model is Vertex's name for it (``claude-sonnet-4-5@20250929``),
  percent-encoded except ``@``.
* Body: no ``model`` (it is in the path), ``stream: true`` kept for ``streamRawPredict``, plus
  ``"anthropic_version": "vertex-2023-10-16"``. The Anthropic client's bytes are edited in place;
  ``anthropic-beta`` goes as a header, as Vertex reads it: every flag, as we found no documented list of the
  ones Vertex accepts; ``TokenvoyConfig`` ``spec.anthropicBetas.GCPAnthropic`` narrows it to an allowlist.
* Answers: Anthropic's JSON and SSE, unchanged.
* Errors come in two shapes: Anthropic's (the model refused the request) and Google's
  (``{"error": {"code": 429, "message": …, "status": "RESOURCE_EXHAUSTED"}}``, from Vertex itself: quota,
  permissions, unknown model). Both reach the client in its own shape with the status kept; Google's
  ``status`` leads the message.

Token counting (``/anthropic/v1/messages/count_tokens``) goes to ``…/publishers/anthropic/models/
count-tokens:rawPredict`` with the model in the body (:class:`CountTokensToGCPAnthropic`).

The OAuth token is the GCPCredentials policy's job, not the translator's.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

import orjson

from tokenvoy.config.model import Backend
from tokenvoy.extproc.jsonedit import set_top_level
from tokenvoy.extproc.translate.anthropic_common import MessagesWire, error_details, error_type_for
from tokenvoy.extproc.translate.anthropic_to_anthropic import AnthropicToAnthropic
from tokenvoy.extproc.translate.base import ClientRequest, UpstreamRequest
from tokenvoy.extproc.translate.count_tokens_to_anthropic import CountTokensToAnthropic, beta_edits
from tokenvoy.extproc.translate.openai_to_anthropic import OpenAIToAnthropic

VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"


class VertexRawPredictWire(MessagesWire):
    version_header = False
    body_version = VERTEX_ANTHROPIC_VERSION
    path_keys = ("model",)
    errors_in_anthropic_shape = False  # Vertex's own errors are Google-shaped

    def path(self, backend: Backend, model: str, stream: bool) -> str:
        method = "streamRawPredict" if stream else "rawPredict"
        return f"{backend.path_prefix}/publishers/anthropic/models/{quote(model, safe='@')}:{method}"

    def error_details(self, status: int, headers: Mapping[str, str], raw: bytes) -> tuple[str, str]:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if isinstance(body, list) and len(body) == 1:
            body = body[0]
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and "type" not in error and isinstance(error.get("message"), str):
            google_status = error.get("status")
            message = error["message"]
            return error_type_for(status), f"{google_status}: {message}" if isinstance(google_status, str) else message
        return error_details(status, raw)


VERTEX_RAW_PREDICT = VertexRawPredictWire()


class OpenAIToGCPAnthropic(OpenAIToAnthropic):
    """OpenAI Chat Completions client → Claude on Vertex AI."""

    wire = VERTEX_RAW_PREDICT


class AnthropicToGCPAnthropic(AnthropicToAnthropic):
    """Anthropic Messages client → Claude on Vertex AI."""

    wire = VERTEX_RAW_PREDICT


class CountTokensToGCPAnthropic(CountTokensToAnthropic):
    """Anthropic token counting → Claude on Vertex AI: ``{prefix}/publishers/anthropic/models/count-tokens:rawPredict``
    (Google's "Count tokens for Claude models"), the model named in the body, not the path, plus
    ``anthropic_version``; ``anthropic-beta`` as a header. The answer is Anthropic's ``{"input_tokens"}``."""

    wire = VERTEX_RAW_PREDICT

    def upstream(
        self, request: ClientRequest, backend: Backend, model: str, betas: list[str] | None
    ) -> UpstreamRequest:
        body = set_top_level(request.raw, {"model": model, "anthropic_version": VERTEX_ANTHROPIC_VERSION})
        set_headers, remove = beta_edits(request, betas)
        set_headers["content-type"] = "application/json"
        path = f"{backend.path_prefix}/publishers/anthropic/models/count-tokens:rawPredict"
        return UpstreamRequest(path, body, set_headers, remove)
