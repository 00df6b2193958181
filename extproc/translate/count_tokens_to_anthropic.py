"""Anthropic token counting (``POST /anthropic/v1/messages/count_tokens``: Claude Code asks before it compacts a
conversation) → Anthropic-schema backend, and the base of the Claude clouds' counting.

* Path: the backend prefix (``/v1`` by default) + ``/messages/count_tokens``; the body goes through, only
  ``model`` rewritten in place for a ``modelNameOverride``. ``anthropic-version`` is the client's, else
  ``2023-06-01``; ``anthropic-beta`` is filtered as for messages (every flag unless ``TokenvoyConfig``
  ``spec.anthropicBetas.Anthropic`` says otherwise).
* The answer, ``{"input_tokens": N}``, and errors reach the client unchanged; a 2xx answer that is no count
  (not JSON, no integer ``input_tokens``) is a 502 (``UpstreamShapeError``), never a made-up count.
* No usage: counting generates nothing, so the router charges nothing to any budget (and writes zero costs).

Claude on Vertex AI (``gcp_anthropic.py``) and on Bedrock (``aws_anthropic.py``: InvokeModel form;
``count_tokens_to_bedrock.py``: Converse form) subclass it with their path, body and answer. A backend
schema with no counting endpoint (OpenAI, Azure, Gemini) has no translator: the client gets the gateway's
422 in Anthropic's shape, never a made-up count (Claude Code then estimates from characters itself).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import orjson

from tokenvoy.config.model import Backend
from tokenvoy.extproc.errors import GatewayError, UpstreamShapeError, anthropic_error_body
from tokenvoy.extproc.jsonedit import set_top_level
from tokenvoy.extproc.translate.anthropic_common import ANTHROPIC_API, ANTHROPIC_VERSION, MessagesWire, allowed_betas
from tokenvoy.extproc.translate.base import ClientRequest, HeaderChanges, TranslatorBase, UpstreamRequest
from tokenvoy.extproc.translate.bodies import WholeBody
from tokenvoy.extproc.translate.shapes import answer_object

COUNT_PATH = "/messages/count_tokens"
JSON = "application/json"


class CountTokensToAnthropic(TranslatorBase):
    wire: ClassVar[MessagesWire] = ANTHROPIC_API  # error shape and default beta allowlist of the target
    rewrites_answer: ClassVar[bool] = False  # a 2xx answer is not Anthropic's ``{"input_tokens"}`` as it is

    def __init__(self) -> None:
        super().__init__()
        self._whole = WholeBody()

    def translate_request(self, request: ClientRequest, backend: Backend, model: str) -> UpstreamRequest:
        beta = request.headers.get("anthropic-beta")
        betas = None
        if beta is not None:
            allowed = backend.anthropic_betas if backend.anthropic_betas is not None else self.wire.default_betas
            betas = allowed_betas(beta, allowed, f"{backend.name} ({backend.schema})")
        return self.upstream(request, backend, model, betas)

    def upstream(
        self, request: ClientRequest, backend: Backend, model: str, betas: list[str] | None
    ) -> UpstreamRequest:
        """The request for this backend; ``betas``: the client's flags it may be sent (None: the client sent none)."""
        body = set_top_level(request.raw, {"model": model}) if model != request.body.get("model") else None
        set_headers, remove = beta_edits(request, betas)
        set_headers["anthropic-version"] = request.headers.get("anthropic-version") or ANTHROPIC_VERSION
        return UpstreamRequest(backend.path_prefix + COUNT_PATH, body, set_headers, remove)

    def translate_response_headers(self, headers: dict[str, str]) -> HeaderChanges | None:
        return HeaderChanges({"content-type": JSON}, ("content-length",)) if self.rewrites_answer else None

    def translate_response_body(self, chunk: bytes, end_of_stream: bool) -> bytes | None:
        raw = self._whole.collect(chunk, end_of_stream)
        if not self.rewrites_answer:  # Anthropic's own answer goes through, but only if it is a count at all
            if raw is not None:
                counted(raw, "input_tokens", "the provider")
            return None
        return b"" if raw is None else self.answer_body(raw)

    def translate_error(self, status: int, headers: Mapping[str, str], body: bytes) -> bytes | None:
        if self.wire.errors_in_anthropic_shape:
            return None
        error_type, message = self.wire.error_details(status, headers, body)
        return anthropic_error_body(GatewayError(status, message, error_type))

    def answer_body(self, raw: bytes) -> bytes:
        """Anthropic's ``{"input_tokens": N}`` for the backend's 2xx answer (when ``rewrites_answer``)."""
        return raw


def beta_edits(
    request: ClientRequest, betas: list[str] | None, in_body: bool = False
) -> tuple[dict[str, str], tuple[str, ...]]:
    """``(set, remove)`` header edits so the ``anthropic-beta`` header sent holds only ``betas`` (none at all
    when ``in_body``: the flags travel in the body)."""
    if betas is None:
        return {}, ()
    if in_body or not betas:
        return {}, ("anthropic-beta",)
    value = ",".join(betas)
    return ({"anthropic-beta": value} if value != request.headers.get("anthropic-beta") else {}), ()


def counted(raw: bytes, key: str, provider: str) -> int:
    """The token count ``key`` of a backend's 2xx count answer; anything else is a 502 (UpstreamShapeError),
    never a made-up number."""
    tokens = answer_object(raw, provider).get(key)
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
        raise UpstreamShapeError(f"{provider}'s token count answer has no valid `{key}` (a count of tokens)")
    return tokens


def input_tokens_body(tokens: int) -> bytes:
    """Anthropic's answer for a count."""
    return orjson.dumps({"input_tokens": tokens})
