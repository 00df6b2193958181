"""Pieces every translator needs for buffered (non-streamed) bodies."""

from __future__ import annotations

from typing import Any

import orjson


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
