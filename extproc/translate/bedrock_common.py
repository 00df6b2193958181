"""AWS Bedrock Converse / ConverseStream facts shared by the OpenAI- and Anthropic-client translators.

Converse is one body layout for every model on Bedrock: ``messages`` of typed content blocks (``{"text": …}``,
``{"image": …}``, ``{"toolUse": …}``, ``{"toolResult": …}``, ``{"reasoningContent": …}``,
``{"cachePoint": …}``), ``system`` blocks, ``inferenceConfig``, ``toolConfig`` and
``additionalModelRequestFields`` for what only one model family takes (Claude's ``thinking``, ``top_k``,
``anthropic_beta``). The answer has no id and no model: the id comes from the ``x-amzn-requestid``
response header, the model is the id the gateway sent. ConverseStream answers in the AWS event stream
framing (``extproc/eventstream.py``); errors carry their type in the ``x-amzn-errortype`` header
(``ThrottlingException:http://internal.amazon.com/…``) and a ``{"message": …}`` body, and an error after
the stream started is an ``exception`` message (``:exception-type: throttlingException``).

This module holds what both client APIs need: paths, usage normalisation, error details, the request
pieces (images, documents, cache points, tool config, role alternation) and :class:`BedrockTranslator`,
the response plumbing (buffering, event stream decoding, errors) whose client-specific parts each
translator fills in.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

import orjson

from tokenvoy.config.model import Backend
from tokenvoy.extproc.errors import GatewayError, UpstreamShapeError, untranslatable_field
from tokenvoy.extproc.errors import invalid_field as _invalid
from tokenvoy.extproc.eventstream import EventMessage, EventStreamDecoder, EventStreamError
from tokenvoy.extproc.translate.base import ClientRequest, HeaderChanges, TranslatorBase, UpstreamRequest
from tokenvoy.extproc.translate.bodies import WholeBody
from tokenvoy.extproc.translate.shapes import answer_object, require
from tokenvoy.extproc.usage import TokenUsage, token_count

log = logging.getLogger(__name__)

TARGET = "an AWS Bedrock backend"
PROVIDER = "the Bedrock Converse provider"
ERROR_TYPE_HEADER = "x-amzn-errortype"
REQUEST_ID_HEADER = "x-amzn-requestid"
JSON_CONTENT_TYPE = "application/json"
SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"

# Bedrock Runtime's exceptions and their HTTP statuses (the service model's ``httpStatusCode``).
EXCEPTION_STATUS: dict[str, int] = {
    "ValidationException": 400,
    "ServiceQuotaExceededException": 400,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
    "ModelTimeoutException": 408,
    "ModelErrorException": 424,
    "ModelStreamErrorException": 424,
    "ThrottlingException": 429,
    "ModelNotReadyException": 429,
    "InternalServerException": 500,
    "ServiceUnavailableException": 503,
}
_STATUS_EXCEPTION = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
DOCUMENT_FORMATS = {
    "application/pdf": "pdf",
    "text/csv": "csv",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "text/html": "html",
    "text/plain": "txt",
    "text/markdown": "md",
}


def unsupported(field: str, why: str) -> GatewayError:
    return untranslatable_field(field, TARGET, why)


# A Bedrock model id (or cross-region inference profile id, or the foundation-model ARN of either) names its
# provider first: ``anthropic.claude-…``, ``us.amazon.nova-pro-v1:0``. These are the providers other than
# Anthropic that Bedrock's model list names; an id that names none of them (an application inference profile's
# ARN, a provisioned model) is sent as it is.
_OTHER_FAMILY = re.compile(
    r"^(?:arn:[^/]*/)?(?:(?:us|eu|apac|jp|au|ca|us-gov|global)\.)?"
    r"(amazon|meta|mistral|cohere|ai21|deepseek|openai|qwen|writer|twelvelabs|moonshot|minimax|google|nvidia)\."
)
_CLAUDE_ONLY_FIELDS = ("thinking", "anthropic_beta")


def fit_model_fields(body: dict[str, Any], model: str) -> dict[str, Any]:
    """``additionalModelRequestFields`` as ``model`` takes them: Claude's ``thinking`` and ``anthropic_beta``
    are left out for another family's model (Bedrock answers them 400 "extraneous key [thinking] is not
    permitted"), and Amazon Nova gets ``top_k`` as its ``inferenceConfig.topK`` (Nova's user guide)."""
    fields = body.get("additionalModelRequestFields")
    match = _OTHER_FAMILY.match(model)
    if not fields or match is None:
        return body
    kept = {name: value for name, value in fields.items() if name not in _CLAUDE_ONLY_FIELDS}
    if len(kept) < len(fields):
        log.debug("Claude-only request fields not sent to %s: %s", model, ", ".join(sorted(set(fields) - set(kept))))
    if match.group(1) == "amazon" and "nova" in model and "top_k" in kept:
        kept["inferenceConfig"] = {**kept.get("inferenceConfig", {}), "topK": kept.pop("top_k")}
    out = {name: value for name, value in body.items() if name != "additionalModelRequestFields"}
    if kept:  # Nova refuses an empty object too
        out["additionalModelRequestFields"] = kept
    return out


