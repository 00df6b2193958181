"""OpenAI Chat Completions behaviour of the fake upstream: pure functions, no I/O.

A request dict goes in; a status plus either a JSON body or the list of SSE chunk dicts comes out, shaped
exactly like api.openai.com's (ids, ``object`` names, ``usage`` details, ``usage: null`` on stream chunks
when usage was asked for, ...). Kept free of HTTP so the same answers can be asserted in unit tests and so
other providers can sit next to it as sibling modules.

Determinism contract (tests and benchmarks rely on it):

* the completion is ``max_completion_tokens`` (else ``max_tokens``, else 16) words taken cyclically from
  :data:`WORDS`, starting at the first word, joined with single spaces; when the request offers ``tools``
  (an agent's turn after a tool result) it is the 28-word sentence of :data:`WORDS` instead, ending
  ``stop`` like a model's natural end (cut to ``length`` by a smaller limit);
* ``usage.prompt_tokens`` is the number of whitespace-separated words across every message's ``content``
  (a string, or the ``text`` of ``{"type": "text"}`` parts of a content list); ``completion_tokens`` is the
  number of words generated (times ``n``); ``total_tokens`` is their sum;
* ``finish_reason`` is ``"length"`` when the client set a limit (the reply always fills it) and ``"stop"``
  when it did not (the default 16-word answer is treated as the model's natural end), tools aside (above);
* offered ``tools`` (``tool_choice`` not ``none``) with the user's message last (system messages after it
  aside), or a forced tool: one call of that tool (else the first) with arguments valid for its schema,
  ``finish_reason: tool_calls``, ``completion_tokens`` = 1 + the arguments' top-level keys
  (:func:`forced_tool`, :func:`tool_call_reply`);
* streamed: a role chunk (``delta: {role: assistant, content: ""}``), one chunk per word (``"w0"``,
  ``" w1"``, ... so concatenated deltas equal the non-streamed text), a chunk with ``finish_reason``, then,
  only with ``stream_options.include_usage``, a ``choices: []`` chunk carrying ``usage``; the caller frames
  them with :func:`sse_frame` and ends with :data:`SSE_DONE`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from tokenvoy.testupstream.schemas import sample_value

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "KNOWN_FIELDS",
    "MAX_COMPLETION_TOKENS",
    "SSE_DONE",
    "WORDS",
    "ChatReply",
    "chat_completion",
    "completion_text",
    "count_prompt_words",
    "error_body",
    "error_for_status",
    "invalid_json_error",
    "invalid_url_error",
    "sse_frame",
    "takes_reasoning_effort",
]

WORDS: tuple[str, ...] = (
    "The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "while",
    "tokens", "flow", "through", "Envoy", "and", "every", "budget", "is", "counted", "with",
    "care", "so", "nobody", "pays", "twice", "for", "one", "answer.",
)  # fmt: skip
"""The fixed vocabulary the completion cycles through (28 words; the 16-word default stops at "with")."""

DEFAULT_MAX_TOKENS = 16
MAX_COMPLETION_TOKENS = 100_000
"""Largest limit accepted, like a real model's output cap (and a guard against accidental huge replies)."""
MAX_N = 128
VALID_ROLES = ("system", "assistant", "user", "function", "tool", "developer")
SYSTEM_FINGERPRINT = "fp_tokenvoy"
KNOWN_FIELDS = frozenset(
    {
        "messages",
        "model",
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "metadata",
        "modalities",
        "moderation",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
    }
)
"""The request body's fields in OpenAI's API reference for "Create chat completion" (the official ``openai``
SDK's ``CompletionCreateParams``, generated from OpenAI's OpenAPI spec; as of August 2026). Any other is 400
``Unrecognized request argument supplied: <name>`` (``param`` and ``code`` null), as OpenAI answers."""
NO_REASONING_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4-", "gpt-3.5", "chatgpt-4o")
"""Models OpenAI's model pages list without reasoning (and ``gpt-4`` itself): ``reasoning_effort`` is
"o-series and gpt-5 models only" in the API reference, and OpenAI answers it on these with the same 400
``Unrecognized request argument supplied: reasoning_effort`` (reported for gpt-4o-mini and gpt-4.1)."""
SSE_DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True, slots=True)
class ChatReply:
    """What to send back: ``body`` for JSON replies (success or error), ``chunks`` for a stream."""

    status: int
    body: dict[str, Any] | None = None
    chunks: list[dict[str, Any]] | None = None


