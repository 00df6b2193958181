"""OpenAI legacy Completions (``POST /v1/completions``) behaviour of the fake upstream: pure functions.

Determinism contract, the chat fake's (``openai_chat.py``) applied to ``prompt``:

* each prompt's completion is ``max_tokens`` (else 16) words of :data:`openai_chat.WORDS`, cyclically;
  ``finish_reason`` is ``"length"`` when the client set ``max_tokens``, else ``"stop"``;
* ``prompt`` may be a string, an array of strings, a token array or an array of token arrays; there is
  one choice per prompt and per ``n`` (index = prompt * n + i);
* ``usage.prompt_tokens`` is the prompts' whitespace-separated words (token arrays: their ids),
  ``completion_tokens`` the words generated across choices;
* streamed: one chunk per word per choice (``"w0"``, ``" w1"``, …, concatenated = the plain text), then a
  chunk per choice with ``text: ""`` and the ``finish_reason``, then, only with
  ``stream_options.include_usage``, a ``choices: []`` chunk with the usage (and ``usage: null`` on the
  others, as OpenAI does); the caller frames them and ends with ``data: [DONE]``.
"""

from __future__ import annotations

from typing import Any

from tokenvoy.testupstream.openai_chat import (
    DEFAULT_MAX_TOKENS,
    MAX_COMPLETION_TOKENS,
    SYSTEM_FINGERPRINT,
    WORDS,
    ChatReply,
    completion_text,
    error_body,
)

__all__ = ["completion"]

MAX_N = 128


def _bad(message: str, param: str | None = None) -> ChatReply:
    return ChatReply(400, error_body(message, "invalid_request_error", param, None))


def _is_ids(value: object) -> bool:
    return (
        isinstance(value, list) and bool(value) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    )


def _prompt_tokens(prompt: object) -> list[int] | None:
    """Tokens of each prompt, or None when ``prompt`` is not one of the four accepted shapes."""
    if isinstance(prompt, str):
        return [len(prompt.split())]
    if _is_ids(prompt):
        return [len(prompt)]  # type: ignore[arg-type]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return [len(p.split()) for p in prompt]
        if all(_is_ids(p) for p in prompt):
            return [len(p) for p in prompt]
    return None


def _int_field(request: dict[str, Any], key: str, low: int, high: int) -> int | ChatReply | None:
    value = request.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return _bad(f"Invalid '{key}': expected an integer between {low} and {high}, got {value!r}.", key)
    return value


def completion(request: object, *, completion_id: str, created: int) -> ChatReply:
    """Validate a decoded ``/v1/completions`` body and build OpenAI's deterministic answer to it."""
    if not isinstance(request, dict):
        return _bad("Invalid body: expected a JSON object.")
    model = request.get("model")
    if not isinstance(model, str) or not model:
        return _bad("you must provide a model parameter", "model")
    if "prompt" not in request:
        return _bad("Missing required parameter: 'prompt'.", "prompt")
    prompts = _prompt_tokens(request["prompt"])
    if prompts is None:
        return _bad("Invalid 'prompt': expected a string, an array of strings or of token arrays.", "prompt")
    limit = _int_field(request, "max_tokens", 0, MAX_COMPLETION_TOKENS)
    n = _int_field(request, "n", 1, MAX_N)
    if isinstance(limit, ChatReply):
        return limit
    if isinstance(n, ChatReply):
        return n
    n = n or 1
    stream = request.get("stream")
    if stream is not None and not isinstance(stream, bool):
        return _bad("Invalid 'stream': expected a boolean.", "stream")
    options = request.get("stream_options")
    if options is not None and not stream:
        return _bad("The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True

    words = DEFAULT_MAX_TOKENS if limit is None else limit
    finish = "stop" if limit is None else "length"
    choices = len(prompts) * n
    prompt_tokens = sum(prompts)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": words * choices,
        "total_tokens": prompt_tokens + words * choices,
    }
    base = {"id": completion_id, "object": "text_completion", "created": created, "model": model}
    if not stream:
        text = completion_text(words)
        return ChatReply(
            200,
            {
                **base,
                "choices": [
                    {"text": text, "index": i, "logprobs": None, "finish_reason": finish} for i in range(choices)
                ],
                "usage": usage,
                "system_fingerprint": SYSTEM_FINGERPRINT,
            },
        )

    def chunk(choice_list: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {**base, "choices": choice_list, "system_fingerprint": SYSTEM_FINGERPRINT}
        if include_usage:
            out["usage"] = None
        return out

    chunks = []
    for k in range(words):
        piece = WORDS[k % len(WORDS)] if k == 0 else " " + WORDS[k % len(WORDS)]
        chunks.extend(
            chunk([{"text": piece, "index": i, "logprobs": None, "finish_reason": None}]) for i in range(choices)
        )
    chunks.extend(chunk([{"text": "", "index": i, "logprobs": None, "finish_reason": finish}]) for i in range(choices))
    if include_usage:
        final = chunk([])
        final["usage"] = usage
        chunks.append(final)
    return ChatReply(200, chunks=chunks)
