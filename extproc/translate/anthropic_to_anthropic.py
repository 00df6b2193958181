"""Anthropic Messages client (Claude Code, Cline, the ``anthropic`` SDKs) → Anthropic-schema backend.

A pass-through that still reads usage:

* Path: the backend prefix (``/v1`` unless the AIServiceBackend sets one) + ``/messages``, the same
  rule as :mod:`openai_to_anthropic`, so ``/anthropic/v1/messages`` reaches ``https://api.anthropic.com/v1/messages``.
* The body goes unchanged unless the backendRef has a ``modelNameOverride``: then only ``model`` is
  rewritten, in place (:func:`jsonedit.set_top_level`), so long histories are never re-encoded.
* ``anthropic-version`` is the client's when it sent one, else ``2023-06-01``; ``anthropic-beta`` (only the
  flags ``TokenvoyConfig`` ``spec.anthropicBetas.Anthropic`` lists, when it does) and every other client
  header go through (``accept-encoding`` aside: see ``upstream.py``).
  The client's ``x-api-key``/``authorization`` are replaced by the gateway's key when the backend has a
  security policy (done for every translator by ``upstream.py``).
* Usage: from the JSON answer, or from the stream's ``message_start`` (input side) and ``message_delta``
  (cumulative counts) events, normalised (input = input + cache reads + cache writes).
  The answer's ``model`` is recorded as the response model. Bytes reach the client unchanged, errors
  included (they are already in Anthropic's shape).
* Shape checks, so junk never passes as success: a 2xx answer must be a JSON object with a ``content``
  array (else a 502, ``UpstreamShapeError``), and a stream must reach ``message_stop`` (or an ``error``
  event); one that ends without it, or whose AWS event stream is corrupt, gets the router's error event.

Claude on Bedrock and Vertex is this class with another ``wire`` (:class:`~anthropic_common.MessagesWire`,
subclassed in ``aws_anthropic.py`` and ``gcp_anthropic.py``): the wire names the path, the body keys that
move into it (removed in place) and the ``anthropic_version`` added, whether the stream must be
re-framed as SSE and errors rewritten into Anthropic's shape, and which ``anthropic-beta`` flags the cloud
accepts (the others are dropped, with a debug log, rather than refused by the provider).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from tokenvoy.config.model import Backend
from tokenvoy.extproc.errors import GatewayError, UpstreamShapeError, anthropic_error_body
from tokenvoy.extproc.translate.anthropic_common import (
    ANTHROPIC_API,
    ANTHROPIC_VERSION,
    MessagesWire,
    StreamReader,
    allowed_betas,
    broken_stream,
    merge_usage,
    usage_from_anthropic,
)
from tokenvoy.extproc.translate.base import ClientRequest, HeaderChanges, TranslatorBase, UpstreamRequest
from tokenvoy.extproc.translate.bodies import WholeBody
from tokenvoy.extproc.translate.shapes import answer_object, require, stream_cut

_USAGE_EVENTS = frozenset({"message_start", "message_delta"})
_CAPTURE_EVENTS = _USAGE_EVENTS | {"content_block_delta"}
_END_EVENTS = frozenset({"message_stop", "error"})  # the events after which Anthropic's stream is complete


class AnthropicToAnthropic(TranslatorBase):
    wire: ClassVar[MessagesWire] = ANTHROPIC_API  # where Claude is reached; the clouds' subclasses swap it

    def __init__(self) -> None:
        super().__init__()
        self._stream = False
        self._model = ""
        self._parser: StreamReader | None = None
        self._whole = WholeBody()
        self._raw_usage: dict[str, int] = {}
        self._ended = False  # message_stop (or an error event) came: the stream is complete

    def translate_request(self, request: ClientRequest, backend: Backend, model: str) -> UpstreamRequest:
        self._stream = request.stream
        self._model = model
        self.answer.keep = request.capture_output
        wire = self.wire
        headers = request.headers
        set_headers: dict[str, str] = {}
        remove: tuple[str, ...] = ()
        beta = headers.get("anthropic-beta")
        if beta is not None:
            allowed = backend.anthropic_betas if backend.anthropic_betas is not None else wire.default_betas
            kept = ",".join(allowed_betas(beta, allowed, f"{backend.name} ({backend.schema})"))
            if wire.betas_in_body:  # read from the header by the wire, sent in the body only
                headers = {**headers, "anthropic-beta": kept}
                remove = ("anthropic-beta",)
            elif kept != beta:
                if kept:
                    set_headers["anthropic-beta"] = kept
                else:
                    remove = ("anthropic-beta",)
        body = wire.edited_raw(request.raw, request.body, model, headers)
        if wire.version_header:
            set_headers["anthropic-version"] = headers.get("anthropic-version") or ANTHROPIC_VERSION
        return UpstreamRequest(
            path=wire.path(backend, model, self._stream),
            body=body,
            set_headers=set_headers,
            remove_headers=remove,
        )

    def translate_response_headers(self, headers: dict[str, str]) -> HeaderChanges | None:
        if self._stream and self.wire.reframes_stream:
            return HeaderChanges({"content-type": "text/event-stream"})  # the router drops content-length
        return None  # same wire format

    def translate_error(self, status: int, headers: Mapping[str, str], body: bytes) -> bytes | None:
        if self.wire.errors_in_anthropic_shape:
            return None
        error_type, message = self.wire.error_details(status, headers, body)
        return anthropic_error_body(GatewayError(status, message, error_type))

    def translate_response_body(self, chunk: bytes, end_of_stream: bool) -> bytes | None:
        if self._stream:
            return self._read_stream(chunk, end_of_stream)
        self._read_whole(chunk, end_of_stream)
        return None

    def _read_whole(self, chunk: bytes, end_of_stream: bool) -> None:
        raw = self._whole.collect(chunk, end_of_stream)
        if raw is None:
            return
        body = answer_object(raw, "the provider")  # the bytes go through unchanged, but only a message
        require(body, "content", list, "the provider")
        self._take_message(body)

    def _read_stream(self, chunk: bytes, end_of_stream: bool) -> bytes | None:
        """Reads the usage; returns the SSE bytes for the client when the wire is not SSE (else None)."""
        parser = self._parser or self.wire.stream_reader()
        self._parser = parser
        events = parser.feed(chunk)
        if end_of_stream:
            events.extend(parser.flush())
        reframing = self.wire.reframes_stream
        kept: list[bytes] = []  # the events re-framed as SSE, for wires that are not SSE
        for event in events:
            if self._ended:
                break  # Anthropic sends nothing after message_stop or an error: anything more is not read
            if reframing:
                kept.append(event.raw)
            data = event.data
            if not data:
                continue
            if (event.event in _END_EVENTS or event.event is None) and _is_end(data):
                self._ended = True
            # Only the two events that carry usage are decoded; text deltas are skipped unread unless
            # tracing keeps the answer text.
            wanted = _CAPTURE_EVENTS if self.answer.keep else _USAGE_EVENTS
            if event.event is not None and event.event not in wanted:
                continue
            if event.event is None and '"message_' not in data and not self.answer.keep:
                continue
            try:
                payload = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(payload, dict):
                continue
            kind = payload.get("type")
            if kind == "message_start" and isinstance(payload.get("message"), dict):
                self._take_message(payload["message"])
            elif kind == "message_delta":
                self._take_usage(payload.get("usage"))
            elif kind == "content_block_delta" and self.answer.keep:
                delta = payload.get("delta")
                if isinstance(delta, dict) and delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
                    self.answer.add(delta["text"])
        reframed = b"".join(kept) if reframing else None
        broken = broken_stream(parser)
        if broken and not self._ended:
            self._ended = True
            raise UpstreamShapeError(broken, chunk if reframed is None else reframed)
        if end_of_stream and not self._ended:  # cut short, or not Anthropic's stream at all
            raise stream_cut("the provider", "`message_stop`", chunk if reframed is None else reframed)
        return reframed

    def _take_message(self, message: dict[str, Any]) -> None:
        model = message.get("model")
        if isinstance(model, str) and model:
            self.response_model = model
        elif self._model:  # an answer without one (some Bedrock versions): the model asked for
            self.response_model = self._model
        self._take_usage(message.get("usage"))
        if self.answer.keep and isinstance(message.get("content"), list):
            for block in message["content"]:
                if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
                    self.answer.add(block["text"])

    def _take_usage(self, usage: object) -> None:
        self._raw_usage = merge_usage(self._raw_usage, usage)
        if self._raw_usage:
            self.report_usage(usage_from_anthropic(self._raw_usage))


def _is_end(data: str) -> bool:
    """Whether an event's data is a whole ``message_stop`` or ``error`` event (a cut-off one is not; read only
    when the name appears in it)."""
    if '"message_stop"' not in data and '"error"' not in data:
        return False
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(payload, dict) and isinstance(kind := payload.get("type"), str) and kind in _END_EVENTS
