"""OpenAI Embeddings client → GCP Vertex AI backend (``schema.name: GCPVertexAI``), the text embeddings
``predict`` method of Google's models (``text-embedding-005``, ``gemini-embedding-001``, …).

* Path: ``{prefix}/publishers/google/models/{model}:predict``; the prefix
  (``/v1/projects/{project}/locations/{region}``) comes from the backend's GCP settings.
* Request: each ``input`` string becomes one ``instances[i].content``; ``dimensions`` →
  ``parameters.outputDimensionality``. Two Vertex options may be sent as extra top-level fields:
  ``task_type`` (e.g. ``RETRIEVAL_QUERY``, put on every instance) and ``auto_truncate`` (→
  ``parameters.autoTruncate``). Token arrays → 422 (Vertex takes text); ``user`` is dropped.
* Answer: ``predictions[i].embeddings.values`` → ``data[i].embedding`` (base64 float32 when the client
  asked), the sum of ``predictions[i].embeddings.statistics.token_count`` → ``usage.prompt_tokens`` and
  ``total_tokens``; ``model`` is the model sent (Vertex does not name it). Errors
  (``{"error": {"code", "message", "status"}}``) → OpenAI's shape with the status kept.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from tokenvoy.config.model import Backend
from tokenvoy.extproc.errors import invalid_field
from tokenvoy.extproc.translate.base import ClientRequest
from tokenvoy.extproc.translate.embeddings_common import RebuiltEmbeddings, float_list, input_texts
from tokenvoy.extproc.usage import MAX_TOKENS, token_count


class EmbeddingsToVertex(RebuiltEmbeddings):
    target = "a GCP Vertex AI embeddings model"

    def build(self, request: ClientRequest, backend: Backend, model: str) -> tuple[str, dict[str, Any]]:
        body = request.body
        instances: list[dict[str, Any]] = [{"content": text} for text in input_texts(body, self.target)]
        task_type = body.get("task_type")
        if task_type is not None:
            if not isinstance(task_type, str) or not task_type:
                raise invalid_field("task_type", "expected a Vertex AI task type such as RETRIEVAL_QUERY")
            for instance in instances:
                instance["task_type"] = task_type
        parameters: dict[str, Any] = {}
        if body.get("dimensions") is not None:
            parameters["outputDimensionality"] = body["dimensions"]
        auto_truncate = body.get("auto_truncate")
        if auto_truncate is not None:
            if not isinstance(auto_truncate, bool):
                raise invalid_field("auto_truncate", "expected true or false")
            parameters["autoTruncate"] = auto_truncate
        out: dict[str, Any] = {"instances": instances}
        if parameters:
            out["parameters"] = parameters
        path = f"{backend.path_prefix}/publishers/google/models/{quote(model, safe='@')}:predict"
        return path, out

    def read(self, payload: dict[str, Any]) -> tuple[list[list[float]], int] | None:
        predictions = payload.get("predictions")
        if not isinstance(predictions, list):
            return None
        vectors = []
        tokens = 0
        for prediction in predictions:
            embeddings = prediction.get("embeddings") if isinstance(prediction, dict) else None
            if not isinstance(embeddings, dict):
                return None
            values = float_list(embeddings.get("values"))
            if values is None:
                return None
            vectors.append(values)
            statistics = embeddings.get("statistics")
            count = statistics.get("token_count") if isinstance(statistics, dict) else None
            if isinstance(count, float) and math.isfinite(count):
                count = int(count)  # Vertex's JSON may write a count as 5.0
            tokens = min(tokens + token_count(count, "statistics.token_count"), MAX_TOKENS)
        return vectors, tokens

    def error_details(self, status: int, payload: Any, headers: Mapping[str, str]) -> tuple[str | None, str | None]:
        if isinstance(payload, list) and payload:  # some Google endpoints wrap the error in a list
            payload = payload[0]
        error = payload.get("error") if isinstance(payload, dict) else None
        if not isinstance(error, dict):
            return None, None
        message = error.get("message")
        return None, message if isinstance(message, str) and message else None
