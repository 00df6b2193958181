"""Azure OpenAI behaviour of the fake upstream: pure functions, no I/O.

Paths ``/openai/deployments/{deployment}/chat/completions|embeddings?api-version=…`` (any prefix before
``/openai/``). Azure speaks OpenAI's format with these differences, all emulated:

* ``api-version`` is required: missing → 404 ``Resource not found``; not one Azure documents
  (:data:`API_VERSIONS`) → 400 ``API version not supported``;
* a key is required (``api-key`` or an Entra ID bearer token; see ``credentials.py``);
* the deployment in the path picks the model; the body's ``model`` is optional and ignored, and the
  answer's ``model`` is the deployment's. Test control: ``x-testupstream-azure-deployments: a, b`` lists
  the deployments that exist (default: every name exists); any other → 404 ``DeploymentNotFound``;
* errors are ``{"error": {"code": …, "message": …}}``;
* chat answers carry ``prompt_filter_results`` and per-choice ``content_filter_results``; a stream opens
  with a chunk whose ``choices`` is empty (it only holds the prompt filter results);
* tools: when ``tools`` are offered, ``tool_choice`` is not ``none`` and the last message is the user's
  (or ``tool_choice`` forces a function / ``required``), the answer is one call of the forced function
  (else the first tool) with arguments valid for its schema (the OpenAI fake's ``forced_tool`` / ``tool_call_reply``),
  ``finish_reason: tool_calls`` and ``completion_tokens`` = 1 + the arguments' top-level keys. After a
  ``tool`` message the answer is text again, so agent loops end.

Otherwise answers follow the chat fake's determinism contract (``openai_chat.py``).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, unquote

from tokenvoy.testupstream import openai_chat

__all__ = [
    "API_VERSIONS",
    "DEPLOYMENTS_HEADER",
    "chat_completion",
    "check_request",
    "error_body",
    "error_for_status",
    "parse_path",
]

DEPLOYMENTS_HEADER = "x-testupstream-azure-deployments"
_PATH = re.compile(r"^(?:.*)/openai/deployments/([^/]+)/(.+)$")
API_VERSIONS = frozenset(
    {
        # GA (stable/ in the spec)
        "2022-12-01",
        "2023-05-15",
        "2024-02-01",
        "2024-06-01",
        "2024-10-21",
        # preview/
        "2022-03-01-preview",
        "2022-06-01-preview",
        "2023-03-15-preview",
        "2023-06-01-preview",
        "2023-07-01-preview",
        "2023-08-01-preview",
        "2023-09-01-preview",
        "2023-10-01-preview",
        "2023-12-01-preview",
        "2024-02-15-preview",
        "2024-03-01-preview",
        "2024-04-01-preview",
        "2024-05-01-preview",
        "2024-07-01-preview",
        "2024-08-01-preview",
        "2024-09-01-preview",
        "2024-10-01-preview",
        "2024-12-01-preview",
        "2025-01-01-preview",
        "2025-02-01-preview",
        "2025-03-01-preview",
        "2025-04-01-preview",
    }
)
"""The data-plane inference ``api-version`` values of Azure OpenAI's REST reference (azure-rest-api-specs,
specification/cognitiveservices/data-plane/AzureOpenAI/inference/{stable,preview}/<version>, and the "API
version lifecycle" page); any other is 400 ``API version not supported``."""
_SAFE = {"filtered": False, "severity": "safe"}
# Chat fields Azure's inference reference adds to OpenAI's: "On your data" sources, Defender's user context.
EXTRA_FIELDS = frozenset({"data_sources", "user_security_context"})
CONTENT_FILTERS: dict[str, Any] = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
_STATUS_CODES = {400: "BadRequest", 401: "401", 403: "403", 404: "404", 429: "429", 500: "InternalServerError"}


def error_body(code: str, message: str) -> dict[str, Any]:
    """Azure OpenAI's error envelope."""
    return {"error": {"code": code, "message": message}}


def error_for_status(status: int, message: str) -> dict[str, Any]:
    return error_body(_STATUS_CODES.get(status, str(status)), message)


def parse_path(path: str) -> tuple[str, str] | None:
    """``(deployment, operation)`` of an Azure OpenAI path, e.g. ``("gpt-4o", "chat/completions")``."""
    match = _PATH.match(path)
    return (unquote(match.group(1)), match.group(2)) if match else None


def check_request(query: str, headers: dict[str, str], deployment: str) -> tuple[int, dict[str, Any]] | None:
    """The status and error Azure answers before looking at the body, or None when the call is fine."""
    versions = parse_qs(query).get("api-version")
    if not versions:
        return 404, error_body("404", "Resource not found")
    if versions[0] not in API_VERSIONS:
        return 400, error_body("BadRequest", "API version not supported")
    listed = headers.get(DEPLOYMENTS_HEADER)
    if listed is not None and deployment not in {name.strip() for name in listed.split(",")}:
        return 404, error_body(
            "DeploymentNotFound",
            "The API deployment for this resource does not exist. If you created the deployment within the "
            "last 5 minutes, please wait a moment and try again.",
        )
    return None


def chat_completion(payload: object, deployment: str, *, completion_id: str, created: int) -> openai_chat.ChatReply:
    """Azure's chat completion for ``deployment``: the chat fake's answer, or a tool call, with filter results."""
    if isinstance(payload, dict) and "model" not in payload:
        payload = {**payload, "model": deployment}
    reply = openai_chat.chat_completion(
        payload, completion_id=completion_id, created=created, extra_fields=EXTRA_FIELDS, model_checks=False
    )
    if reply.status != 200 or not isinstance(payload, dict):
        return openai_chat.ChatReply(reply.status, _azure_error(reply.body))
    if reply.body is not None:
        body = {**reply.body, "model": deployment}
        body.pop("service_tier", None)
        body["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": CONTENT_FILTERS}]
        for choice in body["choices"]:
            choice["content_filter_results"] = CONTENT_FILTERS
        return openai_chat.ChatReply(200, body)
    chunks = [
        {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": CONTENT_FILTERS}],
        }
    ]
    for chunk in reply.chunks or ():
        chunk = {**chunk, "model": deployment}
        chunk.pop("service_tier", None)
        for choice in chunk["choices"]:
            choice["content_filter_results"] = {} if choice.get("finish_reason") else CONTENT_FILTERS
        chunks.append(chunk)
    return openai_chat.ChatReply(200, chunks=chunks)


def _azure_error(body: dict[str, Any] | None) -> dict[str, Any]:
    error = (body or {}).get("error") or {}
    return error_body(str(error.get("code") or "BadRequest"), str(error.get("message") or "Bad request"))