# -- errors ---------------------------------------------------------------------------------------------


def error_body(
    message: str, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _bad(message: str, param: str | None = None, code: str | None = None) -> ChatReply:
    return ChatReply(400, error_body(message, "invalid_request_error", param, code))


def invalid_json_error() -> dict[str, Any]:
    """OpenAI's answer to a body that is not JSON at all."""
    return error_body(
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
        "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid "
        "JSON. If you have trouble figuring out how to fix this, please contact us through our help center "
        "at help.openai.com.)"
    )


def invalid_url_error(method: str, path: str) -> dict[str, Any]:
    """OpenAI's 404 for an endpoint that does not exist (or the wrong method on one that does)."""
    return error_body(f"Invalid URL ({method} {path})")


_STATUS_ERRORS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


def error_for_status(status: int, message: str) -> dict[str, Any]:
    """An OpenAI-shaped error body whose ``type``/``code`` match what OpenAI sends with that status."""
    if status in _STATUS_ERRORS:
        type_, code = _STATUS_ERRORS[status]
    elif status >= 500:
        type_, code = "server_error", None
    else:
        type_, code = "invalid_request_error", None
    return error_body(message, type_, None, code)


def _type_name(value: object) -> str:
    """How OpenAI names a JSON value's type in "expected X, but got Y instead"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _invalid_type(param: str, expected: str, value: object) -> ChatReply:
    return _bad(
        f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)} instead.",
        param,
        "invalid_type",
    )


def _missing(param: str) -> ChatReply:
    return _bad(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def _positive_int(request: dict[str, Any], key: str, maximum: int) -> int | ChatReply | None:
    value = request.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return _invalid_type(key, "an integer", value)
    if value < 1:
        return _bad(
            f"Invalid '{key}': integer below minimum value. Expected a value >= 1, but got {value} instead.",
            key,
            "integer_below_min_value",
        )
    if value > maximum:
        return _bad(
            f"Invalid '{key}': integer above maximum value. Expected a value <= {maximum}, but got {value} instead.",
            key,
            "integer_above_max_value",
        )
    return value


# -- counting -------------------------------------------------------------------------------------------


def count_prompt_words(messages: list[dict[str, Any]]) -> int:
    """Prompt "tokens": whitespace-separated words of every message's string content or text parts."""
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += len(content.split())
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "text":
                    text = part.get("text")
                    if isinstance(text, str):
                        total += len(text.split())
    return total


@lru_cache(maxsize=256)
def _words(n: int) -> tuple[str, ...]:
    size = len(WORDS)
    return tuple(WORDS[i % size] for i in range(n))


@lru_cache(maxsize=256)
def completion_text(n: int) -> str:
    """The deterministic completion of ``n`` words."""
    return " ".join(_words(n))


# -- validation -----------------------------------------------------------------------------------------


def _validate_messages(messages: object) -> ChatReply | None:
    if messages is None:
        return _missing("messages")
    if not isinstance(messages, list):
        return _invalid_type("messages", "an array", messages)
    if not messages:
        return _bad(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            "messages",
            "empty_array",
        )
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            return _invalid_type(where, "an object", message)
        role = message.get("role")
        if role is None:
            return _missing(f"{where}.role")
        if role not in VALID_ROLES:
            if not isinstance(role, str):
                return _invalid_type(f"{where}.role", "a string", role)
            return _bad(
                f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', "
                "'function', 'tool', and 'developer'.",
                f"{where}.role",
                "invalid_value",
            )
        content = message.get("content")
        if content is None:
            if role != "assistant" and role != "function":
                return _missing(f"{where}.content")
        elif isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict):
                    return _invalid_type(f"{where}.content[{j}]", "an object", part)
        elif not isinstance(content, str):
            return _invalid_type(f"{where}.content", "one of a string or array of objects", content)
    return None


