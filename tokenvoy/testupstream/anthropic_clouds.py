"""Claude on AWS Bedrock (InvokeModel) and on Google Vertex AI (rawPredict) for the fake provider.

Both clouds take Anthropic's Messages body with the model in the path instead, so the answers are
:mod:`anthropic_messages`' (same determinism contract, same validation); what is checked and shaped here
is what each cloud adds, as the real services do:

Bedrock — ``POST …/model/{modelId}/invoke`` and ``…/invoke-with-response-stream`` (model id URL-decoded)
    * 400 ``ValidationException`` when the body has ``model`` or ``stream`` (both belong to the path), lacks
      ``anthropic_version`` or has another value than ``bedrock-2023-05-31``; ``anthropic_beta`` (a list of
      strings) is accepted when every flag is one Bedrock lists (:data:`BEDROCK_BETAS`), else 400
      ``invalid beta flag``. Every error is ``{"message": …}`` with the exception name in ``x-amzn-errortype``
      (429 → ``ThrottlingException``, 400 → ``ValidationException``, 403 → ``AccessDeniedException``, …);
      Anthropic's own refusals (e.g. roles not alternating) come back as ``ValidationException``.
    * ids are ``msg_bdrk_N`` (tool calls ``toolu_bdrk_N``); ``x-amzn-bedrock-input-token-count`` /
      ``-output-token-count`` headers on JSON answers.
    * streams are ``application/vnd.amazon.eventstream``: one ``chunk`` event per Anthropic stream event,
      payload ``{"bytes": "<base64 of the event JSON>"}``; ``message_stop`` carries
      ``amazon-bedrock-invocationMetrics``. The request header ``x-testupstream-stream-exception: <name>``
      (e.g. ``throttlingException``) ends the stream after its first text delta with that ``exception``
      message, as Bedrock does when throttled mid-answer.

Vertex AI — ``POST …/publishers/anthropic/models/{model}:rawPredict`` and ``:streamRawPredict``
    * 400 (Anthropic's shape) when the body has ``model``, lacks ``anthropic_version`` or has another value
      than ``vertex-2023-10-16``, or when ``stream: true`` and the method disagree. The ``anthropic-beta``
      header is not checked: we found no documented list of the flags Vertex accepts.
    * ids are ``msg_vrtx_N``; streams are Anthropic's SSE.
    * ``…/publishers/anthropic/models/count-tokens:rawPredict`` counts tokens: Anthropic's count_tokens body
      with the model in the body (Google's "Count tokens for Claude models" page), ``anthropic_version``
      optional; ``{"input_tokens": N}`` (:func:`anthropic_messages.count_tokens`).
    * forced statuses (``x-testupstream-status``) answer in Google's shape,
      ``{"error": {"code": 429, "message": …, "status": "RESOURCE_EXHAUSTED"}}``, as Vertex's own quota and
      permission errors do; the model's refusals stay in Anthropic's shape.

Credentials are the app's business, not these routes': a SigV4-signed request is verified before it gets
here (``aws_auth.py``); Vertex's bearer token is not checked.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import orjson

from tokenvoy.extproc.eventstream import CONTENT_TYPE as EVENTSTREAM
from tokenvoy.extproc.eventstream import encode_event, encode_exception
from tokenvoy.testupstream import anthropic_messages
from tokenvoy.testupstream.anthropic_betas import BEDROCK_BETAS
from tokenvoy.testupstream.http import Request, Response

if TYPE_CHECKING:
    from tokenvoy.testupstream.server import App

__all__ = [
    "BEDROCK_VERSION",
    "H_STREAM_EXCEPTION",
    "VERTEX_VERSION",
    "bedrock_error",
    "bedrock_invoke",
    "invoke_body",
    "is_bedrock_invoke",
    "is_vertex_count_tokens",
    "is_vertex_raw_predict",
    "vertex_count_tokens",
    "vertex_error",
    "vertex_raw_predict",
]

BEDROCK_VERSION = "bedrock-2023-05-31"
VERTEX_VERSION = "vertex-2023-10-16"
H_STREAM_EXCEPTION = "x-testupstream-stream-exception"
JSON = "application/json"
SSE = "text/event-stream; charset=utf-8"
# The key the fake Anthropic validation needs; the clouds authenticate the request themselves.
_ANTHROPIC_HEADERS = {"x-api-key": "cloud-credentials", "anthropic-version": "2023-06-01"}
_BEDROCK_PATH = re.compile(r"/model/([^/]+)/(invoke|invoke-with-response-stream)$")
_VERTEX_PATH = re.compile(r"/publishers/anthropic/models/([^/:]+):(rawPredict|streamRawPredict)$")
VERTEX_COUNT_SUFFIX = "/publishers/anthropic/models/count-tokens:rawPredict"
_BEDROCK_EXCEPTIONS = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
_GOOGLE_STATUS = {
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


def is_bedrock_invoke(path: str) -> bool:
    return _BEDROCK_PATH.search(path) is not None


def is_vertex_raw_predict(path: str) -> bool:
    return _VERTEX_PATH.search(path) is not None and not is_vertex_count_tokens(path)


def is_vertex_count_tokens(path: str) -> bool:
    return path.endswith(VERTEX_COUNT_SUFFIX)


async def _paced(frames: list[bytes], delay: float) -> AsyncIterator[bytes]:
    for i, frame in enumerate(frames):
        if i:
            await asyncio.sleep(delay)
        yield frame


def _stream(frames: list[bytes], content_type: str, chunk_delay: float) -> Response:
    return Response(200, content_type=content_type, stream=frames if chunk_delay <= 0 else _paced(frames, chunk_delay))


# -- Bedrock --------------------------------------------------------------------------------------------


def bedrock_error(status: int, message: str) -> Response:
    """Bedrock's error: ``{"message"}`` with the exception named in ``x-amzn-errortype``."""
    name = _BEDROCK_EXCEPTIONS.get(status) or ("InternalServerException" if status >= 500 else "ValidationException")
    headers = [("x-amzn-errortype", f"{name}:http://internal.amazon.com/coral/com.amazon.bedrock/")]
    return Response(status, orjson.dumps({"message": message}), JSON, headers)


