"""Incremental Server-Sent Events parsing that survives any split of the byte stream.

Bytes are kept until an event's blank-line terminator arrives, so a split inside a UTF-8 character or
inside a ``\\r\\n`` never reaches the decoder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE_END = re.compile(r"\r\n|\n|\r")


@dataclass(slots=True)
class SSEEvent:
    event: str | None
    data: str
    raw: bytes = b""  # the event's bytes including its terminator, for pass-through


class SSEParser:
    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buffer = self._buffer + chunk
        events = []
        start = 0
        while True:
            match = _EVENT_END.search(buffer, start)
            if match is None:
                break
            # "\r" then "\r\n" could still become "\r\n\r\n": wait for more bytes when it is at the end.
            if match.group() == b"\r\r" and match.end() == len(buffer):
                break
            event = _parse_event(buffer[start : match.start()].decode("utf-8", errors="replace"))
            if event is not None:
                event.raw = buffer[start : match.end()]
                events.append(event)
            start = match.end()
        self._buffer = buffer[start:]
        return events

    def flush(self) -> list[SSEEvent]:
        """The last event when the stream ended without its blank line."""
        rest, self._buffer = self._buffer, b""
        event = _parse_event(rest.decode("utf-8", errors="replace")) if rest.strip() else None
        if event is None:
            return []
        event.raw = rest
        return [event]


def _parse_event(text: str) -> SSEEvent | None:
    name = None
    data_lines = []
    for line in _LINE_END.split(text):
        if not line or line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            data_lines.append(value)
        elif field == "event":
            name = value
    if not data_lines and name is None:
        return None
    return SSEEvent(name, "\n".join(data_lines))
