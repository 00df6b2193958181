"""Pieces every translator needs for bodies: buffered ones whole, streamed ones event by event."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import orjson

from tokenvoy.extproc.sse import SSEEvent

DONE_EVENT = "[DONE]"  # what stream_items yields for OpenAI's ``data: [DONE]``
KEEP_ALIVE = ": keep-alive"  # what stream_items yields for a keep-alive comment


class EventReader(Protocol):
    """An SSE parser, or a reader that turns another framing (an AWS event stream) into SSE events."""

    def feed(self, chunk: bytes) -> list[SSEEvent]: ...

    def flush(self) -> list[SSEEvent]: ...


def stream_items(reader: EventReader, chunk: bytes, end_of_stream: bool) -> Iterator[dict[str, Any] | str]:
    """A provider's stream as every translator reads it, split anywhere: each event's JSON object,
    ``DONE_EVENT`` (OpenAI's end), or ``KEEP_ALIVE`` for a keep-alive comment; data that is not a JSON object
    is passed over. Lazy, so a reader that has finished stops parsing (``break``)."""
    events = reader.feed(chunk)
    if end_of_stream:
        events.extend(reader.flush())
    for event in events:
        data = event.data
        if not data:
            if event.is_comment:
                yield KEEP_ALIVE
            continue
        if data == DONE_EVENT:
            yield DONE_EVENT
            continue
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if isinstance(payload, dict):
            yield payload


class WholeBody:
    """Collects a body's chunks; at the end of the stream, the body parsed as a JSON object, if it is one.

    Envoy delivers a buffered body in one message, but a translator must not rely on it.
    """

    __slots__ = ("_chunks",)

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def collect(self, chunk: bytes, end_of_stream: bool) -> bytes | None:
        """The whole body at the end of the stream, None before."""
        self._chunks.append(chunk)
        if not end_of_stream:
            return None
        raw = b"".join(self._chunks)
        self._chunks.clear()
        return raw

    def feed(self, chunk: bytes, end_of_stream: bool) -> dict[str, Any] | None:
        raw = self.collect(chunk, end_of_stream)
        return None if raw is None else json_object(raw)


def json_object(raw: bytes) -> dict[str, Any] | None:
    """``raw`` parsed, if it is a JSON object (a provider's answer; anything else is not the provider's shape)."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


class AnswerText:
    """The answer's text, kept for tracing only when asked (``ClientRequest.capture_output``).

    Off by default, so a translator pays nothing for it when tracing is off or hides outputs.
    """

    __slots__ = ("_parts", "keep")

    def __init__(self) -> None:
        self.keep = False
        self._parts: list[str] = []

    def add(self, text: str) -> None:
        if self.keep:
            self._parts.append(text)

    @property
    def text(self) -> str | None:
        return "".join(self._parts) if self.keep else None
