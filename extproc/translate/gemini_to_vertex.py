"""Gemini API client (gemini-cli, the ``google-genai`` SDKs) → Gemini on Vertex AI (``GCPVertexAI``): a pass-through.

Vertex AI serves the same ``GenerateContentRequest``/``GenerateContentResponse`` as Google's Gemini API,
under another path. So the body goes through unchanged (no parse, no copy) and only the path changes:

* ``/v1beta/models/{model}:generateContent`` → ``{prefix}/publishers/google/models/{model}:generateContent``,
  ``:streamGenerateContent?alt=sse`` and ``:countTokens`` alike; the prefix is
  ``/v1/projects/{project}/locations/{region}`` when the backend has GCP credentials (they sign the request
  with a Google access token, replacing the client's ``x-goog-api-key``), else empty. ``{model}`` is the
  path's model or the backendRef's ``modelNameOverride``; the client's query (e.g. ``key=``) is not sent.
* A ``countTokens`` body in the Gemini API's other form, ``{"generateContentRequest": {…}}``, is unwrapped
  into the fields Vertex's ``countTokens`` takes (``contents``, ``systemInstruction``, ``tools``,
  ``generationConfig``).
* Answers and errors (Google's ``{"error": {"code", "message", "status"}}`` on both sides) reach the client
  unchanged; the usage is read from ``usageMetadata`` (the last one of a stream), the response model from
  ``modelVersion``. ``countTokens`` answers are counts, not usage: they are charged 0 tokens.
* Shape checks, so junk never passes as success: a 2xx answer must be a JSON object with a ``candidates``
  array (or a ``promptFeedback`` that blocked the prompt), a count one with an integer ``totalTokens``, and a
  stream must reach a chunk with a ``finishReason`` (Gemini's stream has no end event), a blocked prompt or
  an ``error`` object; otherwise a 502 (``UpstreamShapeError``), an error event when the stream is under way.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson

from tokenvoy.config.model import Backend
from tokenvoy.extproc.errors import UpstreamShapeError
from tokenvoy.extproc.sse import SSEParser
from tokenvoy.extproc.translate.base import ClientAPI, ClientRequest, HeaderChanges, TranslatorBase, UpstreamRequest
from tokenvoy.extproc.translate.bodies import WholeBody, stream_items
from tokenvoy.extproc.translate.gemini_common import model_path, prompt_blocked, usage_from_gemini
from tokenvoy.extproc.translate.shapes import answer_object, require, stream_cut
from tokenvoy.extproc.usage import TokenUsage

COUNT_TOKENS_SUFFIX = ":countTokens"
PROVIDER = "Vertex AI"
_COUNT_FIELDS = ("contents", "systemInstruction", "tools", "generationConfig")


def count_tokens_path(prefix: str, model: str) -> str:
    return f"{prefix}/publishers/google/models/{quote(model, safe='@')}{COUNT_TOKENS_SUFFIX}"


def vertex_count_body(body: dict[str, Any]) -> bytes | None:
    """The Vertex ``countTokens`` body for a Gemini API one; None when it is already in Vertex's form."""
    wrapped = body.get("generateContentRequest")
    if not isinstance(wrapped, dict):
        return None
    out = {key: wrapped[key] for key in _COUNT_FIELDS if key in wrapped}
    if "contents" in body and "contents" not in out:
        out["contents"] = body["contents"]
    return orjson.dumps(out)


class GeminiToVertex(TranslatorBase):
    def __init__(self) -> None:
        super().__init__()
        self._stream = False
        self._count = False
        self._whole = WholeBody()
        self._parser = SSEParser()
        self._finished = False  # the stream reached a finishReason, a blocked prompt or an error

    def translate_request(self, request: ClientRequest, backend: Backend, model: str) -> UpstreamRequest:
        self.answer.keep = request.capture_output
        self._stream = request.stream
        if request.api is ClientAPI.GEMINI_COUNT_TOKENS:
            self._count = True
            self.report_usage(TokenUsage())  # counting tokens uses none
            return UpstreamRequest(
                path=count_tokens_path(backend.path_prefix, model), body=vertex_count_body(request.body)
            )
        return UpstreamRequest(path=model_path(backend.path_prefix, model, request.stream))

    def translate_response_headers(self, headers: dict[str, str]) -> HeaderChanges | None:
        return None  # the same wire format: the provider's headers are right for the client

    def translate_response_body(self, chunk: bytes, end_of_stream: bool) -> bytes | None:
        if self._count or not self._stream:
            raw = self._whole.collect(chunk, end_of_stream)
            if raw is None:
                return None
            body = answer_object(raw, PROVIDER)  # the bytes go through unchanged, but only an answer
            if self._count:
                require(body, "totalTokens", int, PROVIDER)
                return None
            if not isinstance(body.get("candidates"), list) and not prompt_blocked(body):
                raise UpstreamShapeError(f"{PROVIDER}'s answer has no `candidates` array (and no `promptFeedback`)")
            self._take(body)
            return None
        for item in stream_items(self._parser, chunk, end_of_stream):
            if isinstance(item, dict):
                self._take(item)
                self._finished = self._finished or _final(item)
        if end_of_stream and not self._finished:
            raise stream_cut(PROVIDER, "a `finishReason`", chunk)
        return None

    def _take(self, response: dict[str, Any]) -> None:
        self.read_answer(response, usage_from_gemini, "modelVersion", "usageMetadata")
        if self.answer.keep:
            candidates = response.get("candidates")
            first = candidates[0] if isinstance(candidates, list) and candidates else None
            content = first.get("content") if isinstance(first, dict) else None
            parts = content.get("parts") if isinstance(content, dict) else None
            for part in parts if isinstance(parts, list) else ():
                if isinstance(part, dict) and isinstance(part.get("text"), str) and part.get("thought") is not True:
                    self.answer.add(part["text"])


def _final(chunk: dict[str, Any]) -> bool:
    """Whether a stream chunk ends the answer: a candidate's ``finishReason``, a blocked prompt, an error."""
    if "error" in chunk or prompt_blocked(chunk):
        return True
    candidates = chunk.get("candidates")
    return isinstance(candidates, list) and any(isinstance(c, dict) and c.get("finishReason") for c in candidates)
