"""The fake LLM provider app: routing, test-control headers, request recording, and the CLI.

Endpoints
    ``POST …/chat/completions``
        OpenAI Chat Completions (any path prefix, e.g. ``/v1``, ``/openai/v1``).
    ``POST …/responses``
        OpenAI Responses API (``/v1/responses``, Azure's ``/openai/v1/responses``), and ``…/responses/input_tokens``;
        see ``openai_responses.py``.
    ``POST …/messages``, ``…/messages/count_tokens``
        Anthropic Messages and token counting (``/v1/messages`` or any prefix); see ``anthropic_messages.py``.
    ``POST /openai/deployments/{deployment}/chat/completions|embeddings?api-version=…``
        Azure OpenAI (checked before the generic chat route); see ``azure.py``.
    ``POST …/embeddings``, ``POST …/completions``
        OpenAI Embeddings and legacy Completions; see ``embeddings.py`` and ``completions.py``.
    ``POST …/publishers/google/models/{model}:predict``
        GCP Vertex AI text embeddings; see ``embeddings.py``.
    ``POST …/publishers/google/models/{model}:generateContent``
        Gemini on GCP Vertex AI (JSON answer); see ``gemini.py``.
    ``POST …/publishers/google/models/{model}:streamGenerateContent[?alt=sse]``
        Gemini on GCP Vertex AI, streamed (SSE with ``alt=sse``, else one JSON array); see ``gemini.py``.
    ``POST …/publishers/google/models/{model}:countTokens``
        Gemini on GCP Vertex AI, counting a prompt's tokens; see ``gemini.py``.
    ``POST /model/{amazon.titan-embed-…}/invoke``
        AWS Bedrock InvokeModel of a Titan text embeddings model; see ``embeddings.py``.
    ``POST …/model/{modelId}/converse``, ``…/converse-stream``
        AWS Bedrock Converse (JSON) and ConverseStream (event stream answers); see ``bedrock_converse.py``.
    ``POST …/model/{modelId}/invoke``, ``…/invoke-with-response-stream``
        Claude on AWS Bedrock InvokeModel (event stream answers); see ``anthropic_clouds.py``.
    ``POST …/model/{modelId}/count-tokens``
        AWS Bedrock CountTokens (InvokeModel or Converse input); see ``bedrock_count_tokens.py``.
    ``POST …/publishers/anthropic/models/{model}:rawPredict``, ``:streamRawPredict``, ``count-tokens:rawPredict``
        Claude on GCP Vertex AI, and its token counting; see ``anthropic_clouds.py``.
    ``GET /health``
        ``200 ok``.
    ``GET /__testupstream/requests``
        JSON list of the last 100 requests received (oldest first; admin and health calls not included):
        ``method``, ``path`` (with query), ``headers`` (lower-cased names), ``body`` (text).
    ``DELETE /__testupstream/requests``
        clears that list (``204``).
    ``GET /__testupstream/usage``, ``DELETE /__testupstream/usage``
        the token usage the fake reported in its 2xx chat answers (every schema), summed in all and per
        ``x-user-id``: ``{"total": {"requests", "input_tokens", "output_tokens", "total_tokens"}, "by_user":
        {...}}``; a stream counts whole, even if the client hung up early (see ``usage_tally.py``).
    ``POST /__testupstream/gcp/token``, ``/{tenant}/oauth2/v2.0/token`` (+ its openid-configuration),
    ``GET|DELETE /__testupstream/tokens``
        fake Google and Microsoft Entra token endpoints and the grants they issued; see ``token_endpoints.py``.
    any request whose body is sent ``transfer-encoding: chunked``
        ``411 Length Required`` in the provider's error shape (and Google's or Entra ID's OAuth error on the
        token endpoints): botocore and the providers' SDKs always send ``content-length``, and provider front
        ends refuse a body without it, so a gateway must not send one chunked.
    any request signed ``AWS4-HMAC-SHA256``
        its SigV4 signature is verified first (403 ``InvalidSignatureException`` … like AWS); see ``aws_auth.py``.
    anything else
        ``404`` with OpenAI's ``Invalid URL (METHOD /path)`` error.

Test-control request headers (Envoy passes them through, so tests set them on the client request). They
apply to every provider route and to unknown paths, in this order:

    ``x-testupstream-expect-path: /v1/chat/completions``
        400 unless the request path equals it (compared with the query string if the value has a ``?``).
    ``x-testupstream-expect-header: name=value[, name2=value2]``
        400 naming the first header that is missing or different; may be repeated; a bare ``name`` only
        requires presence. Values are compared exactly after trimming, so they cannot contain commas.
    ``x-testupstream-delay-ms: N``
        wait N ms before answering (e.g. to trip timeouts or measure latency).
    ``x-testupstream-status: 503``
        reply with that status. >= 400 without a body header: the provider's error JSON for that status
        (OpenAI: ``server_error`` for 5xx, ``rate_limit_exceeded`` for 429, ...). < 400: normal reply, status
        replaced.
    ``x-testupstream-body: <base64>``
        reply with exactly these bytes (status from ``x-testupstream-status``, default 200), content type
        from ``x-testupstream-content-type`` (default ``application/json``).
    ``x-testupstream-chunk-delay-ms: N``
        streamed replies: wait N ms before each SSE event after the first (time-to-first-token is
        ``delay-ms``, inter-token latency is this).
    ``x-testupstream-content-encoding: gzip|deflate|deflate-raw|br``
        compress the answer (any route, errors and forced statuses included) and label it with
        ``content-encoding`` (``deflate-raw`` is raw RFC 1951 data labelled ``deflate``, as some servers send).
        Streamed answers are compressed as one stream flushed after every event, so the compressed bytes
        of each event go out as their own chunk; the last chunk is the stream's end (gzip's trailer).
        With ``x-testupstream-body`` the given bytes are sent as they are, only labelled: that is how a
        test sends corrupt compressed data.

Mismatches of the ``expect`` headers are answered with 400 and an error body whose message starts with
``testupstream:`` so a failing test shows what the gateway actually sent (never compressed).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import itertools
import logging
import signal
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from ssl import SSLContext
from typing import Any
from urllib.parse import unquote

import brotli
import orjson

from tokenvoy.testupstream import (
    anthropic_clouds,
    anthropic_messages,
    aws_auth,
    azure,
    bedrock_converse,
    bedrock_count_tokens,
    completions,
    credentials,
    embeddings,
    gemini,
    openai_chat,
    openai_responses,
    token_endpoints,
)
from tokenvoy.testupstream.http import HttpServer, Request, Response, start
from tokenvoy.testupstream.usage_tally import UsageTally

__all__ = [
    "App",
    "BackgroundServer",
    "Route",
    "RunningServer",
    "main",
    "run_in_thread",
    "serve",
]

RECORD_LIMIT = 100
REQUESTS_PATH = "/__testupstream/requests"
USAGE_PATH = "/__testupstream/usage"

H_STATUS = "x-testupstream-status"
H_BODY = "x-testupstream-body"
H_CONTENT_TYPE = "x-testupstream-content-type"
H_DELAY = "x-testupstream-delay-ms"
H_CHUNK_DELAY = "x-testupstream-chunk-delay-ms"
H_EXPECT_HEADER = "x-testupstream-expect-header"
H_EXPECT_PATH = "x-testupstream-expect-path"
H_CONTENT_ENCODING = "x-testupstream-content-encoding"
_CONTROL = frozenset((H_STATUS, H_BODY, H_DELAY, H_CHUNK_DELAY, H_EXPECT_HEADER, H_EXPECT_PATH, H_CONTENT_ENCODING))

JSON = "application/json"
SSE = "text/event-stream; charset=utf-8"


LENGTH_REQUIRED = "Length Required: send the request body with content-length, not transfer-encoding: chunked"


def json_response(status: int, body: Any) -> Response:
    return Response(status, orjson.dumps(body), JSON)


@dataclass(frozen=True, slots=True)
class Route:
    """A provider endpoint: which requests it takes, how it answers, and how its errors look.

    ``handle`` gets the request, the app (for ids and per-request settings) and the chunk delay in seconds
    (0 when not asked for). ``error`` renders a provider-shaped error body for a status and message, used
    for forced statuses and failed expectations on this route. ``auth`` is the provider's credential check
    (``credentials.py``), run before ``handle``; None: the route takes any caller.
    """

    name: str
    method: str
    matches: Callable[[str], bool]
    handle: Callable[[Request, App, float], Response]
    error: Callable[[int, str], Response]
    auth: Callable[[Request, credentials.Policy], credentials.Refusal | None] | None = None


def _openai_auth(request: Request, rules: credentials.Policy) -> credentials.Refusal | None:
    return credentials.openai(request.headers, request.path, rules)


def _anthropic_auth(request: Request, rules: credentials.Policy) -> credentials.Refusal | None:
    return credentials.anthropic(request.headers, rules)


def _azure_auth(request: Request, rules: credentials.Policy) -> credentials.Refusal | None:
    return credentials.azure(request.headers, rules)


def _google_auth(request: Request, rules: credentials.Policy) -> credentials.Refusal | None:
    return credentials.google(request.headers, request.query, rules)


def _aws_auth(request: Request, rules: credentials.Policy) -> credentials.Refusal | None:
    return credentials.bedrock(request.headers, rules)


# -- OpenAI ---------------------------------------------------------------------------------------------


def _openai_error(status: int, message: str) -> Response:
    return json_response(status, openai_chat.error_for_status(status, message))


def _openai_chat(request: Request, app: App, chunk_delay: float) -> Response:
    """Adapter: HTTP request → :func:`openai_chat.chat_completion` → JSON or SSE response."""
    try:
        payload = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        return json_response(400, openai_chat.invalid_json_error())
    reply = openai_chat.chat_completion(payload, completion_id=app.next_id("chatcmpl-"), created=app.now())
    app.record_usage(request, reply.status, reply.body, reply.chunks)
    if reply.chunks is None:
        return json_response(reply.status, reply.body)
    frames = [openai_chat.sse_frame(c) for c in reply.chunks]
    frames.append(openai_chat.SSE_DONE)
    stream = frames if chunk_delay <= 0 else _paced(frames, chunk_delay)
    return Response(reply.status, content_type=SSE, stream=stream)


async def _paced(frames: list[bytes], delay: float) -> AsyncIterator[bytes]:
    """Yield SSE events with ``delay`` seconds between them (the first goes out at once)."""
    for i, frame in enumerate(frames):
        if i:
            await asyncio.sleep(delay)
        yield frame


OPENAI_CHAT = Route(
    name="openai.chat_completions",
    method="POST",
    matches=lambda path: path.endswith("/chat/completions"),
    handle=_openai_chat,
    error=_openai_error,
    auth=_openai_auth,
)


def _openai_responses(request: Request, app: App, chunk_delay: float) -> Response:
    """Adapter: HTTP request → :func:`openai_responses.create_response` → JSON or SSE (no ``[DONE]``)."""
    try:
        payload = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        return json_response(400, openai_chat.invalid_json_error())
    reply = openai_responses.create_response(
        payload, response_id=app.next_id("resp_"), created=app.now(), stored=app.stored_responses
    )
    if reply.stored is not None:
        app.stored_responses.add(reply.stored)
    if reply.events is None:
        return json_response(reply.status, reply.body)
    frames = [openai_responses.sse_frame(e) for e in reply.events]
    return Response(reply.status, content_type=SSE, stream=frames if chunk_delay <= 0 else _paced(frames, chunk_delay))


def _openai_input_tokens(request: Request, app: App, chunk_delay: float) -> Response:
    try:
        payload = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        return json_response(400, openai_chat.invalid_json_error())
    reply = openai_responses.count_input_tokens(payload, stored=app.stored_responses)
    return json_response(reply.status, reply.body)


OPENAI_INPUT_TOKENS = Route(
    name="openai.responses_input_tokens",
    method="POST",
    matches=lambda path: path.endswith("/responses/input_tokens"),
    handle=_openai_input_tokens,
    error=_openai_error,
    auth=_openai_auth,
)

OPENAI_RESPONSES = Route(
    name="openai.responses",
    method="POST",
    matches=lambda path: path.endswith("/responses"),
    handle=_openai_responses,
    error=_openai_error,
    auth=_openai_auth,
)

# -- Anthropic ------------------------------------------------------------------------------------------


def _anthropic_error(status: int, message: str) -> Response:
    return json_response(status, anthropic_messages.error_for_status(status, message))


def _anthropic_messages(request: Request, app: App, chunk_delay: float) -> Response:
    """Adapter: HTTP request → :func:`anthropic_messages.create_message` → JSON or SSE response."""
    reply = anthropic_messages.create_message(request.body, request.headers, message_id=app.next_id("msg_"))
    app.record_usage(request, reply.status, reply.body, reply.events)
    if reply.events is None:
        return json_response(reply.status, reply.body)
    frames = [anthropic_messages.sse_frame(e) for e in reply.events]
    stream = frames if chunk_delay <= 0 else _paced(frames, chunk_delay)
    return Response(reply.status, content_type=SSE, stream=stream)


def _anthropic_count_tokens(request: Request, app: App, chunk_delay: float) -> Response:
    reply = anthropic_messages.count_tokens(request.body, request.headers)
    return json_response(reply.status, reply.body)


ANTHROPIC_COUNT_TOKENS = Route(
    name="anthropic.messages.count_tokens",
    method="POST",
    matches=lambda path: path.endswith("/messages/count_tokens"),
    handle=_anthropic_count_tokens,
    error=_anthropic_error,
    auth=_anthropic_auth,
)

ANTHROPIC_MESSAGES = Route(
    name="anthropic.messages",
    method="POST",
    matches=lambda path: path.endswith("/messages"),
    handle=_anthropic_messages,
    error=_anthropic_error,
    auth=_anthropic_auth,
)

# -- Azure OpenAI ---------------------------------------------------------------------------------------


def _azure_error(status: int, message: str) -> Response:
    return json_response(status, azure.error_for_status(status, message))


def _azure(request: Request, app: App, chunk_delay: float) -> Response:
    """Adapter: ``/openai/deployments/{d}/{operation}`` → :mod:`azure` (chat) or :mod:`embeddings`."""
    parsed = azure.parse_path(request.path)
    if parsed is None:
        return _azure_error(404, "Resource not found")
    deployment, operation = parsed
    refused = azure.check_request(request.query, request.headers, deployment)
    if refused is not None:
        return json_response(*refused)
    if operation not in ("chat/completions", "embeddings"):
        return _azure_error(404, "Resource not found")
    try:
        payload = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        return _azure_error(400, "The request body is not valid JSON.")
    if operation == "embeddings":
        reply = embeddings.openai_embeddings(payload, model_from_path=deployment)
        if reply.status != 200:
            error = reply.body.get("error", {})
            return _azure_error(reply.status, str(error.get("message", "Bad request")))
        return json_response(200, reply.body)
    chat = azure.chat_completion(payload, deployment, completion_id=app.next_id("chatcmpl-"), created=app.now())
    app.record_usage(request, chat.status, chat.body, chat.chunks)
    if chat.chunks is None:
        return json_response(chat.status, chat.body)
    return _sse(chat.status, [openai_chat.sse_frame(c) for c in chat.chunks], chunk_delay)


def _sse(status: int, frames: list[bytes], chunk_delay: float) -> Response:
    """OpenAI-style SSE frames ended by ``data: [DONE]``, paced when asked."""
    frames.append(openai_chat.SSE_DONE)
    return Response(status, content_type=SSE, stream=frames if chunk_delay <= 0 else _paced(frames, chunk_delay))


AZURE_OPENAI = Route(
    name="azure.openai",
    method="POST",
    matches=lambda path: "/openai/deployments/" in path,
    handle=_azure,
    error=_azure_error,
    auth=_azure_auth,
)

# -- embeddings and legacy completions ------------------------------------------------------------------


def _embeddings_response(reply: embeddings.EmbeddingsReply) -> Response:
    response = json_response(reply.status, reply.body)
    response.headers.extend(reply.headers)
    return response


def _json_body(request: Request) -> Any:
    try:
        return orjson.loads(request.body)
    except orjson.JSONDecodeError:
        return _INVALID


_INVALID = object()  # a body that is not JSON: each provider's own "malformed" answer


def _openai_embeddings(request: Request, app: App, chunk_delay: float) -> Response:
    payload = _json_body(request)
    if payload is _INVALID:
        return json_response(400, openai_chat.invalid_json_error())
    return _embeddings_response(embeddings.openai_embeddings(payload))


OPENAI_EMBEDDINGS = Route(
    name="openai.embeddings",
    method="POST",
    matches=lambda path: path.endswith("/embeddings"),
    handle=_openai_embeddings,
    error=_openai_error,
    auth=_openai_auth,
)


def _openai_completions(request: Request, app: App, chunk_delay: float) -> Response:
    payload = _json_body(request)
    if payload is _INVALID:
        return json_response(400, openai_chat.invalid_json_error())
    reply = completions.completion(payload, completion_id=app.next_id("cmpl-"), created=app.now())
    app.record_usage(request, reply.status, reply.body, reply.chunks)
    if reply.chunks is None:
        return json_response(reply.status, reply.body)
    return _sse(reply.status, [openai_chat.sse_frame(c) for c in reply.chunks], chunk_delay)


OPENAI_COMPLETIONS = Route(
    name="openai.completions",
    method="POST",
    matches=lambda path: path.endswith("/completions") and not path.endswith("/chat/completions"),
    handle=_openai_completions,
    error=_openai_error,
    auth=_openai_auth,
)

_VERTEX_MODEL = "/publishers/google/models/"


def _vertex_error(status: int, message: str) -> Response:
    return json_response(status, embeddings.google_error(status, message))


def _vertex_predict(request: Request, app: App, chunk_delay: float) -> Response:
    model = unquote(request.path.rsplit(_VERTEX_MODEL, 1)[1].removesuffix(":predict"))
    payload = _json_body(request)
    if payload is _INVALID:
        return _vertex_error(400, "Invalid JSON payload received.")
    return _embeddings_response(embeddings.vertex_predict(payload, model))


VERTEX_EMBEDDINGS = Route(
    name="gcp.vertex_ai.predict",
    method="POST",
    matches=lambda path: _VERTEX_MODEL in path and path.endswith(":predict"),
    handle=_vertex_predict,
    error=_vertex_error,
    auth=_google_auth,
)


def _titan_model(path: str) -> str:
    return unquote(path.removeprefix("/model/").removesuffix("/invoke"))


def _titan_error(status: int, message: str) -> Response:
    kind = {400: "ValidationException", 403: "AccessDeniedException", 404: "ResourceNotFoundException"}
    kind |= {429: "ThrottlingException", 503: "ServiceUnavailableException"}
    return _embeddings_response(embeddings.titan_error(status, message, kind.get(status, "InternalServerException")))


def _titan_invoke(request: Request, app: App, chunk_delay: float) -> Response:
    payload = _json_body(request)
    if payload is _INVALID:
        return _titan_error(400, "Malformed input request, please reformat your input and try again.")
    return _embeddings_response(embeddings.titan_invoke(payload, _titan_model(request.path)))


TITAN_EMBEDDINGS = Route(
    name="aws.bedrock.titan_embeddings",
    method="POST",
    matches=lambda path: (
        path.startswith("/model/") and path.endswith("/invoke") and "titan-embed" in _titan_model(path)
    ),
    handle=_titan_invoke,
    error=_titan_error,
    auth=_aws_auth,
)

BEDROCK_ANTHROPIC = Route(
    name="aws.bedrock.anthropic_invoke",
    method="POST",
    matches=anthropic_clouds.is_bedrock_invoke,
    handle=anthropic_clouds.bedrock_invoke,
    error=anthropic_clouds.bedrock_error,
    auth=_aws_auth,
)

BEDROCK_COUNT_TOKENS = Route(
    name="aws.bedrock.count_tokens",
    method="POST",
    matches=bedrock_count_tokens.matches,
    handle=bedrock_count_tokens.handle,
    error=anthropic_clouds.bedrock_error,
    auth=_aws_auth,
)

VERTEX_COUNT_TOKENS = Route(
    name="gcp.vertex_ai.anthropic_count_tokens",
    method="POST",
    matches=anthropic_clouds.is_vertex_count_tokens,
    handle=anthropic_clouds.vertex_count_tokens,
    error=anthropic_clouds.vertex_error,
    auth=_google_auth,
)

VERTEX_ANTHROPIC = Route(
    name="gcp.vertex_ai.anthropic_raw_predict",
    method="POST",
    matches=anthropic_clouds.is_vertex_raw_predict,
    handle=anthropic_clouds.vertex_raw_predict,
    error=anthropic_clouds.vertex_error,
    auth=_google_auth,
)

_GEMINI_GENERATE = ":generateContent"
_GEMINI_STREAM = ":streamGenerateContent"


def _gemini_error(status: int, message: str) -> Response:
    return json_response(status, gemini.error_body(status, message))


def _gemini(request: Request, app: App, chunk_delay: float) -> Response:
    """Adapter: HTTP request → :func:`gemini.generate_content` → JSON, a JSON array, or SSE."""
    name, _, method = request.path.rsplit(_VERTEX_MODEL, 1)[1].rpartition(":")
    stream = ":" + method == _GEMINI_STREAM
    reply = gemini.generate_content(
        request.body,
        unquote(name),
        stream=stream,
        response_id=app.next_id("gemini-response-"),
        created=gemini.create_time(app.now()),
    )
    app.record_usage(request, reply.status, reply.body, reply.chunks)
    if reply.chunks is None:
        return json_response(reply.status, reply.body)
    if "alt=sse" not in request.query.split("&"):
        return json_response(reply.status, reply.chunks)  # Vertex's default stream: one JSON array
    frames = [gemini.sse_frame(c) for c in reply.chunks]
    return Response(reply.status, content_type=SSE, stream=frames if chunk_delay <= 0 else _paced(frames, chunk_delay))


GEMINI_GENERATE = Route(
    name="gcp.vertex_ai.generate_content",
    method="POST",
    matches=lambda path: _VERTEX_MODEL in path and path.endswith(_GEMINI_GENERATE),
    handle=_gemini,
    error=_gemini_error,
    auth=_google_auth,
)


def _gemini_count(request: Request, app: App, chunk_delay: float) -> Response:
    reply = gemini.count_tokens(request.body)
    return json_response(reply.status, reply.body)


GEMINI_COUNT_TOKENS = Route(
    name="gcp.vertex_ai.count_tokens",
    method="POST",
    matches=lambda path: _VERTEX_MODEL in path and path.endswith(":countTokens"),
    handle=_gemini_count,
    error=_gemini_error,
    auth=_google_auth,
)
GEMINI_STREAM = Route(
    name="gcp.vertex_ai.stream_generate_content",
    method="POST",
    matches=lambda path: _VERTEX_MODEL in path and path.endswith(_GEMINI_STREAM),
    handle=_gemini,
    error=_gemini_error,
    auth=_google_auth,
)

BEDROCK_CONVERSE = Route(
    name="aws.bedrock.converse",
    method="POST",
    matches=bedrock_converse.matches,
    handle=bedrock_converse.handle,
    error=bedrock_converse.error_response,
    auth=_aws_auth,
)

DEFAULT_ROUTES: tuple[Route, ...] = (
    AZURE_OPENAI,
    TITAN_EMBEDDINGS,
    OPENAI_CHAT,
    OPENAI_RESPONSES,
    OPENAI_INPUT_TOKENS,
    ANTHROPIC_COUNT_TOKENS,
    ANTHROPIC_MESSAGES,
    BEDROCK_ANTHROPIC,
    BEDROCK_CONVERSE,
    BEDROCK_COUNT_TOKENS,
    VERTEX_COUNT_TOKENS,
    VERTEX_ANTHROPIC,
    OPENAI_EMBEDDINGS,
    OPENAI_COMPLETIONS,
    VERTEX_EMBEDDINGS,
    GEMINI_GENERATE,
    GEMINI_STREAM,
    GEMINI_COUNT_TOKENS,
)
"""Providers served by default; new provider modules add their ``Route`` here."""


# -- the app --------------------------------------------------------------------------------------------


class ControlError(Exception):
    """A test-control header is malformed or an expectation failed: answered with ``status`` + message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class App:
    """The request handler: records requests, applies test-control headers, dispatches to a route."""

    def __init__(self, routes: tuple[Route, ...] = DEFAULT_ROUTES, record_limit: int = RECORD_LIMIT) -> None:
        self.routes = routes
        self._records: deque[tuple[str, str, dict[str, str], bytes]] = deque(maxlen=record_limit)
        self._ids = itertools.count(1)
        self.tokens = token_endpoints.TokenEndpoints()
        self.aws_keys = aws_auth.known_keys()
        self.require_sigv4 = aws_auth.required({})
        self.credentials = credentials.from_environ()  # who may call; a request's control headers may say
        self.stored_responses: set[str] = set()  # Responses API ids a `previous_response_id` may name
        self.usage = UsageTally()

    def record_usage(self, request: Request, status: int, body: Any, events: list[Any] | None) -> None:
        """Count what a chat answer reports (``events``: a stream's documents, else ``body``)."""
        if 200 <= status < 300:
            self.usage.record(request.headers, [body] if events is None else events)

    def next_id(self, prefix: str) -> str:
        """Sequential ids (``chatcmpl-1``, ``chatcmpl-2``, ...) so replies are reproducible per run."""
        return f"{prefix}{next(self._ids)}"

    @staticmethod
    def now() -> int:
        return int(time.time())

    def requests(self) -> list[dict[str, Any]]:
        """The recorded requests, oldest first (call from the server's loop thread)."""
        return [
            {"method": m, "path": t, "headers": h, "body": b.decode("utf-8", "replace")} for m, t, h, b in self._records
        ]

    def clear(self) -> None:
        self._records.clear()

    def __call__(self, request: Request) -> Response | Awaitable[Response]:
        path = request.path
        if path == "/health" or path.startswith("/__testupstream/"):
            return self._admin(request)
        if path.endswith(token_endpoints.AZURE_SUFFIXES):  # Entra ID: not recorded (the body holds a secret)
            return self.tokens.azure(request)
        self._records.append((request.method, request.target, request.headers, request.body))
        headers = request.headers
        if request.chunked:
            route = self._route(request)
            return (route.error if route is not None else _openai_error)(411, LENGTH_REQUIRED)
        if self.require_sigv4 or headers.get("authorization", "").startswith("AWS4-") or aws_auth.H_REQUIRE in headers:
            refused = self._check_sigv4(request)
            if refused is not None:
                return refused
        route = self._route(request)
        if _CONTROL.isdisjoint(headers):
            if route is None:
                return json_response(404, openai_chat.invalid_url_error(request.method, path))
            return self._handle(request, route, 0.0)
        error = route.error if route is not None else _openai_error
        try:
            delay = _ms(headers, H_DELAY)
            chunk_delay = _ms(headers, H_CHUNK_DELAY)
            coding = headers.get(H_CONTENT_ENCODING)
            if coding is not None and coding not in _CODINGS:
                raise ControlError(400, f"testupstream: invalid {H_CONTENT_ENCODING} {coding!r}")
            _check_expectations(request)
        except ControlError as e:
            return error(e.status, e.message)
        if delay > 0:
            return self._delayed(request, route, delay, chunk_delay)
        return self._controlled(request, route, chunk_delay)

    async def _delayed(self, request: Request, route: Route | None, delay: float, chunk_delay: float) -> Response:
        await asyncio.sleep(delay)
        return self._controlled(request, route, chunk_delay)

    def _controlled(self, request: Request, route: Route | None, chunk_delay: float) -> Response:
        """The answer with the test-control overrides applied, compressed if asked."""
        response = self._answer(request, route, chunk_delay)
        coding = request.headers.get(H_CONTENT_ENCODING)
        if coding is None:
            return response
        if H_BODY in request.headers:  # exactly the given bytes: only labelled
            response.headers = [*response.headers, ("content-encoding", _CODINGS[coding][0])]  # never a shared list
            return response
        return _compressed(response, coding)

    def _answer(self, request: Request, route: Route | None, chunk_delay: float) -> Response:
        """Apply ``status``/``body`` overrides, else answer normally."""
        headers = request.headers
        error = route.error if route is not None else _openai_error
        status_s = headers.get(H_STATUS)
        status = None
        if status_s is not None:
            if not status_s.isdigit() or not 100 <= int(status_s) <= 599:
                return error(400, f"testupstream: invalid {H_STATUS} {status_s!r}")
            status = int(status_s)
        body_b64 = headers.get(H_BODY)
        if body_b64 is not None:
            try:
                body = base64.b64decode(body_b64, validate=True)
            except (binascii.Error, ValueError):
                return error(400, f"testupstream: {H_BODY} is not valid base64")
            return Response(status or 200, body, headers.get(H_CONTENT_TYPE, JSON))
        if status is not None and status >= 400:
            return error(status, f"testupstream: forced status {status}")
        if route is None:
            response = json_response(404, openai_chat.invalid_url_error(request.method, request.path))
        else:
            response = self._handle(request, route, chunk_delay)
        if status is not None:
            response.status = status
        return response

    def _handle(self, request: Request, route: Route, chunk_delay: float) -> Response:
        """The route's answer, once the provider's credential check lets the request in (a SigV4-signed one
        was verified before, by AWS's rules)."""
        headers = request.headers
        if route.auth is not None and not headers.get("authorization", "").startswith("AWS4-"):
            refused = route.auth(request, credentials.policy(headers, self.credentials))
            if refused is not None:
                response = json_response(refused.status, refused.body)
                response.headers.extend(refused.headers)
                return response
        return route.handle(request, self, chunk_delay)

    def _route(self, request: Request) -> Route | None:
        for route in self.routes:
            if route.method == request.method and route.matches(request.path):
                return route
        return None

    def _check_sigv4(self, request: Request) -> Response | None:
        """AWS's answer to a request whose SigV4 signature does not verify (None: it does, or is not required)."""
        headers = request.headers
        signed = headers.get("authorization", "").startswith("AWS4-")
        if not signed and not (self.require_sigv4 or aws_auth.required(headers, {})):
            return None
        result = aws_auth.verify(request.method, request.target, headers, request.body, self.aws_keys)
        if isinstance(result, aws_auth.Verified):
            return None
        response = json_response(result.status, {"message": result.message})
        response.headers.append(("x-amzn-errortype", f"{result.error_type}:http://internal.amazon.com/coral/"))
        return response

    def _admin(self, request: Request) -> Response:
        if request.path == "/health" and request.method in ("GET", "HEAD"):
            return Response(200, b"ok", "text/plain")
        if self.tokens.handles_admin(request.path):
            return self.tokens.admin(request)
        if request.path == USAGE_PATH:
            if request.method == "GET":
                return json_response(200, self.usage.as_dict())
            if request.method == "DELETE":
                self.usage.clear()
                return Response(204, b"", None)
        if request.path == REQUESTS_PATH:
            if request.method == "GET":
                return json_response(200, self.requests())
            if request.method == "DELETE":
                self.clear()
                return Response(204, b"", None)
        return json_response(404, openai_chat.invalid_url_error(request.method, request.path))


