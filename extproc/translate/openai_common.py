"""OpenAI Chat Completions facts shared by every translator whose client speaks it: the request's images,
files, tool calls and default-only fields, and the answer's stream (:class:`ChatChunkWriter`).

Kept apart from any one backend so the Anthropic, Bedrock and Gemini translators read requests and write
streams the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from tokenvoy.extproc.errors import GatewayError, invalid_field, openai_error_body, untranslatable_field
from tokenvoy.extproc.translate.bodies import AnswerText
from tokenvoy.extproc.usage import TokenUsage

DONE = b"data: [DONE]\n\n"
# Chat fields whose only value a non-OpenAI backend can honour is the default: field → the accepted values.
# Each backend says why per field (``refuse_non_defaults``), in this order.
DEFAULT_VALUES: dict[str, tuple[object, ...]] = {
    "n": (None, 1),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "frequency_penalty": (None, 0),
    "presence_penalty": (None, 0),
    "logit_bias": (None, {}),
    "audio": (None,),
    "modalities": (None, ["text"]),
    "prediction": (None,),
    "web_search_options": (None,),
    "functions": (None,),
    "function_call": (None,),
}


# Chat models OpenAI documents without reasoning: they answer 400 ``unsupported_parameter`` to a
# ``reasoning_effort``. Any other model (o-series, gpt-5, OpenAI-compatible servers) is sent it.
NON_REASONING_PREFIXES = ("gpt-4", "gpt-3.5", "chatgpt-4o")


def takes_reasoning_effort(model: str) -> bool:
    """Whether a translated request may carry ``reasoning_effort`` for ``model``: a client's thinking setting
    must not turn into a field the chosen model refuses (Claude Code's adaptive thinking on gpt-4o-mini)."""
    return not model.lower().startswith(NON_REASONING_PREFIXES)


def refuse_non_defaults(body: dict[str, Any], reasons: dict[str, str], target: str) -> None:
    """A 422 naming the first field of ``reasons`` whose value is not its default (``DEFAULT_VALUES``)."""
    for field, why in reasons.items():
        if body.get(field) not in DEFAULT_VALUES[field]:
            raise untranslatable_field(field, target, why)


def asks_for_usage(body: dict[str, Any]) -> bool:
    """Whether the client's request has ``stream_options.include_usage: true`` (a usage chunk at the end)."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def provider_error(status: int, raw: bytes) -> GatewayError:
    """An OpenAI-schema provider's error answer (OpenAI's JSON, the gateway's own, or anything else) with its
    status kept and its message found, for the client's own error shape."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        message = error["message"]
    elif isinstance(error, str):
        message = error
    else:
        message = raw.decode("utf-8", errors="replace").strip() or f"the provider answered {status} with an empty body"
    return GatewayError(status, message)


def openai_usage(usage: TokenUsage, reasoning: bool = False) -> dict[str, Any]:
    """OpenAI's usage object: ``prompt_tokens`` include cached tokens, as OpenAI's own do; ``reasoning``: the
    backend reports reasoning tokens (``completion_tokens_details``)."""
    out: dict[str, Any] = {
        "prompt_tokens": usage.input,
        "completion_tokens": usage.output,
        "total_tokens": usage.total,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input},
    }
    if reasoning:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning}
    return out


class ChatChunkWriter:
    """The client's side of a translated chat stream, as OpenAI writes it: every ``chat.completion.chunk``
    with the answer's ``id``, ``created`` and ``model`` (set by the translator as it learns them), ``usage:
    null`` on each when the client asked for ``stream_options.include_usage``, then the ``choices: []`` usage
    chunk and ``data: [DONE]``. Choice 0's text goes to ``answer`` (kept only when tracing asks)."""

    def __init__(self, answer: AnswerText) -> None:
        self.id: str | None = None
        self.created: int | None = 0
        self.model: str | None = None
        self.include_usage = False
        self._answer = answer

    def read_request(self, body: dict[str, Any]) -> None:
        self.include_usage = asks_for_usage(body)

    def envelope(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None, index: int = 0) -> bytes:
        if index == 0 and isinstance(delta.get("content"), str):
            self._answer.add(delta["content"])
        chunk = self.envelope([{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}])
        if self.include_usage:
            chunk["usage"] = None  # as OpenAI does on every chunk but the last when usage was asked for
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def end(self, usage: TokenUsage | None, reasoning: bool = False) -> bytes:
        """The stream's end: the usage chunk if the client asked for it, then ``data: [DONE]``."""
        if not self.include_usage:
            return DONE
        final = self.envelope([])
        final["usage"] = openai_usage(usage or TokenUsage(), reasoning)
        return b"data: " + orjson.dumps(final) + b"\n\n" + DONE

    @staticmethod
    def error(error: GatewayError) -> bytes:
        """A provider's mid-stream error as the openai SDK reads it (it raises); the stream ends after it."""
        return b"data: " + openai_error_body(error) + b"\n\n"


