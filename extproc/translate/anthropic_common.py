"""Anthropic Messages API facts shared by every translator that talks to (or for) Anthropic.

Kept apart from any one (client, backend) pair so the OpenAI→Anthropic, Anthropic→Anthropic and
Anthropic-on-Bedrock/Vertex translators read usage, stop reasons and errors the same way.

:class:`MessagesWire` is the one thing that differs between Claude's homes: where the Messages body goes
(``/v1/messages``, Bedrock's ``/model/{id}/invoke``, Vertex's ``…:rawPredict``), which top-level keys
travel in the path instead of the body, and how streamed events arrive (SSE, or AWS event stream chunks).
The content mapping stays in the translators; each cloud subclasses the wire in its own module
(``aws_anthropic.py``, ``gcp_anthropic.py``), so adding one never touches the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import orjson

from tokenvoy.config.model import Backend
from tokenvoy.extproc.errors import GatewayError
from tokenvoy.extproc.jsonedit import remove_top_level, set_top_level
from tokenvoy.extproc.sse import SSEEvent, SSEParser
from tokenvoy.extproc.usage import TokenUsage, token_count

ANTHROPIC_VERSION = "2023-06-01"
"""The ``anthropic-version`` header value; the only version of the Messages API so far."""
MESSAGES_PATH = "/messages"
"""Appended to the backend's path prefix (``/v1`` by default), giving Anthropic's ``/v1/messages``."""

# Anthropic's error type → the HTTP status it comes with (used for errors that arrive inside a 200 stream).
ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

_USAGE_KEYS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def usage_from_anthropic(usage: dict[str, Any]) -> TokenUsage:
    """DESIGN §4: Anthropic's ``input_tokens`` exclude cache reads and writes, so they are added back."""
    plain = _int(usage.get("input_tokens"))
    cache_read = _int(usage.get("cache_read_input_tokens"))
    cache_creation = _int(usage.get("cache_creation_input_tokens"))
    output = _int(usage.get("output_tokens"))
    total_input = plain + cache_read + cache_creation
    return TokenUsage(
        input=total_input,
        cached_input=cache_read,
        cache_creation_input=cache_creation,
        output=output,
        total=total_input + output,
    )


def merge_usage(current: dict[str, int], update: object) -> dict[str, int]:
    """Fold a stream's usage objects into one: ``message_start`` has the input side, every
    ``message_delta`` carries cumulative counts (older API versions only ``output_tokens``)."""
    if not isinstance(update, dict):
        return current
    merged = dict(current)
    for key in _USAGE_KEYS:
        value = update.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            merged[key] = value
    return merged


def error_details(status: int, raw: bytes) -> tuple[str, str]:
    """``(type, message)`` of a provider error body; a body that is not Anthropic's JSON error is kept
    whole as the message so the client still sees what the provider said. Google's shape
    (``{"error": {"code", "message", "status"}}``, sometimes inside a one-element list) reads the same."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        error_type = error.get("type")
        message = error.get("message")
        return (
            error_type if isinstance(error_type, str) and error_type else _type_for(status),
            message if isinstance(message, str) else orjson.dumps(error).decode(),
        )
    text = raw.decode("utf-8", errors="replace").strip()
    return _type_for(status), text or f"the provider answered {status} with an empty body"


_STATUS_TYPES = {status: error_type for error_type, status in ERROR_STATUS.items()}


def _type_for(status: int) -> str:
    """Anthropic's error type for a status (529 → overloaded_error), else the gateway's usual one."""
    return _STATUS_TYPES.get(status) or GatewayError(status, "").error_type


def _int(value: object) -> int:
    return token_count(value)


# ---- the wire: where the body goes and how the answer comes back ---------------------------------------


class StreamReader(Protocol):
    """Turns a streamed answer's bytes, split anywhere, into Anthropic's SSE events (``data`` = the JSON)."""

    def feed(self, chunk: bytes) -> list[SSEEvent]: ...

    def flush(self) -> list[SSEEvent]: ...


def broken_stream(reader: StreamReader) -> str | None:
    """Why a reader's framing proved corrupt (an AWS event stream's CRC), None while it reads fine; SSE
    readers have no framing to break."""
    return getattr(reader, "broken", None)


def sse_event(name: str, data: bytes) -> SSEEvent:
    """An Anthropic stream event framed as Anthropic frames it, for wires that do not deliver SSE."""
    return SSEEvent(
        name, data.decode("utf-8", errors="replace"), b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"
    )


def error_event(error_type: str, message: str) -> SSEEvent:
    """Anthropic's mid-stream ``error`` event (what a cloud's stream exception becomes)."""
    return sse_event("error", orjson.dumps({"type": "error", "error": {"type": error_type, "message": message}}))


def error_type_for(status: int) -> str:
    """Anthropic's error type for an HTTP status (529 → overloaded_error, 408 → timeout_error)."""
    return "timeout_error" if status == 408 else _type_for(status)


class MessagesWire:
    """Anthropic's own Messages API (schema ``Anthropic``): ``{prefix}/messages``, the model and ``stream`` in
    the body, the version in the ``anthropic-version`` header, SSE answers, errors already in Anthropic's
    shape. Cloud subclasses override the attributes and methods that differ."""

    version_header = True  # send ``anthropic-version``; the clouds take ``anthropic_version`` in the body
    body_version: str | None = None
    path_keys: tuple[str, ...] = ()  # top-level keys that travel in the path (and are refused in the body)
    reframes_stream = False  # the streamed answer is not SSE: translators write the SSE themselves
    errors_in_anthropic_shape = True  # non-2xx bodies can go to an Anthropic client as they are

    def path(self, backend: Backend, model: str, stream: bool) -> str:
        return backend.path_prefix + MESSAGES_PATH

    def body_additions(self, body: Mapping[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
        """Top-level keys to add to the Messages body (given the client's body and headers)."""
        return {"anthropic_version": self.body_version} if self.body_version else {}

    def rebuilt_body(self, body: dict[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
        """A Messages body built by a translator (``model`` and ``stream`` set), made right for this wire."""
        additions = self.body_additions(body, headers)
        if not self.path_keys and not additions:
            return body
        out = {**additions, **body}
        for key in self.path_keys:
            out.pop(key, None)
        return out

    def edited_raw(self, raw: bytes, body: Mapping[str, Any], model: str, headers: Mapping[str, str]) -> bytes | None:
        """The client's Messages bytes for this wire, edited in place (None = unchanged), with ``model``."""
        updates = self.body_additions(body, headers)
        if "model" not in self.path_keys and model != body.get("model"):
            updates["model"] = model
        present = [key for key in self.path_keys if key in body]
        edited = remove_top_level(raw, present) if present else raw
        if updates:
            edited = set_top_level(edited, updates)
        return edited if edited is not raw else None

    def stream_reader(self) -> StreamReader:
        return SSEParser()

    def error_details(self, status: int, headers: Mapping[str, str], raw: bytes) -> tuple[str, str]:
        """``(Anthropic error type, message)`` of a non-2xx answer (``headers``: the response's)."""
        return error_details(status, raw)


ANTHROPIC_API = MessagesWire()