def converse_path(prefix: str, model: str, stream: bool) -> str:
    """``/model/{id}/converse[-stream]``; the id is URL-encoded whole (inference profile ARNs hold ``:``
    and ``/``)."""
    return f"{prefix}/model/{quote(model, safe='')}/{'converse-stream' if stream else 'converse'}"


# ---- usage and errors -----------------------------------------------------------------------------------


def usage_from_bedrock(usage: object) -> TokenUsage:
    """Bedrock's ``inputTokens`` exclude cache reads and writes, so they are added back."""
    if not isinstance(usage, dict):
        return TokenUsage()
    plain = token_count(usage.get("inputTokens"), "inputTokens")
    cache_read = token_count(usage.get("cacheReadInputTokens"), "cacheReadInputTokens")
    cache_write = token_count(usage.get("cacheWriteInputTokens"), "cacheWriteInputTokens")
    output = token_count(usage.get("outputTokens"), "outputTokens")
    total_input = plain + cache_read + cache_write
    return TokenUsage(
        input=total_input,
        cached_input=cache_read,
        cache_creation_input=cache_write,
        output=output,
        total=total_input + output,
    )


def error_type_from_header(value: str | None) -> str | None:
    """``ThrottlingException:http://internal.amazon.com/…`` → ``ThrottlingException``."""
    if not value:
        return None
    name = value.split(":", 1)[0].strip()
    return name or None


def exception_for_status(status: int) -> str:
    return _STATUS_EXCEPTION.get(status) or ("InternalServerException" if status >= 500 else "ValidationException")


def error_details(status: int, header_type: str | None, raw: bytes) -> tuple[str, str]:
    """``(error type, message)`` of an error answer: the type from ``x-amzn-errortype`` (else the body's
    ``__type``, else the status); a body that is not Bedrock's JSON is kept whole as the message."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    error_type = header_type
    message = None
    if isinstance(body, dict):
        for key in ("message", "Message"):
            if isinstance(body.get(key), str):
                message = body[key]
                break
        kind = body.get("__type")
        if error_type is None and isinstance(kind, str) and kind:
            error_type = kind.rsplit("#", 1)[-1].split(":", 1)[0] or None
    if message is None:
        message = raw.decode("utf-8", errors="replace").strip() or f"the provider answered {status} with an empty body"
    return error_type or exception_for_status(status), message


def exception_details(message: EventMessage) -> tuple[str, int, str]:
    """``(error type, status, message)`` of a mid-stream ``exception`` (``throttlingException`` →
    ``ThrottlingException``, 429)."""
    name = message.event_type or "internalServerException"
    error_type = name[:1].upper() + name[1:]
    try:
        payload = orjson.loads(message.payload) if message.payload else None
    except orjson.JSONDecodeError:
        payload = None
    text = payload.get("message") if isinstance(payload, dict) else message.headers.get(":error-message")
    if not isinstance(text, str):
        text = message.payload.decode("utf-8", errors="replace").strip() or f"the provider's stream failed: {name}"
    return error_type, EXCEPTION_STATUS.get(error_type, 500), text


# ---- request pieces -------------------------------------------------------------------------------------


def image_block(media_type: str, data: str, where: str) -> dict[str, Any]:
    """A base64 image (``data`` stays base64: the JSON protocol carries blobs that way)."""
    image_format = IMAGE_FORMATS.get(media_type.lower())
    if image_format is None:
        raise unsupported(where, f"image type {media_type!r}: Bedrock takes png, jpeg, gif and webp")
    if not data:
        raise _invalid(where, "the image data is empty")
    return {"image": {"format": image_format, "source": {"bytes": data}}}


def document_block(media_type: str, data: str, name: str | None, where: str) -> dict[str, Any]:
    document_format = DOCUMENT_FORMATS.get(media_type.lower())
    if document_format is None:
        raise unsupported(where, f"document type {media_type!r}: Bedrock takes {', '.join(DOCUMENT_FORMATS.values())}")
    return {"document": {"format": document_format, "name": document_name(name), "source": {"bytes": data}}}


def document_name(name: str | None) -> str:
    """Bedrock allows only letters, digits, single spaces, hyphens, parentheses and brackets in a
    document's name (no dots: ``report.pdf`` becomes ``report``)."""
    stem = (name or "").rsplit(".", 1)[0] if name and "." in name else (name or "")
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in " -()[]") else "-" for c in stem)
    cleaned = " ".join(cleaned.split())[:200]
    return cleaned or "document"