def _malformed(problem: str) -> Response:
    return bedrock_error(400, f"Malformed input request: {problem}, please reformat your input and try again.")


def bedrock_invoke(request: Request, app: App, chunk_delay: float) -> Response:
    """``InvokeModel`` / ``InvokeModelWithResponseStream`` for an Anthropic model."""
    match = _BEDROCK_PATH.search(request.path)
    assert match is not None  # the route matched it
    model, stream = unquote(match.group(1)), match.group(2) == "invoke-with-response-stream"
    body = invoke_body(request.body, model, stream)
    if isinstance(body, Response):
        return body
    reply = anthropic_messages.create_message(
        orjson.dumps(body), _ANTHROPIC_HEADERS, message_id=app.next_id("msg_bdrk_")
    )
    app.record_usage(request, reply.status, reply.body, reply.events)
    if reply.status != 200:  # Anthropic's refusal, passed on as Bedrock words it
        error = (reply.body or {}).get("error") or {}
        return bedrock_error(reply.status, str(error.get("message", "the model refused the request")))
    if reply.events is None:
        usage = (reply.body or {}).get("usage") or {}
        headers = [
            ("x-amzn-bedrock-input-token-count", str(usage.get("input_tokens", 0))),
            ("x-amzn-bedrock-output-token-count", str(usage.get("output_tokens", 0))),
        ]
        return Response(200, orjson.dumps(reply.body), JSON, headers)
    return _stream(_bedrock_frames(reply.events, request.headers.get(H_STREAM_EXCEPTION)), EVENTSTREAM, chunk_delay)


