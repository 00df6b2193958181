"""Embeddings behaviour of the fake upstream in three wire formats: pure functions, no I/O.

* OpenAI ``POST …/embeddings`` (also Azure's ``/openai/deployments/{d}/embeddings``): :func:`openai_embeddings`.
* GCP Vertex AI ``POST …/publishers/google/models/{model}:predict``: :func:`vertex_predict`.
* AWS Bedrock Titan ``POST /model/amazon.titan-embed-…/invoke``: :func:`titan_invoke`.

Determinism contract (tests rely on it):

* a text's vector is :func:`vector` ``(text, dimensions)``: floats derived from SHA-256 of the text,
  scaled to unit length (OpenAI's, Vertex's and Titan's vectors are normalised too), so the same text
  always gets the same vector and different texts get different ones; a token array is embedded as the
  text of its ids joined with spaces;
* tokens are whitespace-separated words (a token array counts its ids), like the chat fake's prompt count;
* the size is the request's ``dimensions`` / ``outputDimensionality``, else the model's default
  (:func:`default_dimensions`).
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from tokenvoy.testupstream.openai_chat import error_body as openai_error

__all__ = [
    "EmbeddingsReply",
    "default_dimensions",
    "google_error",
    "openai_embeddings",
    "titan_error",
    "titan_invoke",
    "vector",
    "vertex_predict",
]

MAX_DIMENSIONS = 3072
MAX_OPENAI_INPUTS = 2048
MAX_VERTEX_INSTANCES = 250
TITAN_V2_DIMENSIONS = (256, 512, 1024)
_DEFAULTS = (  # (model name prefix, default size), most specific first
    ("text-embedding-3-large", 3072),
    ("gemini-embedding", 3072),
    ("amazon.titan-embed-text-v2", 1024),
    ("amazon.titan-embed-text-v1", 1536),
    ("amazon.titan-embed-g1", 1536),
    ("text-embedding-0", 768),  # Vertex's text-embedding-004/005
    ("text-multilingual-embedding", 768),
)
TITAN_ERROR_TYPE = "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/"


@dataclass(frozen=True, slots=True)
class EmbeddingsReply:
    """Status, JSON body and extra response headers (Bedrock names its error type in a header)."""

    status: int
    body: Any
    headers: list[tuple[str, str]] = field(default_factory=list)


def default_dimensions(model: str) -> int:
    """The model's native vector size (1536, OpenAI's small/ada size, for models not listed)."""
    for prefix, size in _DEFAULTS:
        if model.startswith(prefix) or f".{prefix}" in model:  # Bedrock cross-region ids: "us.amazon.titan…"
            return size
    return 1536


@lru_cache(maxsize=1024)
def _unit_vector(text: str, dimensions: int) -> tuple[float, ...]:
    raw = bytearray()
    counter = 0
    seed = text.encode()
    while len(raw) < 4 * dimensions:
        raw += hashlib.sha256(seed + counter.to_bytes(4, "little")).digest()
        counter += 1
    values = [(v / 2147483648.0) for v in struct.unpack(f"<{dimensions}i", bytes(raw[: 4 * dimensions]))]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    # Rounded to float32 precision so base64 float32 and JSON floats describe the same vector.
    return tuple(struct.unpack(f"<{dimensions}f", struct.pack(f"<{dimensions}f", *(v / norm for v in values))))


def vector(text: str, dimensions: int) -> list[float]:
    """The deterministic unit vector of ``text`` with ``dimensions`` floats."""
    return list(_unit_vector(text, dimensions))


def _words(text: str) -> int:
    return len(text.split())


# -- OpenAI ---------------------------------------------------------------------------------------------


def _openai_bad(message: str, param: str | None, code: str | None = None) -> EmbeddingsReply:
    return EmbeddingsReply(400, openai_error(message, "invalid_request_error", param, code))


def _openai_inputs(value: object) -> list[tuple[str, int]] | EmbeddingsReply:
    """(text to embed, tokens) per input: a string, strings, a token array, or token arrays."""
    invalid = _openai_bad(
        "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
        None,
    )
    if isinstance(value, str):
        return [(value, _words(value))] if value else invalid
    if not isinstance(value, list) or not value or len(value) > MAX_OPENAI_INPUTS:
        return invalid
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return [(" ".join(map(str, value)), len(value))]
    out = []
    for item in value:
        if isinstance(item, str) and item:
            out.append((item, _words(item)))
        elif isinstance(item, list) and item and all(isinstance(v, int) and not isinstance(v, bool) for v in item):
            out.append((" ".join(map(str, item)), len(item)))
        else:
            return invalid
    return out


def _encode(values: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")
    return values


# "Create embeddings"' request body in OpenAI's API reference (the SDK's ``EmbeddingCreateParams``); any other
# field is 400 "Unrecognized request argument supplied: <field>", as the chat API answers it.
OPENAI_FIELDS = frozenset({"input", "model", "dimensions", "encoding_format", "user"})
AZURE_FIELDS = OPENAI_FIELDS | {"input_type"}  # Azure's embeddings reference adds ``input_type``


def openai_embeddings(request: object, model_from_path: str | None = None) -> EmbeddingsReply:
    """OpenAI's ``/v1/embeddings`` (Azure's too: ``model_from_path`` is the deployment, body model optional)."""
    if not isinstance(request, dict):
        return _openai_bad("Invalid body: expected a JSON object.", None)
    known = OPENAI_FIELDS if model_from_path is None else AZURE_FIELDS
    unknown = next((name for name in request if name not in known), None)
    if unknown is not None:
        return _openai_bad(f"Unrecognized request argument supplied: {unknown}", None)
    model = model_from_path or request.get("model")
    if not isinstance(model, str) or not model:
        return _openai_bad("you must provide a model parameter", None)
    if "input" not in request:
        return _openai_bad("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    inputs = _openai_inputs(request["input"])
    if isinstance(inputs, EmbeddingsReply):
        return inputs
    encoding = request.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        return _openai_bad(
            f"Invalid value: '{encoding}'. Supported values are: 'float' and 'base64'.", "encoding_format"
        )
    native = default_dimensions(model)
    dimensions = request.get("dimensions")
    if dimensions is None:
        dimensions = native
    elif isinstance(dimensions, bool) or not isinstance(dimensions, int) or not 1 <= dimensions <= native:
        return _openai_bad(f"Invalid 'dimensions': expected an integer between 1 and {native}.", "dimensions")
    tokens = sum(count for _, count in inputs)
    return EmbeddingsReply(
        200,
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": _encode(vector(text, dimensions), encoding)}
                for i, (text, _) in enumerate(inputs)
            ],
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        },
    )


# -- Vertex AI ------------------------------------------------------------------------------------------

_GOOGLE_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}
_GOOGLE_STATUS |= {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def google_error(status: int, message: str) -> dict[str, Any]:
    """Google's error envelope."""
    return {"error": {"code": status, "message": message, "status": _GOOGLE_STATUS.get(status, "UNKNOWN")}}


