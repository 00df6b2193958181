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
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson

from tokenvoy.config.model import Backend
from tokenvoy.extproc.sse import SSEParser
from tokenvoy.extproc.translate.base import ClientAPI, ClientRequest, HeaderChanges, UpstreamRequest
from tokenvoy.extproc.translate.bodies import AnswerText, WholeBody
from tokenvoy.extproc.translate.gemini_common import model_path, usage_from_gemini
from tokenvoy.extproc.usage import TokenUsage

COUNT_TOKENS_SUFFIX = ":countTokens"
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


class GeminiToVertex:
    def __init__(self) -> None:
        self.usage: TokenUsage | None = None
        self.response_model: str | None = None
        self.answer = AnswerText()
        self._stream = False
        self._count = False
        self._whole = WholeBody()
        self._parser = SSEParser()

    def translate_request(self, request: ClientRequest, backend: Backend, model: str) -> UpstreamRequest:
        self.answer.keep = request.capture_output
        self._stream = request.stream
        if request.api is ClientAPI.GEMINI_COUNT_TOKENS:
            self._count = True
            self.usage = TokenUsage()  # counting tokens uses none
            return UpstreamRequest(
                path=count_tokens_path(backend.path_prefix, model), body=vertex_count_body(request.body)
            )
        return UpstreamRequest(path=model_path(backend.path_prefix, model, request.stream))

    def translate_response_headers(self, status: int, headers: dict[str, str]) -> HeaderChanges | None:
        return None  # the same wire format: the provider's headers are right for the client

    def translate_response_body(self, status: int, chunk: bytes, end_of_stream: bool) -> bytes | None:
        if not 200 <= status < 300 or self._count:
            return None
        if not self._stream:
            body = self._whole.feed(chunk, end_of_stream)
            if body is not None:
                self._take(body)
            return None
        events = self._parser.feed(chunk)
        if end_of_stream:
            events.extend(self._parser.flush())
        for event in events:
            if not event.data:
                continue
            try:
                payload = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                continue
            if isinstance(payload, dict):
                self._take(payload)
        return None

    def _take(self, response: dict[str, Any]) -> None:
        model = response.get("modelVersion")
        if isinstance(model, str) and model:
            self.response_model = model
        metadata = response.get("usageMetadata")
        if isinstance(metadata, dict):
            self.usage = usage_from_gemini(metadata)
        if self.answer.keep:
            candidates = response.get("candidates")
            first = candidates[0] if isinstance(candidates, list) and candidates else None
            content = first.get("content") if isinstance(first, dict) else None
            for part in content.get("parts") or () if isinstance(content, dict) else ():
                if isinstance(part, dict) and isinstance(part.get("text"), str) and part.get("thought") is not True:
                    self.answer.add(part["text"])