# -- compressed answers ---------------------------------------------------------------------------------

# test-control value → (content-encoding label, zlib wbits; None for brotli)
_CODINGS: dict[str, tuple[str, int | None]] = {
    "gzip": ("gzip", 16 + zlib.MAX_WBITS),
    "deflate": ("deflate", zlib.MAX_WBITS),
    "deflate-raw": ("deflate", -zlib.MAX_WBITS),
    "br": ("br", None),
}


def _compressor(coding: str) -> tuple[Callable[[bytes], bytes], Callable[[], bytes]]:
    """(compress a part and flush it, end the stream): each part's bytes go out decodable at once."""
    wbits = _CODINGS[coding][1]
    if wbits is None:
        br = brotli.Compressor()
        return (lambda part: br.process(part) + br.flush()), br.finish
    z = zlib.compressobj(wbits=wbits)
    return (lambda part: z.compress(part) + z.flush(zlib.Z_SYNC_FLUSH)), z.flush


def _compressed(response: Response, coding: str) -> Response:
    response.headers = [*response.headers, ("content-encoding", _CODINGS[coding][0])]
    flush, finish = _compressor(coding)
    stream = response.stream
    if stream is None:
        response.body = flush(response.body) + finish()
    elif isinstance(stream, AsyncIterable):
        response.stream = _compressed_async(stream, flush, finish)
    else:
        response.stream = _compressed_parts(stream, flush, finish)
    return response