def data_uri(url: str) -> tuple[str, str] | None:
    """``(media type, base64 data)`` of a ``data:…;base64,…`` URI (how OpenAI clients inline images and
    files), None for any other URL."""
    if not url.startswith("data:"):
        return None
    header, comma, data = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if not comma or encoding.lower() != "base64" or not media_type:
        return None
    return media_type, data


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """One entry of an assistant message's ``tool_calls``, checked, with its arguments decoded."""

    id: str
    name: str
    arguments: dict[str, Any]


def function_calls(message: dict[str, Any], where: str, target: str) -> list[FunctionCall]:
    """The assistant message's tool calls (``where`` is its path in the request, ``target`` the backend for
    422 messages, e.g. "an Anthropic backend"). Every provider takes a call's input as a JSON object."""
    tool_calls = message.get("tool_calls")
    if tool_calls is None:
        return []
    if not isinstance(tool_calls, list):
        raise invalid_field(f"{where}.tool_calls", "expected an array")
    calls = []
    for index, call in enumerate(tool_calls):
        at = f"{where}.tool_calls[{index}]"
        if not isinstance(call, dict) or call.get("type", "function") != "function":
            raise untranslatable_field(at, target, "only function tool calls can be sent")
        function = call.get("function")
        call_id = call.get("id")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
            raise invalid_field(at, "a tool call needs an `id` and a `function.name`")
        arguments = function.get("arguments") if isinstance(function, dict) else None
        try:
            parsed = orjson.loads(arguments) if isinstance(arguments, str) and arguments.strip() else {}
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            raise untranslatable_field(f"{at}.function.arguments", target, "tool call arguments must be a JSON object")
        calls.append(FunctionCall(call_id, name, parsed))
    return calls


# ---- signed reasoning, as OpenRouter's ``reasoning_details`` carry it ------------------------------------

REASONING_FORMAT = "anthropic-claude-v1"  # OpenRouter's name for Anthropic's signed reasoning


def thinking_blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """Anthropic's signed thinking blocks from an assistant message's ``reasoning_details`` (merged by
    ``index``, as streamed pieces accumulate); the text of a detail that has none is ``reasoning_content``."""
    details = message.get("reasoning_details")
    if details is None:
        return []
    if not isinstance(details, list):
        raise invalid_field(f"{where}.reasoning_details", "expected an array")
    merged: dict[object, dict[str, Any]] = {}
    for position, detail in enumerate(details):
        if not isinstance(detail, dict):
            raise invalid_field(f"{where}.reasoning_details[{position}]", "expected an object")
        key = detail.get("index", position)
        entry = merged.setdefault(key, {"type": detail.get("type"), "text": "", "signature": None, "data": None})
        for field in ("text", "signature", "data"):
            value = detail.get(field)
            if isinstance(value, str) and value:
                entry[field] = entry[field] + value if field == "text" else value
    blocks: list[dict[str, Any]] = []
    fallback = message.get("reasoning_content")
    for entry in merged.values():
        if entry["type"] == "reasoning.encrypted" and entry["data"]:
            blocks.append({"type": "redacted_thinking", "data": entry["data"]})
        elif entry["type"] == "reasoning.text" and entry["signature"]:
            text = entry["text"] or (fallback if isinstance(fallback, str) and len(merged) == 1 else "")
            blocks.append({"type": "thinking", "thinking": text, "signature": entry["signature"]})
    return blocks


def reasoning_text_detail(text: str, signature: object, index: int) -> dict[str, Any]:
    detail: dict[str, Any] = {"type": "reasoning.text", "text": text, "format": REASONING_FORMAT, "index": index}
    if isinstance(signature, str) and signature:
        detail["signature"] = signature
    return detail


def reasoning_encrypted_detail(data: str, index: int) -> dict[str, Any]:
    return {"type": "reasoning.encrypted", "data": data, "format": REASONING_FORMAT, "index": index}
