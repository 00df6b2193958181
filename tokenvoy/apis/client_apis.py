"""One spec per client API tokenvoy serves: its paths, error shape, stream error event and OTel names.

Clients speak one of three API families (OpenAI's, Anthropic's under ``/anthropic/``, Google's Gemini API);
a family fixes the error body, the model list and the header its SDKs send their key in. Every place that
answers "in the client's shape" reads it here: extproc's own errors (``extproc/errors.py``), the error
event that ends a stream (:meth:`ClientAPI.stream_error_event`) and the replies Envoy answers itself
(``render/local_replies.py``, rendered into Envoy's config). Pure: no I/O, nothing else of tokenvoy imported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import orjson


class ClientAPI(StrEnum):
    OPENAI_CHAT = "openai.chat"
    OPENAI_COMPLETIONS = "openai.completions"  # the legacy text completions API
    OPENAI_EMBEDDINGS = "openai.embeddings"
    ANTHROPIC_MESSAGES = "anthropic.messages"
    OPENAI_RESPONSES = "openai.responses"  # the Responses API (``POST /v1/responses``), OpenAI's error shape
    OPENAI_RESPONSES_INPUT_TOKENS = "openai.responses_input_tokens"  # ``POST /v1/responses/input_tokens``
    GEMINI_GENERATE = "gemini.generate_content"  # Google's Gemini API: generateContent, streamGenerateContent
    GEMINI_COUNT_TOKENS = "gemini.count_tokens"
    ANTHROPIC_COUNT_TOKENS = "anthropic.count_tokens"  # POST /anthropic/v1/messages/count_tokens: no generation

    @property
    def spec(self) -> ClientAPISpec:
        return CLIENT_APIS[self]

    def error_body(self, error: ErrorLike) -> bytes:
        """The gateway's own errors in this API's shape."""
        return orjson.dumps(FAMILIES[CLIENT_APIS[self].family].error_document(error))

    def stream_error_event(self, error: ErrorLike) -> bytes:
        """An error as this API's SDK reads it mid-stream (the SDKs raise it): Anthropic's ``event: error``,
        OpenAI's ``data: {"error": …}``, the Responses API's ``error`` event. Blank lines first end any event a
        cut-off chunk left open."""
        style = CLIENT_APIS[self].stream_error
        if style is StreamError.RESPONSES_EVENT:
            payload = {"type": "error", "code": error.error_type, "message": error.message, "param": None}
            return b"\n\nevent: error\ndata: " + orjson.dumps(payload) + b"\n\n"
        event = b"event: error\n" if style is StreamError.NAMED_EVENT else b""
        return b"\n\n" + event + b"data: " + self.error_body(error) + b"\n\n"


class ErrorLike(Protocol):
    """What an error body needs (``extproc.errors.GatewayError`` has it)."""

    @property
    def status(self) -> int: ...
    @property
    def error_type(self) -> str: ...
    @property
    def message(self) -> str: ...


class Family(StrEnum):
    """Whose API a client speaks: it fixes the error body, the model list and the key header."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    GOOGLE = "google"


class StreamError(StrEnum):
    """How a stream of this API carries an error its SDK raises."""

    DATA = "data"  # ``data: <error body>`` (OpenAI's chat and completions streams; Gemini's)
    NAMED_EVENT = "named_event"  # ``event: error`` + ``data: <error body>`` (Anthropic's Messages stream)
    RESPONSES_EVENT = "responses_event"  # the Responses API's ``error`` event: ``{"type","code","message","param"}``