def _vertex_bad(message: str) -> EmbeddingsReply:
    return EmbeddingsReply(400, google_error(400, message))


def vertex_predict(request: object, model: str) -> EmbeddingsReply:
    """Vertex AI text embeddings ``:predict`` for ``model`` (from the path)."""
    if not isinstance(request, dict):
        return _vertex_bad("Invalid JSON payload received. Expected an object.")
    unknown = sorted(set(request) - {"instances", "parameters"})
    if unknown:
        return _vertex_bad(f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.')
    instances = request.get("instances")
    if not isinstance(instances, list) or not instances:
        return _vertex_bad("instances must be a non-empty list.")
    if len(instances) > MAX_VERTEX_INSTANCES:
        return _vertex_bad(f"Too many instances: {len(instances)}; the limit is {MAX_VERTEX_INSTANCES}.")
    texts = []
    for i, instance in enumerate(instances):
        if not isinstance(instance, dict) or not isinstance(instance.get("content"), str):
            return _vertex_bad(f"instances[{i}].content must be a string.")
        extra = set(instance) - {"content", "task_type", "title"}
        if extra:
            return _vertex_bad(f"instances[{i}] has an unknown field {sorted(extra)[0]!r}.")
        texts.append(instance["content"])
    parameters = request.get("parameters", {})
    if not isinstance(parameters, dict) or set(parameters) - {"outputDimensionality", "autoTruncate"}:
        return _vertex_bad("parameters may only hold outputDimensionality and autoTruncate.")
    native = default_dimensions(model)
    dimensions = parameters.get("outputDimensionality", native)
    if isinstance(dimensions, bool) or not isinstance(dimensions, int) or not 1 <= dimensions <= native:
        return _vertex_bad(f"outputDimensionality must be an integer between 1 and {native}.")
    predictions = [
        {
            "embeddings": {
                "values": vector(text, dimensions),
                "statistics": {"truncated": False, "token_count": _words(text)},
            }
        }
        for text in texts
    ]
    return EmbeddingsReply(
        200, {"predictions": predictions, "metadata": {"billableCharacterCount": sum(len(t) for t in texts)}}
    )


# -- Bedrock Titan --------------------------------------------------------------------------------------


def titan_error(status: int, message: str, error_type: str = "ValidationException") -> EmbeddingsReply:
    """Bedrock's error: ``{"message": …}`` and the exception named in ``x-amzn-errortype``."""
    return EmbeddingsReply(
        status,
        {"message": message},
        [("x-amzn-errortype", f"{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/")],
    )


def titan_invoke(request: object, model_id: str) -> EmbeddingsReply:
    """``InvokeModel`` of an Amazon Titan text embeddings model (V1 takes ``inputText`` only)."""
    if not isinstance(request, dict):
        return titan_error(400, "Malformed input request, please reformat your input and try again.")
    v2 = "titan-embed-text-v2" in model_id
    allowed = {"inputText", "dimensions", "normalize", "embeddingTypes"} if v2 else {"inputText"}
    extraneous = sorted(set(request) - allowed)
    if extraneous:
        return titan_error(400, f"Malformed input request: extraneous key [{extraneous[0]}] is not permitted")
    text = request.get("inputText")
    if not isinstance(text, str) or not text:
        return titan_error(400, "Malformed input request: #/inputText: expected minLength: 1")
    dimensions = request.get("dimensions", default_dimensions(model_id))
    if v2 and dimensions not in TITAN_V2_DIMENSIONS:
        return titan_error(400, f"Malformed input request: #/dimensions: {dimensions} is not a valid enum value")
    normalize = request.get("normalize", True)
    values = vector(text, dimensions)
    if normalize is False:  # a raw (non-unit) vector, still deterministic
        values = [v * 10.0 for v in values]
    body: dict[str, Any] = {"embedding": values, "inputTextTokenCount": _words(text)}
    if v2:
        body["embeddingsByType"] = {"float": values}
    return EmbeddingsReply(200, body)
