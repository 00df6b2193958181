"""OpenAI Embeddings client → OpenAI-schema backend: ``POST {prefix}/embeddings``, a pass-through.

The only request edit is the model override (in place); the answer goes to the client byte for byte,
read once at its end for ``usage.prompt_tokens``/``total_tokens`` and ``model``. Token-array inputs,
``dimensions``, ``encoding_format`` and ``user`` go as they are: the provider does them. A ``stream``
field is refused (400) since the API has no streamed form.
"""

from __future__ import annotations

from tokenvoy.config.model import Backend
from tokenvoy.extproc.jsonedit import set_top_level
from tokenvoy.extproc.translate.base import ClientRequest, HeaderChanges, TranslatorBase, UpstreamRequest
from tokenvoy.extproc.translate.bodies import WholeBody
from tokenvoy.extproc.translate.embeddings_common import EMBEDDINGS_PATH, check_request
from tokenvoy.extproc.translate.shapes import answer_object, require
from tokenvoy.extproc.usage import TokenUsage


class EmbeddingsToOpenAI(TranslatorBase):
    def __init__(self) -> None:
        super().__init__()
        self._whole = WholeBody()

    def upstream_path(self, backend: Backend, model: str) -> str:
        return backend.path_prefix + EMBEDDINGS_PATH

    def translate_request(self, request: ClientRequest, backend: Backend, model: str) -> UpstreamRequest:
        check_request(request.body)
        body = set_top_level(request.raw, {"model": model}) if model != request.model else None
        # The usage must be readable: ask for an uncompressed answer.
        return UpstreamRequest(path=self.upstream_path(backend, model), body=body)

    def translate_response_headers(self, headers: dict[str, str]) -> HeaderChanges | None:
        return None  # same wire format

    def translate_response_body(self, chunk: bytes, end_of_stream: bool) -> bytes | None:
        raw = self._whole.collect(chunk, end_of_stream)
        if raw is not None:  # the bytes go through unchanged, but only if they are an answer at all
            payload = answer_object(raw, "the OpenAI-schema provider")
            require(payload, "data", list, "the OpenAI-schema provider")
            self.read_answer(payload, TokenUsage.from_openai)
        return None  # the bytes go through unchanged; OpenAI's errors, too (already the client's shape)