def _compressed_parts(
    parts: Iterable[bytes], flush: Callable[[bytes], bytes], finish: Callable[[], bytes]
) -> Iterator[bytes]:
    for part in parts:
        yield flush(part)
    yield finish()


async def _compressed_async(
    parts: AsyncIterable[bytes], flush: Callable[[bytes], bytes], finish: Callable[[], bytes]
) -> AsyncIterator[bytes]:
    async for part in parts:
        yield flush(part)
    yield finish()


def _ms(headers: dict[str, str], name: str) -> float:
    value = headers.get(name)
    if value is None:
        return 0.0
    try:
        ms = float(value)
    except ValueError:
        raise ControlError(400, f"testupstream: invalid {name} {value!r}") from None
    if not 0 <= ms <= 600_000:
        raise ControlError(400, f"testupstream: invalid {name} {value!r}")
    return ms / 1000.0


def _check_expectations(request: Request) -> None:
    headers = request.headers
    want_path = headers.get(H_EXPECT_PATH)
    if want_path is not None:
        got = request.target if "?" in want_path else request.path
        if got != want_path.strip():
            raise ControlError(400, f"testupstream: expected path {want_path!r}, got {got!r}")
    expect = headers.get(H_EXPECT_HEADER)
    if expect is None:
        return
    for item in expect.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, want = item.partition("=")
        name = name.strip().lower()
        got_value = headers.get(name)
        if got_value is None:
            raise ControlError(400, f"testupstream: expected header {name!r} is missing")
        if sep and got_value != want.strip():
            raise ControlError(400, f"testupstream: expected header {name!r} to be {want.strip()!r}, got {got_value!r}")


