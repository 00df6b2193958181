"""Incremental Server-Sent Events parsing that survives any split of the byte stream.

Bytes are kept until an event's blank-line terminator arrives, so a split inside a UTF-8 character or
inside a ``\\r\\n`` never reaches the decoder.

Every input byte ends up in exactly one returned event's ``raw``: blocks that carry no field (a
``: keep-alive`` comment, stray blank lines) come back as events with ``event=None`` and ``data=""``, so a
translator that rebuilds the stream from ``raw`` passes them through instead of dropping them. Consumers
skip events whose ``data`` is empty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A line ending (CRLF, LF or a CR not followed by LF) followed by a second, empty line's ending: the blank
# line that ends an event, for any mix of line endings. The lookahead keeps the regex from reading the two
# halves of one CRLF as two line endings.
_EVENT_END = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r)")
_LINE_END = re.compile(r"\r\n|\n|\r")

# The keep-alive an OpenAI-shaped client gets (chat completions and the Responses API): an SSE comment, which
# the openai SDKs and every SSE reader skip, but whose bytes reset the client's read timeout.
KEEPALIVE = b": ping\n\n"


@dataclass(slots=True)
class SSEEvent:
    event: str | None
    data: str
    raw: bytes = b""  # the event's bytes including its terminator, for pass-through

    @property
    def is_comment(self) -> bool:
        """A block of ``: …`` lines only: a provider's (or a proxy's) keep-alive."""
        return not self.data and self.event is None and self.raw.lstrip(b"\r\n").startswith(b":")


class SSEParser:
    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buffer = self._buffer + chunk if self._buffer else chunk
        events = []
        start = 0
        while True:
            match = _EVENT_END.search(buffer, start)
            if match is None:
                break
            # A terminator ending in "\r" at the end of the buffer may still be the first half of "\r\n":
            # wait for the next byte so the "\n" is not left over for the next event.
            if match.end() == len(buffer) and buffer.endswith(b"\r"):
                break
            event = _parse_event(buffer[start : match.start()].decode("utf-8", errors="replace"))
            event.raw = buffer[start : match.end()]
            events.append(event)
            start = match.end()
        self._buffer = buffer[start:]
        return events

    def flush(self) -> list[SSEEvent]:
        """The last event when the stream ended without its blank line."""
        rest, self._buffer = self._buffer, b""
        if not rest:
            return []
        event = _parse_event(rest.decode("utf-8", errors="replace"))
        event.raw = rest
        return [event]


def _parse_event(text: str) -> SSEEvent:
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
    return SSEEvent(name, "\n".join(data_lines))
