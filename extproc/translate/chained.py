"""Two translators in a row, through OpenAI Chat Completions: client API → chat → backend schema.

Some pairs have no mapping of their own because both ends already have one toward OpenAI chat: an Anthropic
Messages client reaches Gemini as Anthropic → chat (:mod:`anthropic_to_openai`) then chat → Gemini
(:mod:`openai_to_gemini`). ``front`` is the client's translator toward an OpenAI-schema backend, ``back`` the
chat client's translator toward the real backend. The request goes through both; the answer comes back the
other way: ``back`` turns the provider's bytes (JSON, SSE or an event stream) into OpenAI's, ``front`` turns
those into the client's, chunk by chunk, so streams stay streams.

What a pair loses is what either half loses, and each half documents it in its module. The usage is
``back``'s: read from the provider's own answer (``front`` only sees it restated in OpenAI's terms).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import orjson

from tokenvoy.config.model import Backend
from tokenvoy.extproc.translate.base import ClientAPI, ClientRequest, HeaderChanges, Translator, UpstreamRequest
from tokenvoy.extproc.translate.bodies import AnswerText
from tokenvoy.extproc.usage import TokenUsage

CHAT_PATH = "/v1/chat/completions"


class Chained:
    """``front`` (client API → OpenAI chat) then ``back`` (OpenAI chat → the backend), one attempt's worth."""

    def __init__(self, front: Translator, back: Translator) -> None:
        self._front = front
        self._back = back

    @property
    def usage(self) -> TokenUsage | None:
        return self._back.usage if self._back.usage is not None else self._front.usage

    def take_usage(self) -> TokenUsage | None:
        """Either half's news, as ``usage`` reads it (the back's wins: the provider's own count)."""
        back, front = self._back.take_usage(), self._front.take_usage()
        return self.usage if back is not None or front is not None else None

    @property
    def response_model(self) -> str | None:
        return self._back.response_model or self._front.response_model

    @property
    def answer(self) -> AnswerText:
        return self._front.answer  # the text the client got

    def translate_request(self, request: ClientRequest, backend: Backend, model: str) -> UpstreamRequest:
        first = self._front.translate_request(request, backend, model)
        assert first.body is not None  # a translator toward OpenAI chat always rebuilds the body
        body = orjson.loads(first.body)
        chat = ClientRequest(
            api=ClientAPI.OPENAI_CHAT,
            path=CHAT_PATH,
            raw=first.body,
            body=body,
            model=model,
            stream=body.get("stream") is True,
            needs_usage=request.needs_usage,
            capture_output=False,  # the front keeps the client's text
            headers=request.headers,
        )
        second = self._back.translate_request(chat, backend, model)
        if second.body is None:
            second.body = first.body
        remove = tuple(dict.fromkeys((*first.remove_headers, *second.remove_headers)))
        second.set_headers = {**first.set_headers, **second.set_headers}
        second.remove_headers = tuple(name for name in remove if name not in second.set_headers)
        return second

    def translate_response_headers(self, headers: dict[str, str]) -> HeaderChanges | None:
        back = self._back.translate_response_headers(headers)
        seen = dict(headers)
        if back is not None:
            for name in back.remove_headers:
                seen.pop(name, None)
            seen.update(back.set_headers)
        front = self._front.translate_response_headers(seen)
        if back is None:
            return front
        if front is None:
            return back
        set_headers = {**back.set_headers, **front.set_headers}
        removed = dict.fromkeys((*back.remove_headers, *front.remove_headers))
        return HeaderChanges(set_headers, tuple(name for name in removed if name not in front.set_headers))

    def translate_response_body(self, chunk: bytes, end_of_stream: bool) -> bytes | None:
        middle = self._back.translate_response_body(chunk, end_of_stream)
        if middle is None:
            middle = chunk
        out = self._front.translate_response_body(middle, end_of_stream)
        return middle if out is None else out

    def translate_error(self, status: int, headers: Mapping[str, str], body: bytes) -> bytes | None:
        middle = self._back.translate_error(status, headers, body)
        if middle is None:
            return self._front.translate_error(status, headers, body)
        out = self._front.translate_error(status, {**headers, "content-type": "application/json"}, middle)
        return middle if out is None else out


def chained(front: Callable[[], Translator], back: Callable[[], Translator]) -> Callable[[], Chained]:
    """A translator factory for the registry: a fresh pair per attempt."""

    def make() -> Chained:
        return Chained(front(), back())

    return make