# -- replies --------------------------------------------------------------------------------------------


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")
"""Reasoning models: the API reference's ``max_tokens`` "is not compatible with o-series models" (nor gpt-5);
OpenAI answers it 400 ``unsupported_parameter`` naming ``max_completion_tokens``."""


def _unrecognized(name: str) -> ChatReply:
    return _bad(f"Unrecognized request argument supplied: {name}")


def takes_reasoning_effort(model: str) -> bool:
    """False for the models OpenAI documents without reasoning (:data:`NO_REASONING_PREFIXES`)."""
    return not (model == "gpt-4" or model.startswith(NO_REASONING_PREFIXES))


def chat_completion(
    request: object,
    *,
    completion_id: str,
    created: int,
    extra_fields: frozenset[str] = frozenset(),
    model_checks: bool = True,
) -> ChatReply:
    """Validate a decoded ``/v1/chat/completions`` body and build OpenAI's deterministic answer to it.

    ``extra_fields``: top-level fields taken besides OpenAI's (Azure's own); ``model_checks``: refuse what
    the named model does not take (off where the name is not a model's, e.g. an Azure deployment)."""
    if not isinstance(request, dict):
        return _bad(
            f"Invalid type for body: expected an object, but got {_type_name(request)} instead.",
            None,
            "invalid_type",
        )
    for name in request:
        if name not in KNOWN_FIELDS and name not in extra_fields:
            return _unrecognized(name)
    model = request.get("model")
    if model is None:
        return _bad("you must provide a model parameter")
    if not isinstance(model, str):
        return _invalid_type("model", "a string", model)
    if model_checks and request.get("reasoning_effort") is not None and not takes_reasoning_effort(model):
        return _unrecognized("reasoning_effort")
    if model_checks and request.get("max_tokens") is not None and model.startswith(REASONING_PREFIXES):
        return _bad(
            "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' "
            "instead.",
            "max_tokens",
            "unsupported_parameter",
        )
    if (err := _validate_messages(request.get("messages"))) is not None:
        return err
    messages: list[dict[str, Any]] = request["messages"]

    limit = None
    for key in ("max_completion_tokens", "max_tokens"):
        value = _positive_int(request, key, MAX_COMPLETION_TOKENS)
        if isinstance(value, ChatReply):
            return value
        if limit is None:
            limit = value
    n = _positive_int(request, "n", MAX_N)
    if isinstance(n, ChatReply):
        return n
    n = n or 1

    stream = request.get("stream")
    if stream is not None and not isinstance(stream, bool):
        return _invalid_type("stream", "a boolean", stream)
    stream_options = request.get("stream_options")
    include_usage = False
    if stream_options is not None:
        if not stream:
            return _bad(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                "stream_options",
                "invalid_value",
            )
        if not isinstance(stream_options, dict):
            return _invalid_type("stream_options", "an object", stream_options)
        include_usage = stream_options.get("include_usage")
        if include_usage is not None and not isinstance(include_usage, bool):
            return _invalid_type("stream_options.include_usage", "a boolean", include_usage)
        include_usage = bool(include_usage)

    tool = forced_tool(request)
    if tool is not None:
        return tool_call_reply(request, tool, completion_id, created)
    words, finish_reason = _text_length(request, limit)
    usage = _usage(count_prompt_words(messages), words * n)

    if not stream:
        text = completion_text(words)
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            for i in range(n)
        ]
        return ChatReply(
            200,
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": choices,
                "usage": usage,
                "service_tier": "default",
                "system_fingerprint": SYSTEM_FINGERPRINT,
            },
        )

    return ChatReply(
        200,
        chunks=_stream_chunks(completion_id, created, model, words, n, finish_reason, usage if include_usage else None),
    )