def cache_point(cache_control: object) -> dict[str, Any] | None:
    """An Anthropic-style ``cache_control`` mark → the ``cachePoint`` block placed after the marked one."""
    if not isinstance(cache_control, dict):
        return None
    point: dict[str, Any] = {"type": "default"}
    ttl = cache_control.get("ttl")
    if ttl in ("5m", "1h"):
        point["ttl"] = ttl
    return {"cachePoint": point}


def tool_spec(name: object, description: object, schema: object, where: str) -> dict[str, Any]:
    if not isinstance(name, str) or not name:
        raise _invalid(f"{where}.name", "expected a non-empty string")
    spec: dict[str, Any] = {"name": name}
    if isinstance(description, str) and description:
        spec["description"] = description
    spec["inputSchema"] = {"json": schema if isinstance(schema, dict) else {"type": "object", "properties": {}}}
    return {"toolSpec": spec}


def has_tool_blocks(messages: list[dict[str, Any]]) -> bool:
    return any("toolUse" in block or "toolResult" in block for message in messages for block in message["content"])


def tool_config(
    tools: list[dict[str, Any]], choice: dict[str, Any] | None, messages: list[dict[str, Any]], choice_field: str
) -> dict[str, Any] | None:
    """``toolConfig``; ``choice`` None means "no tools may be called" (the client's ``none``).

    Bedrock has no ``none`` choice, and it refuses ``toolUse``/``toolResult`` blocks in the history unless a
    ``toolConfig`` declares tools: so ``none`` drops the tools, and is a 422 when the history holds tool
    blocks (declaring them would let the model call one). A history with tool blocks and no tools is a
    422 too, naming ``tools``.
    """
    history = has_tool_blocks(messages)
    if choice is None or not tools:
        if history:
            field = choice_field if tools else "tools"
            why = (
                "Bedrock has no `none` tool choice and reads tool calls in the history only with the tools "
                "declared (which would let the model call them)"
                if tools
                else "Bedrock reads tool calls and results in the history only when the request declares the tools"
            )
            raise unsupported(field, why)
        return None
    config: dict[str, Any] = {"tools": tools}
    if choice != {"auto": {}}:
        config["toolChoice"] = choice
    return config


