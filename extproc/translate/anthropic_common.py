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

import logging
from collections.abc import Mapping
from typing import Any, Protocol

import orjson

from tokenvoy.config.model import Backend
from tokenvoy.extproc.errors import GatewayError
from tokenvoy.extproc.jsonedit import remove_top_level, set_top_level
from tokenvoy.extproc.sse import SSEEvent, SSEParser
from tokenvoy.extproc.usage import TokenUsage, token_count

log = logging.getLogger(__name__)

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

# The ``anthropic_beta`` values AWS documents for Claude on Bedrock ("Anthropic Claude Messages API: Request and
# Response", the available beta headers table, plus the ``computer-use-2024-10-22`` of its request example). Bedrock
# refuses any other with 400 "invalid beta flag", Claude Code's own ``claude-code-20250219`` first, so the others
# are dropped (InvokeModel and Converse alike). ``TokenvoyConfig`` ``spec.anthropicBetas`` replaces the list.
BEDROCK_CLAUDE_BETAS = frozenset(
    {
        "computer-use-2024-10-22",
        "computer-use-2025-01-24",
        "token-efficient-tools-2025-02-19",
        "interleaved-thinking-2025-05-14",
        "output-128k-2025-02-19",
        "dev-full-thinking-2025-05-14",
        "context-1m-2025-08-07",
        "context-management-2025-06-27",
        "effort-2025-11-24",
        "tool-search-tool-2025-10-19",
        "tool-examples-2025-10-29",
    }
)
ALL_BETAS = "*"  # in an allowlist: every flag goes through


def allowed_betas(header: str | None, allowed: frozenset[str] | None, target: str) -> list[str]:
    """The client's ``anthropic-beta`` flags (comma-separated, in order) that ``allowed`` lists (None or ``*``:
    all). The others are dropped with a debug log naming them, so the provider never refuses the request for
    a flag it does not know; the feature it would enable is simply off."""
    flags = [flag.strip() for flag in (header or "").split(",") if flag.strip()]
    if allowed is None or ALL_BETAS in allowed:
        return flags
    kept = [flag for flag in flags if flag in allowed]
    if len(kept) != len(flags):
        dropped = [flag for flag in flags if flag not in allowed]
        log.debug("anthropic-beta flags not sent to %s (not in its allowlist): %s", target, ", ".join(dropped))
    return kept


_USAGE_KEYS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def usage_from_anthropic(usage: dict[str, Any]) -> TokenUsage:
    """Anthropic's ``input_tokens`` exclude cache reads and writes, so they are added back."""
    plain = token_count(usage.get("input_tokens"), "input_tokens")
    cache_read = token_count(usage.get("cache_read_input_tokens"), "cache_read_input_tokens")
    cache_creation = token_count(usage.get("cache_creation_input_tokens"), "cache_creation_input_tokens")
    output = token_count(usage.get("output_tokens"), "output_tokens")
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
    betas_in_body = False  # the beta flags travel as ``anthropic_beta`` in the body (Bedrock), not as the header
    default_betas: frozenset[str] | None = None  # the flags sent when the config names none (None: all)

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


# ---- the client's side: Anthropic's stream, written for a translated answer -----------------------------


def anthropic_usage(usage: TokenUsage) -> dict[str, int]:
    """Anthropic's usage object: ``input_tokens`` exclude the cache reads and writes reported beside them."""
    return {
        "input_tokens": usage.input - usage.cached_input - usage.cache_creation_input,
        "cache_creation_input_tokens": usage.cache_creation_input,
        "cache_read_input_tokens": usage.cached_input,
        "output_tokens": usage.output,
    }


class MessagesEventWriter:
    """Anthropic Messages stream events as the anthropic SDK reads them (``event: <type>`` then its JSON),
    for a translator that answers an Anthropic client from another schema. The translator decides which
    block is which; the writer frames ``message_start``, ``content_block_*``, the closing ``message_delta``
    + ``message_stop``, ``ping`` and ``error``."""

    PING = b'event: ping\ndata: {"type":"ping"}\n\n'  # Anthropic's keep-alive event

    @staticmethod
    def event(payload: dict[str, Any]) -> bytes:
        return b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def message_start(self, message_id: str, model: str, input_tokens: int) -> bytes:
        """The opening event; ``input_tokens``: the prompt as far as it is known before the answer's usage."""
        message = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 0},
        }
        return self.event({"type": "message_start", "message": message})

    def block_start(self, index: int, block: dict[str, Any]) -> bytes:
        return self.event({"type": "content_block_start", "index": index, "content_block": block})

    def block_delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return self.event({"type": "content_block_delta", "index": index, "delta": delta})

    def block_stop(self, index: int) -> bytes:
        return self.event({"type": "content_block_stop", "index": index})

    def message_end(self, stop_reason: str, usage: TokenUsage | None) -> bytes:
        """``message_delta`` with the stop reason and the whole usage, then ``message_stop``."""
        delta = {"stop_reason": stop_reason, "stop_sequence": None}
        end = self.event({"type": "message_delta", "delta": delta, "usage": anthropic_usage(usage or TokenUsage())})
        return end + self.event({"type": "message_stop"})

    def error(self, error_type: str, message: str) -> bytes:
        """Anthropic's mid-stream ``error`` event; the stream ends after it."""
        return self.event({"type": "error", "error": {"type": error_type, "message": message}})
