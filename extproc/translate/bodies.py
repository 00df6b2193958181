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

    def feed(self, chunk: bytes, end_of_stream: bool) -> dict[str, Any] | None:
        self._chunks.append(chunk)
        if not end_of_stream:
            return None
        raw = b"".join(self._chunks)
        self._chunks.clear()
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return parsed if isinstance(parsed, dict) else None
