"""The gateway's own errors, and their bodies in the shape each client API expects (its catalog spec)."""

from __future__ import annotations

import orjson

from tokenvoy.apis.client_apis import ERROR_TYPES, FAMILIES, Family


class GatewayError(Exception):
    """An error the gateway answers itself, before or instead of the provider."""

    def __init__(self, status: int, message: str, error_type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type or ERROR_TYPES.get(status, "api_error")


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
    return orjson.dumps(FAMILIES[Family.OPENAI].error_document(error))


def anthropic_error_body(error: GatewayError) -> bytes:
    """Anthropic's shape (``/anthropic/v1/messages``): no ``code``, and only Anthropic's error types
    (a gateway-specific one such as ``model_not_found`` becomes the type Anthropic uses for the status)."""
    return orjson.dumps(FAMILIES[Family.ANTHROPIC].error_document(error))


def gemini_error_body(error: GatewayError) -> bytes:
    """Google's shape (the Gemini API, ``/v1beta/models/…``): ``{"error": {"code", "message", "status"}}``."""
    return orjson.dumps(FAMILIES[Family.GOOGLE].error_document(error))


def invalid_field(field: str, why: str) -> GatewayError:
    """The client's request is malformed at ``field`` (400): the message names the field."""
    return GatewayError(400, f"invalid `{field}`: {why}")


def untranslatable_field(field: str, target: str, why: str) -> GatewayError:
    """``field`` has no equivalent at the target backend (422): the message names the field and why."""
    return GatewayError(422, f"`{field}` cannot be sent to {target}: {why}")
