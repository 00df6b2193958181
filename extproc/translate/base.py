"""The one interface every (client API, backend schema) translator implements.

A translator instance lives for one upstream attempt: the upstream filter asks it for the request to
send; the router filter feeds it the answer (or the error) and takes the usage it reports. Translators are
pure: bytes and dicts in, bytes and dicts out, no I/O, so each is unit-tested from the provider's documented
examples.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from tokenvoy.apis.client_apis import ClientAPI  # re-exported: translators import it from here
from tokenvoy.config.model import Backend
from tokenvoy.extproc.translate.bodies import AnswerText
from tokenvoy.extproc.usage import TokenUsage


@dataclass(slots=True)
class ClientRequest:
    """The client's request, parsed once by the router filter and shared with every attempt."""

    api: ClientAPI
    path: str
    raw: bytes
    body: dict[str, Any]
    model: str
    stream: bool
    needs_usage: bool  # any llmRequestCosts configured: the usage must be seen
    capture_output: bool = False  # tracing records the answer: translators keep its text (``answer``)
    headers: dict[str, str] = field(default_factory=dict)  # the client's request headers (lower-case names)


@dataclass(slots=True)
class UpstreamRequest:
    path: str
    body: bytes | None = None  # None: the client's bytes go through unchanged
    set_headers: dict[str, str] = field(default_factory=dict)
    remove_headers: tuple[str, ...] = ()


@dataclass(slots=True)
class HeaderChanges:
    """Response header edits a translator needs (e.g. a new content-type, a stale content-length)."""

    set_headers: dict[str, str] = field(default_factory=dict)
    remove_headers: tuple[str, ...] = ()


def rewritten_answer_headers(stream: bool) -> HeaderChanges | None:
    """Header edits of a translator that rewrites every 2xx answer: a plain answer's length changes, and a
    stream stays text/event-stream (the router drops its length)."""
    return None if stream else HeaderChanges(remove_headers=("content-length",))


class Translator(Protocol):
    """Contract v2: one attempt's translation, called by the upstream filter (the request) and the router
    filter (the answer).

    * Answers and errors take separate roads. For a 2xx the router calls :meth:`translate_response_headers`
      once, then :meth:`translate_response_body` per chunk; for any other status it calls
      :meth:`translate_error` once with the whole body and nothing else. No translator checks a status.
    * Usage is reported, not polled: the response methods hand each new usage to
      :meth:`TranslatorBase.report_usage` (``read_answer`` does it for an answer's ``usage`` object), and
      the router collects it with :meth:`take_usage` after every body call: a stream is re-costed when,
      and only when, it returns one. ``usage`` is the last one reported (what the access log and the final
      charge read). The router never compares usage objects to learn that something changed.
    * One style: every translator is a :class:`TranslatorBase`; pairs that answer an OpenAI chat client
      from another schema write with ``openai_common.ChatChunkWriter``, pairs that answer an Anthropic
      client with ``anthropic_common.MessagesEventWriter``. The two wrappers (``Chained``,
      ``ResponsesViaChat``) pass every call, ``take_usage`` and ``translate_error`` included, to their parts.
    """

    response_model: str | None
    answer: AnswerText  # the answer's text, kept only when ``ClientRequest.capture_output`` asks

    @property
    def usage(self) -> TokenUsage | None:
        """The answer's usage as last reported (None: the provider reported none yet)."""
        ...

    def take_usage(self) -> TokenUsage | None:
        """The usage reported since the last call, None when there is nothing new."""
        ...

    def translate_request(self, request: ClientRequest, backend: Backend, model: str) -> UpstreamRequest:
        """The request for ``backend`` with ``model`` (the client's or the override)."""
        ...

    def translate_response_headers(self, headers: dict[str, str]) -> HeaderChanges | None:
        """Called once with a 2xx answer's headers, before any body; None = unchanged."""
        ...

    def translate_response_body(self, chunk: bytes, end_of_stream: bool) -> bytes | None:
        """Bytes for the client in place of a 2xx answer's ``chunk`` (None = unchanged); buffered bodies
        arrive whole.

        A 2xx that is not the provider's answer (or a stream that ends unfinished) raises
        :class:`~tokenvoy.extproc.errors.UpstreamShapeError`: the router answers 502, or ends the stream
        with an error event after the error's ``emitted`` bytes."""
        ...

    def translate_error(self, status: int, headers: Mapping[str, str], body: bytes) -> bytes | None:
        """The provider's error (any status outside 2xx, its headers and whole body) in the client API's
        error shape, the status kept; None = the provider's bytes go through (already the client's shape).
        The router gives a rewritten error ``content-type: application/json`` and no stale length."""
        ...


class TranslatorBase:
    """What every translator shares: the answer's model, text and usage, the usage hand-over to the router,
    and errors that pass through unchanged unless a translator says otherwise."""

    def __init__(self) -> None:
        self.response_model: str | None = None
        self.answer = AnswerText()
        self._usage: TokenUsage | None = None
        self._usage_is_new = False

    @property
    def usage(self) -> TokenUsage | None:
        return self._usage

    def report_usage(self, usage: TokenUsage) -> None:
        """The answer's usage so far (replaces what was reported before)."""
        self._usage = usage
        self._usage_is_new = True

    def read_answer(
        self,
        payload: dict[str, Any],
        read_usage: Callable[[dict[str, Any]], TokenUsage],
        model_key: str = "model",
        usage_key: str = "usage",
    ) -> None:
        """The model and usage an answer (or one stream chunk of it) names, either one maybe missing: the
        last model named is the response model, a usage object is parsed with ``read_usage`` and reported."""
        model = payload.get(model_key)
        if isinstance(model, str) and model:
            self.response_model = model
        usage = payload.get(usage_key)
        if isinstance(usage, dict):
            self.report_usage(read_usage(usage))

    def take_usage(self) -> TokenUsage | None:
        if not self._usage_is_new:
            return None
        self._usage_is_new = False
        return self._usage

    def translate_error(self, status: int, headers: Mapping[str, str], body: bytes) -> bytes | None:
        return None
