"""OpenAI Responses client (Codex, ``client.responses``) → a backend that serves the Responses API itself.

A pass-through that still reads usage. The request's bytes go out unchanged but for the model name override
(an in-place edit): ``store``, ``previous_response_id``, ``conversation``, ``include`` and every other field
reach the provider as the client sent them, so stateful conversations keep working. Answers and errors are
the provider's (OpenAI's error shape is the client's); only read:

* buffered: the ``response`` object's ``model`` and ``usage``;
* streamed: the ``response`` of ``response.created`` (the model) and of the terminal event
  (``response.completed``, ``response.incomplete`` or ``response.failed``: model and usage). Other events are
  not decoded, except ``response.output_text.delta`` when tracing records the answer.

Shape checks, so junk never passes as success: a 2xx answer must be a JSON object with an ``output`` array
(an input-token count one, an integer ``input_tokens``), and a stream must reach its terminal event or an
``error`` event; otherwise a 502 (``UpstreamShapeError``), an error event when the stream is under way.

Paths: OpenAI ``{prefix}/responses`` (prefix ``/v1``). Azure OpenAI (:class:`ResponsesToAzure`) serves the
Responses API only on its OpenAI-compatible v1 surface, ``{prefix}/openai/v1/responses``, with the deployment
as the body's ``model`` (no deployment segment in the path, no ``api-version``: the v1 surface takes none).
The AIServiceBackend's ``schema.version`` is the Chat Completions API version and is not used here.
"""

from __future__ import annotations

from typing import Any

import orjson

from tokenvoy.config.model import Backend
from tokenvoy.extproc.jsonedit import set_top_level
from tokenvoy.extproc.sse import SSEParser
from tokenvoy.extproc.translate.base import ClientRequest, HeaderChanges, TranslatorBase, UpstreamRequest
from tokenvoy.extproc.translate.bodies import WholeBody
from tokenvoy.extproc.translate.responses_common import (
    RESPONSES_PATH,
    TERMINAL_EVENTS,
    output_text,
    responses_usage,
)
from tokenvoy.extproc.translate.shapes import answer_object, require, stream_cut
from tokenvoy.extproc.usage import TokenUsage

_DELTA = "response.output_text.delta"
PROVIDER = "the Responses API provider"
_ENDS = TERMINAL_EVENTS | {"error"}  # the events a Responses stream ends with


class ResponsesToOpenAI(TranslatorBase):
    def __init__(self) -> None:
        super().__init__()
        self._stream = False
        self._parser: SSEParser | None = None
        self._whole = WholeBody()
        self._ended = False  # the stream's terminal event (or an error event) came

    def translate_request(self, request: ClientRequest, backend: Backend, model: str) -> UpstreamRequest:
        self._stream = request.stream
        self.answer.keep = request.capture_output
        body = set_top_level(request.raw, {"model": model}) if model != request.model else None
        return UpstreamRequest(path=self.upstream_path(backend), body=body)

    def upstream_path(self, backend: Backend) -> str:
        return backend.path_prefix + RESPONSES_PATH

    def translate_response_headers(self, headers: dict[str, str]) -> HeaderChanges | None:
        return None  # the provider's wire format is the client's

    def translate_response_body(self, chunk: bytes, end_of_stream: bool) -> bytes | None:
        if not self._stream:
            raw = self._whole.collect(chunk, end_of_stream)
            if raw is not None:  # the bytes go through unchanged, but only if they are a Response at all
                body = answer_object(raw, PROVIDER)
                require(body, "output", list, PROVIDER)
                self._take(body)
                if self.answer.keep:
                    self.answer.add(output_text(body))
            return None
        parser = self._parser or SSEParser()
        self._parser = parser
        events = parser.feed(chunk)
        if end_of_stream:
            events.extend(parser.flush())
        for event in events:
            self._read_event(event.event, event.data)
        if end_of_stream and not self._ended:
            raise stream_cut(PROVIDER, "`response.completed` (or another terminal event)", chunk)
        return None

    def _read_event(self, name: str | None, data: str) -> None:
        if not data or data == "[DONE]":
            return
        if name is not None:
            wanted = name in _ENDS or (self.response_model is None and name == "response.created")
            wanted = wanted or (name == _DELTA and self.answer.keep)
            if not wanted:
                return
        elif (
            '"usage"' not in data and '"error"' not in data and self.response_model is not None and not self.answer.keep
        ):
            return  # a server that sends no `event:` lines: only events that can carry usage (or end it) are decoded
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(payload, dict):
            return
        kind = payload.get("type")
        if isinstance(kind, str) and kind in _ENDS:
            self._ended = True
        if kind == _DELTA:
            if isinstance(payload.get("delta"), str):
                self.answer.add(payload["delta"])
            return
        response = payload.get("response")
        if isinstance(response, dict):
            self._take(response)

    def _take(self, response: dict[str, Any]) -> None:
        self.read_answer(response, responses_usage)


class ResponsesToAzure(ResponsesToOpenAI):
    def upstream_path(self, backend: Backend) -> str:
        return f"{backend.path_prefix}/openai/v1/responses"


class InputTokensToOpenAI(TranslatorBase):
    """``POST /v1/responses/input_tokens`` → an OpenAI backend, which counts the tokens itself: passed through
    (model override aside). A count generates nothing, so its usage is zero: never charged to a budget.
    Backends of other schemas have no such count here (422, like any pair tokenvoy does not translate)."""

    def __init__(self) -> None:
        super().__init__()
        self.report_usage(TokenUsage())  # a count generates nothing
        self._whole = WholeBody()

    def translate_request(self, request: ClientRequest, backend: Backend, model: str) -> UpstreamRequest:
        body = set_top_level(request.raw, {"model": model}) if model != request.model else None
        return UpstreamRequest(path=backend.path_prefix + RESPONSES_PATH + "/input_tokens", body=body)

    def translate_response_headers(self, headers: dict[str, str]) -> HeaderChanges | None:
        return None

    def translate_response_body(self, chunk: bytes, end_of_stream: bool) -> bytes | None:
        raw = self._whole.collect(chunk, end_of_stream)  # the count goes through, but only if it is a count
        if raw is not None:
            require(answer_object(raw, PROVIDER), "input_tokens", int, PROVIDER)
        return None