def append_turn(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Add a turn, merging it into a previous turn of the same role (Bedrock wants user/assistant
    alternation), with tool results kept first in a user turn as Claude requires."""
    if not blocks:
        return
    if not messages or messages[-1]["role"] != role:
        messages.append({"role": role, "content": blocks})
        return
    merged = [*messages[-1]["content"], *blocks]
    messages[-1]["content"] = _results_first(merged) if any("toolResult" in b for b in blocks) else merged


def _results_first(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool results (each with the cache points right after it) first, the rest after, order kept."""
    segments: list[list[dict[str, Any]]] = []
    for block in blocks:
        if "cachePoint" in block and segments:
            segments[-1].append(block)
        else:
            segments.append([block])
    results = [b for segment in segments if "toolResult" in segment[0] for b in segment]
    others = [b for segment in segments if "toolResult" not in segment[0] for b in segment]
    return results + others


def inference_config(
    max_tokens: int | None, temperature: object, top_p: object, stop: list[str] | None
) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if max_tokens is not None:
        config["maxTokens"] = max_tokens
    for key, value in (("temperature", temperature), ("topP", top_p)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _invalid("temperature" if key == "temperature" else "top_p", "expected a number")
        config[key] = value
    if stop:
        config["stopSequences"] = stop
    return config


def json_schema_output(schema: object, name: object, description: object, field: str) -> dict[str, Any]:
    """Structured output: Bedrock's ``outputConfig.textFormat`` takes the JSON schema as a string."""
    if not isinstance(schema, dict):
        raise _invalid(field, "expected a JSON schema object")
    definition: dict[str, Any] = {"schema": orjson.dumps(schema).decode()}
    if isinstance(name, str) and name:
        definition["name"] = name
    if isinstance(description, str) and description:
        definition["description"] = description
    return {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": definition}}}


# ---- responses ------------------------------------------------------------------------------------------


class BedrockTranslator(TranslatorBase):
    """Response plumbing both client translators share; subclasses build the request and say how answers,
    stream events and errors look to their client.

    Errors (any status outside 2xx) are rewritten whole (``translate_error``); a 2xx answer is one JSON document, or
    for ``stream: true`` an event stream decoded message by message as the bytes come (any split).
    ``clock`` is injectable so timestamps are testable.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self._clock = clock
        self._model = ""
        self._stream = False
        self._body = WholeBody()
        self._request_id: str | None = None
        self._decoder = EventStreamDecoder()
        self._finished = False

    # -- client specific --

    def build(self, request: ClientRequest, model: str) -> dict[str, Any]:
        """The Converse body for the client's request (raises GatewayError)."""
        raise NotImplementedError

    def remove_headers(self) -> tuple[str, ...]:
        return ()

    def error_body(self, status: int, error_type: str, message: str) -> bytes:
        raise NotImplementedError

    def whole(self, response: dict[str, Any]) -> bytes:
        """The client's answer for a Converse JSON answer."""
        raise NotImplementedError

    def on_event(self, kind: str, payload: dict[str, Any], out: list[bytes]) -> None:
        raise NotImplementedError

    def on_error(self, status: int, error_type: str, message: str, out: list[bytes]) -> None:
        """An error after the stream started, in the client's stream shape; ends the stream."""
        raise NotImplementedError

    def on_end(self, out: list[bytes]) -> None:
        """The upstream stream ended before the client's stream was finished."""
        raise NotImplementedError

    # -- shared --

    @property
    def answer_id(self) -> str:
        """Bedrock's request id (the only id a Converse answer has), else a fresh one."""
        if self._request_id is None:
            self._request_id = uuid.uuid4().hex
        return self._request_id

    def read_usage(self, usage: object) -> None:
        if isinstance(usage, dict):
            self.report_usage(usage_from_bedrock(usage))

    def translate_request(self, request: ClientRequest, backend: Backend, model: str) -> UpstreamRequest:
        self.answer.keep = request.capture_output
        body = fit_model_fields(self.build(request, model), model)
        self._model = model
        self._stream = request.stream
        return UpstreamRequest(
            path=converse_path(backend.path_prefix, model, self._stream),
            body=orjson.dumps(body),
            set_headers={"content-type": JSON_CONTENT_TYPE},
            remove_headers=self.remove_headers(),
        )

    def translate_response_headers(self, headers: dict[str, str]) -> HeaderChanges | None:
        request_id = headers.get(REQUEST_ID_HEADER)
        if request_id:
            self._request_id = request_id
        self.response_model = self._model  # Converse answers name no model: the one sent is the one used
        content_type = SSE_CONTENT_TYPE if self._stream else JSON_CONTENT_TYPE
        return HeaderChanges({"content-type": content_type}, ("content-length",))

    def translate_error(self, status: int, headers: Mapping[str, str], body: bytes) -> bytes | None:
        header_type = error_type_from_header(headers.get(ERROR_TYPE_HEADER))
        error_type, message = error_details(status, header_type, body)
        return self.error_body(status, error_type, message)

    def translate_response_body(self, chunk: bytes, end_of_stream: bool) -> bytes | None:
        if self._stream:
            return self._translate_stream(chunk, end_of_stream)
        raw = self._body.collect(chunk, end_of_stream)
        if raw is None:
            return b""
        response = answer_object(raw, PROVIDER)  # not a Converse answer: a 502, not an invented empty one
        output = require(response, "output", dict, PROVIDER)
        message = output.get("message")
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            raise UpstreamShapeError(f"{PROVIDER}'s answer has no `output.message.content` array")
        return self.whole(response)

    def _translate_stream(self, chunk: bytes, end_of_stream: bool) -> bytes:
        out: list[bytes] = []
        if self._finished:
            return b""
        corrupt: EventStreamError | None = None
        try:
            messages = self._decoder.feed(chunk) if chunk else []
        except EventStreamError as exc:
            messages, corrupt = exc.messages, exc  # the messages before the bad one are still answered
        for message in messages:
            if self._finished:
                break
            if message.message_type == "event":
                try:
                    payload = orjson.loads(message.payload) if message.payload else {}
                except orjson.JSONDecodeError:
                    continue
                if isinstance(payload, dict):
                    self.on_event(message.event_type, payload, out)
            else:  # ``exception`` (modelled errors) or ``error`` (unmodelled ones)
                error_type, status, text = exception_details(message)
                self.on_error(status, error_type, text, out)
                self._finished = True
        if corrupt is not None and not self._finished:
            self._finished = True
            raise UpstreamShapeError(f"{PROVIDER}'s event stream is corrupt: {corrupt}", b"".join(out))
        if end_of_stream and not self._finished:
            self._finished = True
            self.on_end(out)
        return b"".join(out)
