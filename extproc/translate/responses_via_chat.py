"""OpenAI Responses client → any backend with a Chat Completions translator, by composition.

``Responses → chat`` (:mod:`responses_to_chat`) then the backend's own ``chat → X`` translator, unchanged: one
new mapping reaches every chat backend schema (an OpenAI-compatible server without the Responses API,
Anthropic, Claude on Bedrock and Vertex AI, Bedrock Converse, Gemini), and each half is tested on its own.

The inner chat translator builds the provider's request, signs nothing (the upstream filter does), reads the
usage (its normalised ``TokenUsage`` is this translator's) and turns the provider's answer back into Chat
Completions; that answer is then turned into a Responses ``response`` or event stream. Errors: the inner
translator already answers in OpenAI's error shape, which is the Responses API's, so they pass on as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from tokenvoy.config.model import Backend
from tokenvoy.extproc.errors import GatewayError
from tokenvoy.extproc.translate.base import ClientAPI, ClientRequest, HeaderChanges, Translator, UpstreamRequest
from tokenvoy.extproc.translate.bodies import AnswerText, WholeBody, json_object
from tokenvoy.extproc.translate.responses_to_chat import ChatStreamToResponses, chat_request, response_from_chat
from tokenvoy.extproc.usage import TokenUsage

CHAT_PATH = "/v1/chat/completions"


class ResponsesViaChat:
    """One attempt: the Responses request as chat for ``inner``, and ``inner``'s chat answer as Responses."""

    def __init__(self, inner: Translator) -> None:
        self._inner = inner
        self._request: dict[str, Any] = {}
        self._model = ""
        self._stream: ChatStreamToResponses | None = None
        self._whole = WholeBody()

    @property
    def usage(self) -> TokenUsage | None:
        return self._inner.usage

    def take_usage(self) -> TokenUsage | None:
        return self._inner.take_usage()

    @property
    def response_model(self) -> str | None:
        return self._inner.response_model

    @property
    def answer(self) -> AnswerText:
        return self._inner.answer

    def translate_request(self, request: ClientRequest, backend: Backend, model: str) -> UpstreamRequest:
        target = f"backend {backend.name!r} (schema {backend.schema}, the Responses API translated to Chat Completions)"
        body = chat_request(request.body, target)
        self._request = request.body
        self._model = model
        if request.stream:
            self._stream = ChatStreamToResponses(request.body, model, 0)
        chat = ClientRequest(
            api=ClientAPI.OPENAI_CHAT,
            path=CHAT_PATH,
            raw=orjson.dumps(body),
            body=body,
            model=request.model,
            stream=request.stream,
            needs_usage=True,  # `response.completed` carries the usage whether or not costs are configured
            capture_output=request.capture_output,
            headers=request.headers,
        )
        try:
            upstream = self._inner.translate_request(chat, backend, model)
        except GatewayError as error:
            raise _in_responses_terms(error) from None
        if upstream.body is None:  # the inner translator sends the chat body as it is
            upstream.body = chat.raw
            upstream.set_headers = {"content-type": "application/json", **upstream.set_headers}
        return upstream

    def translate_response_headers(self, headers: dict[str, str]) -> HeaderChanges | None:
        changes = self._inner.translate_response_headers(headers)
        if self._stream is not None:
            return changes
        if changes is None:
            return HeaderChanges(remove_headers=("content-length",))  # the body is rewritten
        if "content-length" in changes.remove_headers:
            return changes
        return HeaderChanges(dict(changes.set_headers), (*changes.remove_headers, "content-length"))

    def translate_error(self, status: int, headers: Mapping[str, str], body: bytes) -> bytes | None:
        return self._inner.translate_error(status, headers, body)  # OpenAI's error shape is the client's

    def translate_response_body(self, chunk: bytes, end_of_stream: bool) -> bytes | None:
        chat = self._inner.translate_response_body(chunk, end_of_stream)
        if chat is None:
            chat = chunk
        if self._stream is not None:
            return self._stream.feed(chat, end_of_stream, self._inner.usage)
        raw = self._whole.collect(chat, end_of_stream)
        if raw is None:
            return b""
        completion = json_object(raw)
        if completion is None:
            return raw  # not chat JSON: hand the client what came rather than nothing
        return orjson.dumps(response_from_chat(completion, self._request, self._model, self._inner.usage))


# Chat Completions field names in the inner translator's refusals → the Responses field the client sent.
_FIELD_NAMES = (
    ("`response_format", "`text.format"),
    ("`reasoning_effort`", "`reasoning.effort`"),
    ("`max_completion_tokens`", "`max_output_tokens`"),
)


def _in_responses_terms(error: GatewayError) -> GatewayError:
    """The inner chat translator's refusal, naming the fields as the Responses client sent them."""
    message = error.message
    for chat_name, responses_name in _FIELD_NAMES:
        message = message.replace(chat_name, responses_name)
    if "`messages[" in message:
        message += " (`messages[…]`: the `instructions` and `input` items as Chat Completions messages)"
    return GatewayError(error.status, message, error.error_type)


def via_chat(inner: Callable[[], Translator]) -> Callable[[], Translator]:
    """The Responses translator factory for a backend schema whose chat translator factory is ``inner``."""

    def factory() -> Translator:
        return ResponsesViaChat(inner())

    factory.__name__ = f"ResponsesVia{getattr(inner, '__name__', 'Chat')}"
    return factory
