"""OpenAI Chat Completions client → OpenAI-schema backend: a pass-through that still reads usage.

Only two in-place edits on the request: the model name override, and ``stream_options.include_usage``
when costs are configured (otherwise a streamed usage is never sent). A usage chunk the client did not
ask for is taken out of the stream again so clients see exactly what they requested.

The bytes go through unchanged, with two checks so junk never passes as success: a 2xx answer must be a
JSON object with a ``choices`` array (else a 502, ``UpstreamShapeError``), and a stream must end with
``data: [DONE]`` (or a provider error event); one that ends without it gets the router's error event
after the provider's bytes, so a cut answer (and its missing usage) is never taken for a whole one.
"""

from __future__ import annotations

from typing import Any

import orjson

from tokenvoy.config.model import Backend
from tokenvoy.extproc.jsonedit import set_top_level
from tokenvoy.extproc.sse import SSEParser
from tokenvoy.extproc.translate.base import ClientRequest, HeaderChanges, TranslatorBase, UpstreamRequest
from tokenvoy.extproc.translate.bodies import WholeBody
from tokenvoy.extproc.translate.shapes import answer_object, require, stream_cut
from tokenvoy.extproc.usage import TokenUsage

CHAT_PATH = "/chat/completions"
PROVIDER = "the OpenAI-schema provider"


class OpenAIToOpenAI(TranslatorBase):
    def __init__(self) -> None:
        super().__init__()
        self._stream = False
        self._strip_usage_chunk = False
        self._parser: SSEParser | None = None
        self._whole = WholeBody()
        self._done = False  # `data: [DONE]` (or an error event) came: the stream is complete

    def translate_request(self, request: ClientRequest, backend: Backend, model: str) -> UpstreamRequest:
        self._stream = request.stream
        self.answer.keep = request.capture_output
        updates: dict[str, Any] = {}
        if model != request.model:
            updates["model"] = model
        if request.stream and request.needs_usage:
            options = request.body.get("stream_options")
            options = dict(options) if isinstance(options, dict) else {}
            if options.get("include_usage") is not True:
                self._strip_usage_chunk = True
                options["include_usage"] = True
                updates["stream_options"] = options
        body = set_top_level(request.raw, updates) if updates else None
        return UpstreamRequest(path=self.upstream_path(backend, model), body=body)

    def upstream_path(self, backend: Backend, model: str) -> str:
        """The provider's path; subclasses for other OpenAI-format endpoints (Azure, legacy completions) change it."""
        return backend.path_prefix + CHAT_PATH

    def translate_response_headers(self, headers: dict[str, str]) -> HeaderChanges | None:
        return None  # same wire format: the provider's headers are right for the client

    def translate_response_body(self, chunk: bytes, end_of_stream: bool) -> bytes | None:
        if not self._stream:
            self._read_whole(chunk, end_of_stream)
            return None
        return self._read_stream(chunk, end_of_stream)

    def _read_whole(self, chunk: bytes, end_of_stream: bool) -> None:
        raw = self._whole.collect(chunk, end_of_stream)
        if raw is not None:  # the bytes go through unchanged, but only if they are an answer at all
            body = answer_object(raw, PROVIDER)
            require(body, "choices", list, PROVIDER)
            self._take(body)

    def _read_stream(self, chunk: bytes, end_of_stream: bool) -> bytes | None:
        parser = self._parser or SSEParser()
        self._parser = parser
        events = parser.feed(chunk)
        if end_of_stream:
            events.extend(parser.flush())
        kept = []
        for event in events:
            data = event.data
            if data == "[DONE]":
                self._done = True
            elif data:
                has_usage = '"usage"' in data
                if has_usage or self.response_model is None or self.answer.keep or '"error"' in data:
                    try:
                        payload = orjson.loads(data)
                    except orjson.JSONDecodeError:
                        payload = None
                    if isinstance(payload, dict):
                        if "error" in payload and not payload.get("choices"):
                            self._done = True  # a provider's mid-stream error ends the stream
                        self._take(payload)
                        # Only the chunk that carries the usage object; with include_usage OpenAI also puts
                        # "usage": null on every other chunk, and Azure opens with a choices-less chunk.
                        if (
                            self._strip_usage_chunk
                            and isinstance(payload.get("usage"), dict)
                            and not payload.get("choices")
                        ):
                            continue
            kept.append(event.raw)
        passed = b"".join(kept) if self._strip_usage_chunk else None
        if end_of_stream and not self._done:
            # OpenAI ends every stream with `data: [DONE]`: without it the answer (and its usage) may be cut.
            raise stream_cut(PROVIDER, "`data: [DONE]`", chunk if passed is None else passed)
        return passed

    def _take(self, payload: dict[str, Any]) -> None:
        self.read_answer(payload, TokenUsage.from_openai)
        if self.answer.keep:
            self._capture_text(payload)

    def _capture_text(self, payload: dict[str, Any]) -> None:
        choices = payload.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return
        part = choices[0].get("delta" if self._stream else "message")
        if isinstance(part, dict) and isinstance(part.get("content"), str):
            self.answer.add(part["content"])