def _text_length(request: dict[str, Any], limit: int | None) -> tuple[int, str]:
    """``(words, finish_reason)`` of a text answer. A request offering tools is an agent's turn (after a tool
    result): the whole sentence of :data:`WORDS` is the model's natural end (``stop``), cut at the limit
    (``length``), so the agent loop ends. Otherwise the answer fills the limit, or is 16 words (``stop``)."""
    if request.get("tools"):
        words = len(WORDS) if limit is None else min(limit, len(WORDS))
        return words, "stop" if words == len(WORDS) else "length"
    return (DEFAULT_MAX_TOKENS, "stop") if limit is None else (limit, "length")


def forced_tool(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The function tool the answer calls, or None for a text answer: the named or ``required`` tool, else the
    first tool when the last message is the user's (after a ``tool`` result the answer is text, so agent loops
    end); system and developer messages after it leave the turn the user's."""
    tools = [t for t in payload.get("tools") or () if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    choice = payload.get("tool_choice", "auto")
    if not tools or choice == "none":
        return None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return next((t for t in tools if t["function"].get("name") == name), None)
    roles = [m.get("role") for m in payload.get("messages") or () if isinstance(m, dict)]
    last_role = next((role for role in reversed(roles) if role not in ("system", "developer")), None)
    if choice != "required" and last_role != "user":
        return None
    return tools[0]


def tool_call_reply(payload: dict[str, Any], tool: dict[str, Any], completion_id: str, created: int) -> ChatReply:
    function = tool["function"]
    arguments = sample_value(function.get("parameters") or {"type": "object"})
    call = {
        "id": f"call_{completion_id.rsplit('-', 1)[-1]}",
        "type": "function",
        "function": {"name": function.get("name", ""), "arguments": orjson.dumps(arguments).decode()},
    }
    prompt = count_prompt_words(payload.get("messages") or [])
    output = 1 + (len(arguments) if isinstance(arguments, dict) else 0)
    usage = {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output}
    base = {
        "id": completion_id,
        "created": created,
        "model": payload.get("model"),
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    if not payload.get("stream"):
        message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}
        return ChatReply(200, {**base, "object": "chat.completion", "choices": [choice], "usage": usage})
    include_usage = (payload.get("stream_options") or {}).get("include_usage") is True

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        out = {**base, "object": "chat.completion.chunk"}
        out["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        if include_usage:
            out["usage"] = None
        return out

    opening = {**call, "index": 0, "function": {"name": call["function"]["name"], "arguments": ""}}
    chunks = [
        chunk({"role": "assistant", "content": None, "tool_calls": [opening]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": call["function"]["arguments"]}}]}),
        chunk({}, "tool_calls"),
    ]
    if include_usage:
        chunks.append({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage})
    return ChatReply(200, chunks=chunks)


def _stream_chunks(
    completion_id: str,
    created: int,
    model: str,
    words: int,
    n: int,
    finish_reason: str,
    usage: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    with_usage = usage is not None

    def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
        c: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
        }
        if with_usage:
            c["usage"] = None
        return c

    def choice(i: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}

    out = [chunk([choice(i, {"role": "assistant", "content": "", "refusal": None})]) for i in range(n)]
    for k, word in enumerate(_words(words)):
        content = word if k == 0 else " " + word
        out.extend(chunk([choice(i, {"content": content})]) for i in range(n))
    out.extend(chunk([choice(i, {}, finish_reason)]) for i in range(n))
    if usage is not None:
        final = chunk([])
        final["usage"] = usage
        out.append(final)
    return out


def sse_frame(chunk: dict[str, Any]) -> bytes:
    """One SSE event as OpenAI frames it: ``data: <json>`` and a blank line."""
    return b"data: " + orjson.dumps(chunk) + b"\n\n"