def invoke_body(raw: bytes, model: str, stream: bool) -> dict[str, Any] | Response:
    """An InvokeModel body checked as Bedrock checks it, as the Messages body it stands for (``model`` and
    ``stream`` from the path); or the error Bedrock answers."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        return _malformed("the body is not a JSON object")
    for key in ("model", "stream"):
        if key in body:
            return _malformed(f"#: extraneous key [{key}] is not permitted")
    version = body.pop("anthropic_version", None)
    if version is None:
        return _malformed("#: required key [anthropic_version] not found")
    if version != BEDROCK_VERSION:
        return _malformed(f"#/anthropic_version: {version!r} is not a valid enum value ({BEDROCK_VERSION})")
    betas = body.pop("anthropic_beta", None)
    if betas is not None and not (isinstance(betas, list) and all(isinstance(b, str) for b in betas)):
        return _malformed("#/anthropic_beta: expected an array of strings")
    unknown = [beta for beta in betas or () if beta not in BEDROCK_BETAS]
    if unknown:
        return bedrock_error(400, f"invalid beta flag: {unknown[0]}")
    body["model"] = model
    if stream:
        body["stream"] = True
    return body


def bedrock_chunk(event: dict[str, Any]) -> bytes:
    """One Anthropic stream event as Bedrock sends it: a ``chunk`` event carrying the JSON in base64."""
    return encode_event("chunk", orjson.dumps({"bytes": base64.b64encode(orjson.dumps(event)).decode()}))


def _bedrock_frames(events: list[dict[str, Any]], exception: str | None) -> list[bytes]:
    start = events[0]["message"]["usage"] if events and events[0].get("type") == "message_start" else {}
    frames = []
    for event in events:
        if event["type"] == "message_stop":
            output = next((e["usage"]["output_tokens"] for e in events if e["type"] == "message_delta"), 0)
            event = {
                **event,
                "amazon-bedrock-invocationMetrics": {
                    "inputTokenCount": start.get("input_tokens", 0),
                    "outputTokenCount": output,
                    "invocationLatency": 1,
                    "firstByteLatency": 1,
                },
            }
        frames.append(bedrock_chunk(event))
        if exception and event["type"] == "content_block_delta":
            message = {"message": "Too many requests, please wait before trying again."}
            frames.append(encode_exception(exception, orjson.dumps(message)))
            break
    return frames


# -- Vertex AI ------------------------------------------------------------------------------------------


def vertex_error(status: int, message: str) -> Response:
    """Vertex's own errors are Google's: ``{"error": {"code", "message", "status"}}``."""
    google = _GOOGLE_STATUS.get(status) or ("INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
    return Response(status, orjson.dumps({"error": {"code": status, "message": message, "status": google}}), JSON)


def _anthropic_400(message: str) -> Response:
    return Response(400, orjson.dumps(anthropic_messages.error_body(message)), JSON)


def vertex_raw_predict(request: Request, app: App, chunk_delay: float) -> Response:
    """``rawPredict`` / ``streamRawPredict`` of an Anthropic publisher model."""
    match = _VERTEX_PATH.search(request.path)
    assert match is not None  # the route matched it
    model, method = unquote(match.group(1)), match.group(2)
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        return _anthropic_400("There was an error parsing the body of your request: it is not a JSON object")
    if "model" in body:
        return _anthropic_400("model: Extra inputs are not permitted (the model is named in the URL)")
    version = body.pop("anthropic_version", None)
    if version is None:
        return _anthropic_400("anthropic_version: Field required")
    if version != VERTEX_VERSION:
        return _anthropic_400(f"anthropic_version: Input should be '{VERTEX_VERSION}', got {version!r}")
    if (body.get("stream") is True) != (method == "streamRawPredict"):
        return _anthropic_400(f'{method} needs "stream": {str(method == "streamRawPredict").lower()} in the body')
    body["model"] = model
    reply = anthropic_messages.create_message(
        orjson.dumps(body), _ANTHROPIC_HEADERS, message_id=app.next_id("msg_vrtx_")
    )
    app.record_usage(request, reply.status, reply.body, reply.events)
    if reply.events is None:
        return Response(reply.status, orjson.dumps(reply.body), JSON)
    return _stream([anthropic_messages.sse_frame(e) for e in reply.events], SSE, chunk_delay)


def vertex_count_tokens(request: Request, app: App, chunk_delay: float) -> Response:
    """``…/publishers/anthropic/models/count-tokens:rawPredict``: Anthropic's count_tokens body, the model named
    in the body (not the path) and ``anthropic_version`` allowed; ``{"input_tokens": N}`` as Anthropic counts."""
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        return _anthropic_400("There was an error parsing the body of your request: it is not a JSON object")
    version = body.pop("anthropic_version", VERTEX_VERSION)
    if version != VERTEX_VERSION:
        return _anthropic_400(f"anthropic_version: Input should be '{VERTEX_VERSION}', got {version!r}")
    if not isinstance(body.get("model"), str) or not body["model"]:
        return vertex_error(400, "The model to count tokens for must be named in the request body (`model`).")
    reply = anthropic_messages.count_tokens(orjson.dumps(body), _ANTHROPIC_HEADERS)
    return Response(reply.status, orjson.dumps(reply.body), JSON)
