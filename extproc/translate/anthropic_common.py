"""Anthropic Messages API facts shared by every translator that talks to (or for) Anthropic.

Kept apart from any one (client, backend) pair so the OpenAI→Anthropic, Anthropic→Anthropic and
Anthropic-on-Bedrock/Vertex translators read usage, stop reasons and errors the same way.
"""

from __future__ import annotations

from typing import Any

import orjson

from tokenvoy.extproc.errors import GatewayError
from tokenvoy.extproc.usage import TokenUsage

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
    whole as the message so the client still sees what the provider said."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
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
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
