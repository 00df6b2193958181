"""Claude on AWS Bedrock through InvokeModel (AIServiceBackend schema ``AWSAnthropic``), for both client APIs.

The body is Anthropic's Messages body; only the wire differs from Anthropic's own API:

* Path: ``{prefix}/model/{modelId}/invoke``, or ``…/invoke-with-response-stream`` for a stream, the model id
  percent-encoded whole (``anthropic.claude-3-5-sonnet-20240620-v1:0`` → ``…-v1%3A0``; ARNs keep working).
  The prefix is empty unless the AIServiceBackend sets one.
* Body: no ``model`` and no ``stream`` (Bedrock refuses both: they are in the path), plus
  ``"anthropic_version": "bedrock-2023-05-31"``. An Anthropic client's ``anthropic-beta`` header becomes the
  ``anthropic_beta`` body list, where Bedrock reads betas (the header itself is not sent), keeping only the
  flags AWS documents for Claude (:data:`~anthropic_common.BEDROCK_CLAUDE_BETAS`, or ``TokenvoyConfig``
  ``spec.anthropicBetas.AWSAnthropic``): Bedrock answers 400 "invalid beta flag" to any other, e.g. Claude
  Code's ``claude-code-20250219``. The Anthropic client's bytes are edited in place.
* Streams arrive as an AWS event stream (``application/vnd.amazon.eventstream``): each ``chunk`` event's JSON
  payload is ``{"bytes": "<base64 of one Anthropic stream event>"}``. They are decoded (split anywhere, CRCs
  checked) into the same events Anthropic sends, so the OpenAI translation and the usage reading are
  Anthropic's; an Anthropic client gets them as SSE. An ``exception`` message mid-stream (e.g.
  ``throttlingException``) becomes Anthropic's ``error`` event with the status's error type.
* Errors: ``{"message": …}`` with the exception name in ``x-amzn-errortype``
  (``ThrottlingException:http://internal.amazon.com/coral/…``); the client gets its own error shape with
  the status kept and ``"<exception name>: <message>"`` as the message.

Token counting (``/anthropic/v1/messages/count_tokens``) goes to Bedrock Runtime's ``CountTokens``
(``/model/{modelId}/count-tokens``) with the InvokeModel body (:class:`CountTokensToAWSAnthropic`).

Signing (SigV4) is the AWSCredentials policy's job, not the translator's.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson

from tokenvoy.config.model import Backend
from tokenvoy.extproc.eventstream import EventMessage, EventStreamDecoder, EventStreamError
from tokenvoy.extproc.jsonedit import set_top_level
from tokenvoy.extproc.sse import SSEEvent
from tokenvoy.extproc.translate.anthropic_common import (
    BEDROCK_CLAUDE_BETAS,
    MessagesWire,
    StreamReader,
    error_details,
    error_event,
    error_type_for,
    sse_event,
)
from tokenvoy.extproc.translate.anthropic_to_anthropic import AnthropicToAnthropic
from tokenvoy.extproc.translate.base import ClientRequest, UpstreamRequest
from tokenvoy.extproc.translate.count_tokens_to_anthropic import (
    CountTokensToAnthropic,
    beta_edits,
    counted,
    input_tokens_body,
)
from tokenvoy.extproc.translate.openai_to_anthropic import OpenAIToAnthropic

BEDROCK_ANTHROPIC_VERSION = "bedrock-2023-05-31"
# Bedrock's stream exceptions (the ResponseStream union of bedrock-runtime's API model) and their statuses.
STREAM_EXCEPTION_STATUS = {
    "internalserverexception": 500,
    "modelstreamerrorexception": 424,
    "validationexception": 400,
    "throttlingexception": 429,
    "modeltimeoutexception": 408,
    "serviceunavailableexception": 503,
}
_EVENT_TYPE = re.compile(rb'^\s*\{\s*"type"\s*:\s*"([A-Za-z_]+)"')


class BedrockInvokeWire(MessagesWire):
    version_header = False
    body_version = BEDROCK_ANTHROPIC_VERSION
    path_keys = ("model", "stream")
    reframes_stream = True
    errors_in_anthropic_shape = False
    betas_in_body = True
    default_betas = BEDROCK_CLAUDE_BETAS

    def path(self, backend: Backend, model: str, stream: bool) -> str:
        action = "invoke-with-response-stream" if stream else "invoke"
        return f"{backend.path_prefix}/model/{quote(model, safe='')}/{action}"

    def body_additions(self, body: Mapping[str, Any], headers: Mapping[str, str]) -> dict[str, Any]:
        additions = super().body_additions(body, headers)
        betas = [beta.strip() for beta in headers.get("anthropic-beta", "").split(",") if beta.strip()]
        if betas and "anthropic_beta" not in body:
            additions["anthropic_beta"] = betas
        return additions

    def stream_reader(self) -> StreamReader:
        return BedrockChunkReader()

    def error_details(self, status: int, headers: Mapping[str, str], raw: bytes) -> tuple[str, str]:
        exception = headers.get("x-amzn-errortype", "").partition(":")[0].strip()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        message = body.get("message", body.get("Message")) if isinstance(body, dict) else None
        if not isinstance(message, str):
            return error_details(status, raw)  # not Bedrock's shape (a proxy's, Anthropic's, plain text)
        return error_type_for(status), f"{exception}: {message}" if exception else message


class BedrockChunkReader:
    """InvokeModelWithResponseStream's event stream → the Anthropic events inside its ``chunk`` events.

    The decoder keeps a message split anywhere (prelude, headers, payload, CRC) until it is whole and checks
    both CRCs; the messages before a corrupt one still come out, whatever the split."""

    __slots__ = ("_decoder", "broken")

    def __init__(self) -> None:
        self._decoder = EventStreamDecoder()
        self.broken: str | None = None  # why the stream proved corrupt: the translator ends it with a 502 event

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if self.broken:
            return []
        corrupt: EventStreamError | None = None
        try:
            messages = self._decoder.feed(chunk)
        except EventStreamError as exc:
            messages, corrupt = exc.messages, exc
        events = [event for event in map(_event, messages) if event is not None]
        if corrupt is not None:  # nothing after a bad CRC can be trusted: the translator ends the stream
            self.broken = f"the provider's event stream is corrupt: {corrupt}"
        return events

    def flush(self) -> list[SSEEvent]:
        return []  # a cut message is dropped: the client sees a stream without its end


def _event(message: EventMessage) -> SSEEvent | None:
    kind = message.message_type
    if kind == "event":
        return _chunk(message.payload) if message.event_type == "chunk" else None
    if kind == "exception":
        name = message.event_type
        try:
            payload = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            payload = None
        text = payload.get("message") if isinstance(payload, dict) else None
        if not isinstance(text, str):
            text = message.payload.decode("utf-8", errors="replace")
        status = STREAM_EXCEPTION_STATUS.get(name.lower(), 500)
        return error_event(error_type_for(status), f"{name}: {text}")
    if kind == "error":
        code = message.event_type or "error"
        text = str(message.headers.get(":error-message", "the provider's stream failed"))
        return error_event("api_error", f"{code}: {text}")
    return None


def _chunk(payload: bytes) -> SSEEvent | None:
    """One ``chunk`` event: the base64 Anthropic event it carries, framed as SSE; None if unreadable."""
    try:
        encoded = orjson.loads(payload).get("bytes")
        data = base64.b64decode(encoded, validate=True)
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError, binascii.Error):
        return None
    match = _EVENT_TYPE.match(data)
    if match is not None:
        name = match.group(1).decode()
    else:  # "type" is not the first key: read the JSON to find it
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        name = event.get("type") if isinstance(event, dict) else None
        if not isinstance(name, str) or not name:
            return None
    if b"\n" in data or b"\r" in data:  # pretty-printed JSON would break the SSE framing
        try:
            data = orjson.dumps(orjson.loads(data))
        except orjson.JSONDecodeError:
            return None
    return sse_event(name, data)


BEDROCK_INVOKE = BedrockInvokeWire()


class OpenAIToAWSAnthropic(OpenAIToAnthropic):
    """OpenAI Chat Completions client → Claude on Bedrock InvokeModel."""

    wire = BEDROCK_INVOKE


class AnthropicToAWSAnthropic(AnthropicToAnthropic):
    """Anthropic Messages client → Claude on Bedrock InvokeModel."""

    wire = BEDROCK_INVOKE


class CountTokensToAWSAnthropic(CountTokensToAnthropic):
    """Anthropic token counting → Bedrock Runtime ``CountTokens`` with an InvokeModel input:
    ``POST {prefix}/model/{modelId}/count-tokens`` with ``{"input": {"invokeModel": {"body": <base64>}}}``, the
    body being what InvokeModel would get (no ``model``, ``anthropic_version``, the allowed ``anthropic_beta``
    flags) plus the ``max_tokens`` InvokeModel requires (above a thinking budget; counting ignores it). The
    answer ``{"inputTokens": N}`` becomes Anthropic's ``{"input_tokens": N}``; errors are reshaped as for
    messages."""

    wire = BEDROCK_INVOKE
    rewrites_answer = True

    def upstream(
        self, request: ClientRequest, backend: Backend, model: str, betas: list[str] | None
    ) -> UpstreamRequest:
        headers = {**request.headers, "anthropic-beta": ",".join(betas)} if betas is not None else request.headers
        invoke = BEDROCK_INVOKE.edited_raw(request.raw, request.body, model, headers) or request.raw
        if "max_tokens" not in request.body:
            invoke = set_top_level(invoke, {"max_tokens": _count_max_tokens(request.body.get("thinking"))})
        body = orjson.dumps({"input": {"invokeModel": {"body": base64.b64encode(invoke).decode()}}})
        _, remove = beta_edits(request, betas, in_body=True)
        path = f"{backend.path_prefix}/model/{quote(model, safe='')}/count-tokens"
        return UpstreamRequest(path, body, {"content-type": "application/json"}, remove)

    def answer_body(self, raw: bytes) -> bytes:
        return input_tokens_body(counted(raw, "inputTokens", "the provider"))


def _count_max_tokens(thinking: object) -> int:
    budget = thinking.get("budget_tokens") if isinstance(thinking, dict) else None
    return budget + 1 if isinstance(budget, int) and not isinstance(budget, bool) and budget > 0 else 1
