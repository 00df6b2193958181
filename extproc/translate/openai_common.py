"""OpenAI Chat Completions request facts shared by every translator that reads an OpenAI client's request.

Kept apart from any one backend so the Anthropic, Bedrock and Gemini translators read images, files and tool
calls the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from tokenvoy.extproc.errors import invalid_field, untranslatable_field


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
