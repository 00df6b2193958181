"""AWS event stream framing (``application/vnd.amazon.eventstream``), the wire format of Bedrock's
streamed answers (ConverseStream, InvokeModelWithResponseStream).

Decoding uses botocore's parser (prelude and message CRCs checked); a message may arrive split at any
byte, so the decoder keeps the partial tail until the rest comes. Encoding exists for the fake provider
and tests: botocore has no encoder.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from botocore.eventstream import EventStreamBuffer, ParserError

CONTENT_TYPE = "application/vnd.amazon.eventstream"
_STRING = 7  # header value type: UTF-8 string


class EventStreamError(ValueError):
    """The upstream bytes are not a valid event stream (bad CRC, impossible lengths). ``messages`` are the
    whole messages the same ``feed`` decoded before the bad one: they are still good."""

    def __init__(self, message: str, messages: list[EventMessage]) -> None:
        super().__init__(message)
        self.messages = messages


@dataclass(frozen=True, slots=True)
class EventMessage:
    headers: dict[str, object]
    payload: bytes

    @property
    def message_type(self) -> str:
        """``event``, ``exception`` or ``error``."""
        return str(self.headers.get(":message-type", ""))

    @property
    def event_type(self) -> str:
        """``:event-type`` of events, ``:exception-type`` of exceptions, ``:error-code`` of errors."""
        for name in (":event-type", ":exception-type", ":error-code"):
            value = self.headers.get(name)
            if value:
                return str(value)
        return ""


class EventStreamDecoder:
    """Incremental decoder: ``feed`` any slice of the stream, get the messages it completes."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = EventStreamBuffer()

    def feed(self, chunk: bytes) -> list[EventMessage]:
        self._buffer.add_data(chunk)
        messages: list[EventMessage] = []
        try:
            for message in self._buffer:
                messages.append(EventMessage(dict(message.headers), bytes(message.payload)))
        except ParserError as exc:
            raise EventStreamError(f"invalid AWS event stream from the provider: {exc}", messages) from None
        return messages

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message still held (non-zero at the end of a stream: it was cut)."""
        return len(self._buffer._data)  # botocore keeps the unparsed tail here


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One event stream message with string headers."""
    encoded = bytearray()
    for name, value in headers.items():
        name_bytes = name.encode()
        value_bytes = value.encode()
        encoded += struct.pack("!B", len(name_bytes)) + name_bytes
        encoded += struct.pack("!BH", _STRING, len(value_bytes)) + value_bytes
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack("!II", total, len(encoded))
    prelude += struct.pack("!I", zlib.crc32(prelude))
    message = prelude + bytes(encoded) + payload
    return message + struct.pack("!I", zlib.crc32(message))


def encode_event(event_type: str, payload: bytes) -> bytes:
    """An ``event`` message as Bedrock sends them (JSON payload)."""
    return encode_message(
        {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}, payload
    )


def encode_exception(exception_type: str, payload: bytes) -> bytes:
    """An ``exception`` message (e.g. ``throttlingException`` mid-stream)."""
    return encode_message(
        {":exception-type": exception_type, ":content-type": "application/json", ":message-type": "exception"},
        payload,
    )
