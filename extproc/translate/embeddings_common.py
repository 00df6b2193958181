"""What every ``POST /v1/embeddings`` translator shares: request checks, OpenAI's list shape, and the
buffered response flow of the translators that rebuild the body (Vertex AI, Bedrock Titan).

Embeddings are never streamed (``stream: true`` → 400) and only consume input tokens: the usage is
``input = total = prompt tokens``, ``output = 0``.

``encoding_format: "base64"`` (what the openai SDK asks for by default) is answered like OpenAI does it:
each vector as the base64 of its little-endian float32 bytes. A rebuilding translator does that itself,
since Vertex and Titan only return JSON floats.
"""

from __future__ import annotations

import base64
import sys
from array import array
from collections.abc import Mapping
from typing import Any

import orjson

from tokenvoy.config.model import Backend
from tokenvoy.extproc.errors import (
    GatewayError,
    UpstreamShapeError,
    invalid_field,
    openai_error_body,
    untranslatable_field,
)
from tokenvoy.extproc.translate.base import ClientRequest, HeaderChanges, TranslatorBase, UpstreamRequest
from tokenvoy.extproc.usage import TokenUsage, token_count

ENCODINGS = ("float", "base64")
EMBEDDINGS_PATH = "/embeddings"


def check_request(body: dict[str, Any]) -> None:
    """The checks every backend needs (400 naming the field)."""
    if body.get("stream") not in (None, False):
        raise invalid_field("stream", "the embeddings API does not stream; leave `stream` out")
    if "input" not in body:
        raise invalid_field("input", "required: a string or an array of strings (or of token arrays)")
    encoding = body.get("encoding_format")
    if encoding is not None and encoding not in ENCODINGS:
        raise invalid_field("encoding_format", f"{encoding!r} is not one of float, base64")
    dimensions = body.get("dimensions")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1):
        raise invalid_field("dimensions", f"expected a positive integer, got {dimensions!r}")


def input_texts(body: dict[str, Any], target: str) -> list[str]:
    """``input`` as a list of strings, for backends that take text only (token arrays → 422)."""
    value = body.get("input")
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        raise invalid_field("input", "expected a string or a non-empty array of strings")
    texts = []
    for item in value:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, (int, list)) and not isinstance(item, bool):
            raise untranslatable_field("input", target, "it takes text, not token arrays")
        else:
            raise invalid_field("input", f"expected strings in the array, got {type(item).__name__}")
    return texts


def encode_vector(values: list[float], encoding: str) -> list[float] | str:
    """A vector as the client asked for it: JSON floats, or base64 of little-endian float32."""
    if encoding != "base64":
        return values
    packed = array("f", values)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def embeddings_list(vectors: list[list[float]], model: str, prompt_tokens: int, encoding: str) -> dict[str, Any]:
    """OpenAI's ``CreateEmbeddingResponse``."""
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index, "embedding": encode_vector(values, encoding)}
            for index, values in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def input_usage(tokens: int) -> TokenUsage:
    """``tokens``: the provider's count, clamped like every usage field (``usage.token_count``)."""
    tokens = token_count(tokens, "input tokens")
    return TokenUsage(input=tokens, total=tokens)


def float_list(value: object) -> list[float] | None:
    """A JSON array of numbers, else None (a malformed answer)."""
    if not isinstance(value, list):
        return None
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            return None
    return value


class RebuiltEmbeddings(TranslatorBase):
    """Base of the translators that send their own body and rebuild OpenAI's answer from the provider's.

    Subclasses say how to build the request (:meth:`build`) and read the answer (:meth:`read`, returning
    the vectors and the input token count) and, optionally, the provider's error (:meth:`error_details`).
    The response is buffered whatever Envoy's body mode, and errors become OpenAI's error shape with the
    provider's status kept.
    """

    target = "this backend"  # names the provider in 422 messages

    def __init__(self) -> None:
        super().__init__()
        self._chunks: list[bytes] = []  # the response is parsed whole, whatever Envoy's body mode
        self._model = ""
        self._encoding = "float"

    def build(self, request: ClientRequest, backend: Backend, model: str) -> tuple[str, dict[str, Any]]:
        """The provider's path and body."""
        raise NotImplementedError

    def read(self, payload: dict[str, Any]) -> tuple[list[list[float]], int] | None:
        """The vectors in input order and the input tokens; None when the answer is not the provider's shape."""
        raise NotImplementedError

    def error_details(self, status: int, payload: Any, headers: Mapping[str, str]) -> tuple[str | None, str | None]:
        """``(type, message)`` of a provider error body already parsed as JSON (None: use the defaults)."""
        return None, None

    def translate_request(self, request: ClientRequest, backend: Backend, model: str) -> UpstreamRequest:
        check_request(request.body)
        self._model = model
        self._encoding = request.body.get("encoding_format") or "float"
        path, body = self.build(request, backend, model)
        # The answer is parsed and rebuilt: it must come uncompressed.
        return UpstreamRequest(path=path, body=orjson.dumps(body))

    def translate_response_headers(self, headers: dict[str, str]) -> HeaderChanges | None:
        return HeaderChanges({"content-type": "application/json"}, ("content-length",))

    def translate_response_body(self, chunk: bytes, end_of_stream: bool) -> bytes | None:
        self._chunks.append(chunk)
        if not end_of_stream:
            return b""
        raw = b"".join(self._chunks)
        self._chunks.clear()
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            payload = None
        read = self.read(payload) if isinstance(payload, dict) else None
        if read is None:  # a 502 (the router answers it), never a 200 with an error inside
            raise UpstreamShapeError("the provider's answer is not a valid embeddings response: " + _excerpt(raw))
        vectors, tokens = read
        self.report_usage(input_usage(tokens))
        self.response_model = self._model
        return orjson.dumps(embeddings_list(vectors, self._model, tokens, self._encoding))

    def translate_error(self, status: int, headers: Mapping[str, str], body: bytes) -> bytes | None:
        raw = body
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            payload = None
        error_type, message = self.error_details(status, payload, headers)
        if not message:
            message = _excerpt(raw) if raw.strip() else f"the provider answered {status} with an empty body"
        return openai_error_body(GatewayError(status, message, error_type))


def _excerpt(raw: bytes, limit: int = 1000) -> str:
    text = raw.decode("utf-8", errors="replace").strip()
    return text if len(text) <= limit else text[:limit] + "…"