# The gateway's own error types per status (Anthropic's names, https://docs.anthropic.com/en/api/errors): the
# default ``error_type`` of a gateway error, and the types an Anthropic client may see.
ERROR_TYPES: Mapping[int, str] = {
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
ANTHROPIC_ERROR_TYPES = frozenset((*ERROR_TYPES.values(), "billing_error"))
# Google's canonical error codes (google.rpc.Code) for the HTTP statuses, as the Gemini API names them in
# ``error.status``; any other status is named by its class (:func:`google_status`).
GOOGLE_STATUS: Mapping[int, str] = {
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
# Envoy's own replies (``render/local_replies.py``) name the statuses Envoy answers: what an upstream failure
# means to the client there (a 502/503 from Envoy is the provider unreachable, never the gateway overloaded).
LOCAL_REPLY_ANTHROPIC_TYPES: Mapping[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    431: "invalid_request_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
}
LOCAL_REPLY_GOOGLE_STATUS: Mapping[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    431: "INVALID_ARGUMENT",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
# Envoy writes the reply's status here; alone in a JSON-format value, it stays a JSON number.
ENVOY_RESPONSE_CODE = "%RESPONSE_CODE%"


def google_status(status: int) -> str:
    """``error.status`` for an HTTP status: the canonical code, else INVALID_ARGUMENT (4xx) or INTERNAL."""
    return GOOGLE_STATUS.get(status) or ("INVALID_ARGUMENT" if 400 <= status < 500 else "INTERNAL")


def anthropic_error_type(status: int, error_type: str) -> str:
    """Only Anthropic's error types: a gateway-specific one (``model_not_found``) becomes the status's."""
    return error_type if error_type in ANTHROPIC_ERROR_TYPES else ERROR_TYPES.get(status, "api_error")


# -- the three error bodies, each written once; `code` is an int, or Envoy's command operator in a local reply


def _openai_error(code: int | str, error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "code": str(code), "message": message}}


def _anthropic_error(code: int | str, error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}}


def _google_error(code: int | str, status: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}


# -- the three model lists: (model id, created unix seconds, owned_by) in config order


def _openai_models(models: list[tuple[str, int, str]], methods: tuple[str, ...]) -> dict[str, Any]:
    data = [{"id": model, "object": "model", "created": created, "owned_by": owner} for model, created, owner in models]
    return {"object": "list", "data": data}


def _anthropic_models(models: list[tuple[str, int, str]], methods: tuple[str, ...]) -> dict[str, Any]:
    """One page holding every model."""
    data = [
        {
            "type": "model",
            "id": model,
            "display_name": model,
            "created_at": datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        for model, created, _ in models
    ]
    first_id = data[0]["id"] if data else None
    last_id = data[-1]["id"] if data else None
    return {"data": data, "has_more": False, "first_id": first_id, "last_id": last_id}


def _google_models(models: list[tuple[str, int, str]], methods: tuple[str, ...]) -> dict[str, Any]:
    """``models.list``, one page (no ``nextPageToken``): names only, no token limits the gateway would invent."""
    entries = [
        {
            "name": f"models/{model}",
            "baseModelId": model,
            "displayName": model,
            "supportedGenerationMethods": [*methods],
        }
        for model, _, _ in models
    ]
    return {"models": entries}


@dataclass(frozen=True, slots=True)
class FamilySpec:
    family: Family
    roots: tuple[str, ...]  # errors on any path under these are in this family's shape (OpenAI's: the rest)
    models_path: str  # ``GET``: the model list in this family's shape
    key_header: str  # where this family's SDKs send their API key
    error_shape: Callable[[int | str, str, str], dict[str, Any]]
    error_type_for: Callable[[int, str], str]  # (status, the gateway's error type) → the body's type/status field
    local_reply_type_for: Callable[[int, str], str]  # (status, the reply's OpenAI type) → the same, for Envoy
    local_reply_code_for: Callable[[int], int | str]
    models_shape: Callable[[list[tuple[str, int, str]], tuple[str, ...]], dict[str, Any]]

    def error_document(self, error: ErrorLike) -> dict[str, Any]:
        """The body of one of the gateway's own errors."""
        return self.error_shape(error.status, self.error_type_for(error.status, error.error_type), error.message)

    def local_reply_document(self, status: int, openai_type: str, message: str) -> dict[str, Any]:
        """The body Envoy renders for one of its own replies (``message`` may hold command operators)."""
        return self.error_shape(
            self.local_reply_code_for(status), self.local_reply_type_for(status, openai_type), message
        )

    def models_document(self, models: list[tuple[str, int, str]]) -> dict[str, Any]:
        """The model list (``GET models_path``) of ``(model, created, owned_by)``, in order."""
        return self.models_shape(models, GEMINI_MODEL_METHODS)


FAMILIES: Mapping[Family, FamilySpec] = {
    Family.OPENAI: FamilySpec(
        Family.OPENAI,
        roots=(),
        models_path="/v1/models",
        key_header="authorization",
        error_shape=_openai_error,
        error_type_for=lambda status, error_type: error_type,
        local_reply_type_for=lambda status, openai_type: openai_type,
        local_reply_code_for=lambda status: status,
        models_shape=_openai_models,
    ),
    Family.ANTHROPIC: FamilySpec(
        Family.ANTHROPIC,
        roots=("/anthropic/",),  # even an unknown path under it is answered in Anthropic's shape
        models_path="/anthropic/v1/models",
        key_header="x-api-key",
        error_shape=_anthropic_error,
        error_type_for=anthropic_error_type,
        local_reply_type_for=lambda status, openai_type: LOCAL_REPLY_ANTHROPIC_TYPES[status],
        local_reply_code_for=lambda status: status,
        models_shape=_anthropic_models,
    ),
    Family.GOOGLE: FamilySpec(
        Family.GOOGLE,
        roots=("/v1beta/",),  # and a call path (GEMINI_CALL_PREFIXES, with a `:method`)
        models_path="/v1beta/models",  # only v1beta: the Gemini API's /v1/models is OpenAI's list here
        key_header="x-goog-api-key",
        error_shape=_google_error,
        error_type_for=lambda status, error_type: google_status(status),
        local_reply_type_for=lambda status, openai_type: LOCAL_REPLY_GOOGLE_STATUS[status],
        local_reply_code_for=lambda status: ENVOY_RESPONSE_CODE,
        models_shape=_google_models,
    ),
}
# The Gemini API's call paths, ``{prefix}{model}:{method}``: the SDKs' v1beta (their default, gemini-cli's) and v1.
GEMINI_CALL_PREFIXES = ("/v1beta/models/", "/v1/models/")


@dataclass(frozen=True, slots=True)
class ClientAPISpec:
    api: ClientAPI
    family: Family
    paths: tuple[str, ...]  # the ``POST`` paths, exact; the Gemini API's are ``{prefix}{model}:{method}``
    gemini_methods: tuple[tuple[str, bool], ...]  # its ``:method``s, and whether each streams
    streams: bool  # the body's ``stream`` asks for a stream (a non-boolean is refused)
    stream_error: StreamError
    operation: str  # ``gen_ai.operation.name`` (metrics), Envoy AI Gateway's values
    span_name: str  # the trace span's name (OpenInference's / Envoy AI Gateway's)
    span_kind: str = "LLM"  # ``openinference.span.kind``

    @property
    def family_spec(self) -> FamilySpec:
        return FAMILIES[self.family]


def _spec(
    api: ClientAPI,
    family: Family,
    paths: tuple[str, ...],
    operation: str,
    span_name: str,
    streams: bool = False,
    stream_error: StreamError = StreamError.DATA,
    gemini_methods: tuple[tuple[str, bool], ...] = (),
    span_kind: str = "LLM",
) -> ClientAPISpec:
    return ClientAPISpec(api, family, paths, gemini_methods, streams, stream_error, operation, span_name, span_kind)


# In ClientAPI's order. Operation names are Envoy AI Gateway's (its Anthropic endpoint is `messages`, its legacy
# completions `completion`); an API it lacks is named by the last part of its ClientAPI value. Span names are
# OpenInference's OpenAI instrumentation's (``ChatCompletion`` where it has none).
CLIENT_APIS: Mapping[ClientAPI, ClientAPISpec] = {
    spec.api: spec
    for spec in (
        _spec(ClientAPI.OPENAI_CHAT, Family.OPENAI, ("/v1/chat/completions",), "chat", "ChatCompletion", streams=True),
        _spec(
            ClientAPI.OPENAI_COMPLETIONS, Family.OPENAI, ("/v1/completions",), "completion", "Completion", streams=True
        ),
        _spec(
            ClientAPI.OPENAI_EMBEDDINGS,
            Family.OPENAI,
            ("/v1/embeddings",),
            "embeddings",
            "CreateEmbeddings",
            span_kind="EMBEDDING",
        ),
        _spec(
            ClientAPI.ANTHROPIC_MESSAGES,
            Family.ANTHROPIC,
            ("/anthropic/v1/messages",),
            "messages",
            "Messages",
            streams=True,
            stream_error=StreamError.NAMED_EVENT,
        ),
        _spec(
            ClientAPI.OPENAI_RESPONSES,
            Family.OPENAI,
            ("/v1/responses",),
            "responses",
            "Responses",
            streams=True,
            stream_error=StreamError.RESPONSES_EVENT,
        ),
        _spec(
            ClientAPI.OPENAI_RESPONSES_INPUT_TOKENS,
            Family.OPENAI,
            ("/v1/responses/input_tokens",),
            "responses_input_tokens",
            "ChatCompletion",
        ),
        _spec(
            ClientAPI.GEMINI_GENERATE,
            Family.GOOGLE,
            (),
            "generate_content",
            "ChatCompletion",
            gemini_methods=(("generateContent", False), ("streamGenerateContent", True)),
        ),
        _spec(
            ClientAPI.GEMINI_COUNT_TOKENS,
            Family.GOOGLE,
            (),
            "count_tokens",
            "ChatCompletion",
            gemini_methods=(("countTokens", False),),
        ),
        _spec(
            ClientAPI.ANTHROPIC_COUNT_TOKENS,
            Family.ANTHROPIC,
            ("/anthropic/v1/messages/count_tokens",),  # not charged: nothing is generated
            "count_tokens",
            "ChatCompletion",
        ),
    )
}

# ``POST`` path → client API, in catalog order (error messages list them so).
ENDPOINTS: Mapping[str, ClientAPI] = {path: spec.api for spec in CLIENT_APIS.values() for path in spec.paths}
# A Gemini API ``:method`` → (client API, whether it streams).
GEMINI_METHODS: Mapping[str, tuple[ClientAPI, bool]] = {
    method: (spec.api, stream) for spec in CLIENT_APIS.values() for method, stream in spec.gemini_methods
}
GEMINI_MODEL_METHODS = tuple(GEMINI_METHODS)  # what every listed model serves (``supportedGenerationMethods``)
