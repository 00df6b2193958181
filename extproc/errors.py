"""Error bodies in the shape each client API expects."""

from __future__ import annotations

import orjson

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
}


class GatewayError(Exception):
    """An error the gateway answers itself, before or instead of the provider."""

    def __init__(self, status: int, message: str, error_type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type or _TYPES.get(status, "api_error")


UPSTREAM_SHAPE_ERROR_TYPE = "upstream_malformed_response"


class UpstreamShapeError(GatewayError):
    """The provider answered 2xx with something that is not its API's answer (not JSON, the wrong JSON, a
    stream cut short or unrecognisable): a 502, never a made-up success.

    ``emitted`` holds what a stream translator had already produced from the same chunk before it noticed,
    so the client still gets those events before the error event."""

    def __init__(self, message: str, emitted: bytes = b"") -> None:
        super().__init__(502, message, UPSTREAM_SHAPE_ERROR_TYPE)
        self.emitted = emitted


def openai_error_body(error: GatewayError) -> bytes:
    return orjson.dumps(
        {"type": "error", "error": {"type": error.error_type, "code": str(error.status), "message": error.message}}
    )


ANTHROPIC_ERROR_TYPES = frozenset((*_TYPES.values(), "billing_error"))


def anthropic_error_body(error: GatewayError) -> bytes:
    """Anthropic's shape (``/anthropic/v1/messages``): no ``code``, and only Anthropic's error types
    (a gateway-specific one such as ``model_not_found`` becomes the type Anthropic uses for the status)."""
    error_type = error.error_type
    if error_type not in ANTHROPIC_ERROR_TYPES:
        error_type = _TYPES.get(error.status, "api_error")
    return orjson.dumps({"type": "error", "error": {"type": error_type, "message": error.message}})


# Google's canonical error codes (google.rpc.Code) for the HTTP statuses, as the Gemini API names them in
# ``error.status``; any other status is named by its class.
GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def google_status(status: int) -> str:
    """``error.status`` for an HTTP status: the canonical code, else INVALID_ARGUMENT (4xx) or INTERNAL."""
    return GOOGLE_STATUS.get(status) or ("INVALID_ARGUMENT" if 400 <= status < 500 else "INTERNAL")


def gemini_error_body(error: GatewayError) -> bytes:
    """Google's shape (the Gemini API, ``/v1beta/models/…``): ``{"error": {"code", "message", "status"}}``."""
    return orjson.dumps(
        {"error": {"code": error.status, "message": error.message, "status": google_status(error.status)}}
    )


def invalid_field(field: str, why: str) -> GatewayError:
    """The client's request is malformed at ``field`` (400): the message names the field."""
    return GatewayError(400, f"invalid `{field}`: {why}")


def untranslatable_field(field: str, target: str, why: str) -> GatewayError:
    """``field`` has no equivalent at the target backend (422): the message names the field and why."""
    return GatewayError(422, f"`{field}` cannot be sent to {target}: {why}")