# -- running it -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class RunningServer:
    """A listening test upstream: ``url`` to point clients at, ``app`` to inspect, ``close()`` to stop."""

    http: HttpServer
    app: App
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        """Stop listening and drop open connections."""
        self.http.close()

    async def wait_closed(self) -> None:
        await self.http.wait_closed()

    async def aclose(self) -> None:
        self.close()
        await self.wait_closed()

    async def __aenter__(self) -> RunningServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def serve(
    host: str = "127.0.0.1", port: int = 0, *, app: App | None = None, ssl: SSLContext | None = None
) -> RunningServer:
    """Start the fake provider on the running loop (``port=0``: a free port, see ``.port``/``.url``);
    with ``ssl``, it speaks HTTPS (``url`` still says http: tests point Envoy at it, not clients)."""
    app = app or App()
    http = await start(app, host, port, ssl=ssl)
    bound_port = http.server.sockets[0].getsockname()[1]
    return RunningServer(http, app, host, bound_port)


class BackgroundServer:
    """The fake provider on its own event loop in a daemon thread, for synchronous tests and SDK clients."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, ssl: SSLContext | None = None) -> None:
        self._ssl = ssl
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._running: RunningServer | None = None
        self._thread = threading.Thread(target=self._run, args=(host, port), name="testupstream", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _run(self, host: str, port: int) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._running = self._loop.run_until_complete(serve(host, port, ssl=self._ssl))
        except BaseException as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._running.aclose())
        pending = asyncio.all_tasks(self._loop)  # handlers still sleeping or streaming
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    @property
    def url(self) -> str:
        assert self._running is not None
        return self._running.url

    @property
    def app(self) -> App:
        """The running app, e.g. to register fake token-endpoint clients before the first request."""
        assert self._running is not None
        return self._running.app

    @property
    def port(self) -> int:
        assert self._running is not None
        return self._running.port

    def close(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_in_thread(host: str = "127.0.0.1", port: int = 0, ssl: SSLContext | None = None) -> BackgroundServer:
    """Start the fake provider in a background thread; returns once it is listening."""
    return BackgroundServer(host, port, ssl)


async def _serve_until_signal(host: str, port: int) -> int:
    try:
        running = await serve(host, port)
    except OSError as e:
        print(f"testupstream: cannot listen on {host}:{port}: {e}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    print(f"testupstream listening on {running.url}", file=sys.stderr, flush=True)
    await stop.wait()
    await running.aclose()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``tokenvoy testupstream``: run the fake provider until SIGTERM/SIGINT (exit 0)."""
    parser = argparse.ArgumentParser(
        prog="tokenvoy testupstream",
        description="Fake OpenAI-compatible LLM provider for tests, demos and benchmarks.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8090, help="port to listen on (default 8090)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(_serve_until_signal(args.host, args.port))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
