"""The one interface every (client API, backend schema) translator implements.

A translator instance lives for one upstream attempt: the upstream filter asks it for the request to
send; the router filter feeds it the response and reads the usage. Translators are pure: bytes and
dicts in, bytes and dicts out, no I/O, so each is unit-tested from the provider's documented examples.
"""

from __future__ import annotations

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


def rewritten_answer_headers(status: int, stream: bool) -> HeaderChanges | None:
    """Header edits of a translator that rewrites every answer: errors become JSON in the client's shape, a
    plain answer's length changes, and a stream stays text/event-stream (the router drops its length)."""
    if not 200 <= status < 300:
        return HeaderChanges({"content-type": "application/json"}, ("content-length",))
    return None if stream else HeaderChanges(remove_headers=("content-length",))


class Translator(Protocol):
    usage: TokenUsage | None
    response_model: str | None
    answer: AnswerText  # the answer's text, kept only when ``ClientRequest.capture_output`` asks

    def translate_request(self, request: ClientRequest, backend: Backend, model: str) -> UpstreamRequest:
        """The request for ``backend`` with ``model`` (the client's or the override)."""
        ...

    def translate_response_headers(self, status: int, headers: dict[str, str]) -> HeaderChanges | None:
        """Called once with the provider's status and headers, before any body; None = unchanged."""
        ...

    def translate_response_body(self, status: int, chunk: bytes, end_of_stream: bool) -> bytes | None:
        """Bytes for the client in place of ``chunk`` (None = unchanged); buffered bodies arrive whole.

        A 2xx that is not the provider's answer (or a stream that ends unfinished) raises
        :class:`~tokenvoy.extproc.errors.UpstreamShapeError`: the router answers 502, or ends the stream
        with an error event after the error's ``emitted`` bytes."""
        ...
