"""OpenAI Responses API (``POST /v1/responses``) behaviour of the fake upstream: pure functions, no I/O.

Written from OpenAI's API reference for "Create a model response" (and "Get input token counts") and its
streaming events; the field lists match the parameters of the official ``openai`` SDK, generated from it. What the real
API refuses, this refuses with OpenAI's error envelope and wording:

* a top-level field the API does not define (``Unknown parameter: 'x'.``, code ``unknown_parameter``);
  :data:`KNOWN_FIELDS` lists those it defines (plus ``client_metadata``, which OpenAI's own Codex CLI sends);
* a missing ``model``, a wrong type for ``input``/``stream``/``store``/``instructions``, a
  ``max_output_tokens`` below 16, an input item with an unknown ``role`` or ``type``, a function tool
  without a ``name``, a ``previous_response_id`` this server never answered (or answered with
  ``store: false``): ``Previous response with id '…' not found.``.

Determinism contract (the chat fake's, ``openai_chat.py``):

* the answer is ``max_output_tokens`` words of :data:`openai_chat.WORDS` (status ``incomplete``,
  ``incomplete_details.reason: max_output_tokens``), else 16 words (``completed``); with function ``tools``
  offered it is the 28-word sentence (``completed``), so agent loops end;
* function ``tools`` offered (``tool_choice`` not ``none``) with the last input item a user message, or a
  forced function / ``required``: one ``function_call`` of that tool (else the first function tool) with
  arguments valid for its schema; ``output_tokens`` = 1 + the arguments' top-level keys;
* ``usage.input_tokens`` counts the whitespace-separated words of ``instructions`` and every text in
  ``input`` (a string, message contents, ``input_text``/``output_text`` parts, ``function_call_output``
  outputs); ``output_tokens`` the words answered; no cached or reasoning tokens;
* streamed: ``response.created``, ``response.in_progress``, ``response.output_item.added``, then for a message
  ``response.content_part.added``, one ``response.output_text.delta`` per word, ``response.output_text.done``,
  ``response.content_part.done`` (for a call: ``response.function_call_arguments.delta`` / ``.done``),
  ``response.output_item.done`` and ``response.completed`` (or ``response.incomplete``) with the usage; every
  event has its ``sequence_number``; no ``[DONE]`` (the Responses stream has none).
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from typing import Any

import orjson

from tokenvoy.testupstream import openai_chat
from tokenvoy.testupstream.schemas import sample_value

__all__ = [
    "INPUT_TOKENS_FIELDS",
    "KNOWN_FIELDS",
    "ResponsesReply",
    "count_input_tokens",
    "create_response",
    "sse_frame",
]

KNOWN_FIELDS = frozenset(
    {
        "access_programs",
        "background",
        "background_options",
        "client_metadata",
        "context_management",
        "conversation",
        "image",
        "include",
        "input",
        "instructions",
        "max_output_tokens",
        "max_tool_calls",
        "metadata",
        "model",
        "moderation",
        "parallel_tool_calls",
        "previous_response_id",
        "prompt",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "reasoning",
        "safety_identifier",
        "service_tier",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "text",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "truncation",
        "user",
    }
)
# `POST /v1/responses/input_tokens` takes the request's prompt-shaping fields only.
INPUT_TOKENS_FIELDS = frozenset(
    {
        "conversation",
        "input",
        "instructions",
        "model",
        "parallel_tool_calls",
        "personality",
        "previous_response_id",
        "reasoning",
        "text",
        "tool_choice",
        "tools",
        "truncation",
    }
)
MIN_OUTPUT_TOKENS = 16
ROLES = ("user", "assistant", "system", "developer")
ITEM_TYPES = frozenset(
    {
        "message",
        "function_call",
        "function_call_output",
        "reasoning",
        "item_reference",
        "custom_tool_call",
        "custom_tool_call_output",
        "local_shell_call",
        "local_shell_call_output",
        "web_search_call",
        "file_search_call",
        "computer_call",
        "computer_call_output",
        "image_generation_call",
        "code_interpreter_call",
        "mcp_call",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
        "compaction",
    }
)
CONTENT_TYPES = frozenset({"input_text", "input_image", "input_file", "input_audio", "output_text", "refusal"})
TOOL_TYPES = frozenset(
    {
        "function",
        "custom",
        "file_search",
        "web_search",
        "web_search_preview",
        "web_search_preview_2025_03_11",
        "computer_use_preview",
        "code_interpreter",
        "image_generation",
        "mcp",
        "local_shell",
        "shell",
        "apply_patch",
        "namespace",  # a group of tools (Codex sends its sub-agent tools so)
        "tool_search",
    }
)


@dataclass(frozen=True, slots=True)
class ResponsesReply:
    """``body`` for a JSON answer (a Response or an error), ``events`` for a stream; ``stored``: the id to
    remember for a later ``previous_response_id`` (None when ``store: false`` or on error)."""

    status: int
    body: dict[str, Any] | None = None
    events: list[dict[str, Any]] | None = None
    stored: str | None = None


def _bad(message: str, param: str | None = None, code: str | None = None) -> ResponsesReply:
    return ResponsesReply(400, openai_chat.error_body(message, "invalid_request_error", param, code))


def _invalid_type(param: str, expected: str, value: object) -> ResponsesReply:
    got = openai_chat._type_name(value)
    return _bad(f"Invalid type for '{param}': expected {expected}, but got {got} instead.", param, "invalid_type")


def _invalid_value(param: str, value: object, supported: tuple[str, ...]) -> ResponsesReply:
    listed = ", ".join(f"'{v}'" for v in supported[:-1]) + f", and '{supported[-1]}'"
    return _bad(f"Invalid value: '{value}'. Supported values are: {listed}.", param, "invalid_value")


def _missing(param: str) -> ResponsesReply:
    return _bad(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


# -- validation -----------------------------------------------------------------------------------------


def _check_top_level(
    request: dict[str, Any], stored: Container[str], known: frozenset[str] = KNOWN_FIELDS
) -> ResponsesReply | None:
    for key in request:
        if key not in known:
            return _bad(f"Unknown parameter: '{key}'.", key, "unknown_parameter")
    model = request.get("model")
    if model is None:
        return _missing("model")
    if not isinstance(model, str):
        return _invalid_type("model", "a string", model)
    for key in ("stream", "store", "background", "parallel_tool_calls"):
        if request.get(key) is not None and not isinstance(request[key], bool):
            return _invalid_type(key, "a boolean", request[key])
    for key in ("instructions", "previous_response_id", "prompt_cache_key", "user"):
        if request.get(key) is not None and not isinstance(request[key], str):
            return _invalid_type(key, "a string", request[key])
    limit = request.get("max_output_tokens")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int):
            return _invalid_type("max_output_tokens", "an integer", limit)
        if limit < MIN_OUTPUT_TOKENS:
            return _bad(
                "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= "
                f"{MIN_OUTPUT_TOKENS}, but got {limit} instead.",
                "max_output_tokens",
                "integer_below_min_value",
            )
        if limit > openai_chat.MAX_COMPLETION_TOKENS:
            return _bad(
                f"Invalid 'max_output_tokens': integer above maximum value. Expected a value <= "
                f"{openai_chat.MAX_COMPLETION_TOKENS}, but got {limit} instead.",
                "max_output_tokens",
                "integer_above_max_value",
            )
    previous = request.get("previous_response_id")
    if previous is not None and previous not in stored:
        return _bad(
            f"Previous response with id '{previous}' not found.", "previous_response_id", "previous_response_not_found"
        )
    if request.get("stream_options") is not None and not request.get("stream"):
        return _bad(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
            "invalid_value",
        )
    return _check_input(request.get("input")) or _check_tools(request.get("tools"))


def _check_input(value: object) -> ResponsesReply | None:
    if value is None or isinstance(value, str):
        return None
    if not isinstance(value, list):
        return _invalid_type("input", "one of a string or array of input items", value)
    for index, item in enumerate(value):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            return _invalid_type(where, "an object", item)
        kind = item.get("type", "message" if "role" in item else None)
        if kind is None:
            return _missing(f"{where}.type")
        if kind not in ITEM_TYPES:
            return _invalid_value(f"{where}.type", kind, tuple(sorted(ITEM_TYPES)))
        if kind == "message":
            role = item.get("role")
            if role is None:
                return _missing(f"{where}.role")
            if role not in ROLES:
                return _invalid_value(f"{where}.role", role, ROLES)
            content = item.get("content")
            if content is None:
                return _missing(f"{where}.content")
            if isinstance(content, list):
                for part_index, part in enumerate(content):
                    at = f"{where}.content[{part_index}]"
                    if not isinstance(part, dict):
                        return _invalid_type(at, "an object", part)
                    if part.get("type") not in CONTENT_TYPES:
                        return _invalid_value(f"{at}.type", part.get("type"), tuple(sorted(CONTENT_TYPES)))
            elif not isinstance(content, str):
                return _invalid_type(f"{where}.content", "one of a string or array of input content", content)
        elif kind == "function_call":
            for key in ("call_id", "name", "arguments"):
                if not isinstance(item.get(key), str):
                    return (
                        _missing(f"{where}.{key}")
                        if key not in item
                        else _invalid_type(f"{where}.{key}", "a string", item[key])
                    )
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                return _missing(f"{where}.call_id")
            if "output" not in item:
                return _missing(f"{where}.output")
    return None


def _check_tools(tools: object) -> ResponsesReply | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        return _invalid_type("tools", "an array", tools)
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict):
            return _invalid_type(where, "an object", tool)
        kind = tool.get("type")
        if kind is None:
            return _missing(f"{where}.type")
        if kind not in TOOL_TYPES:
            return _invalid_value(f"{where}.type", kind, tuple(sorted(TOOL_TYPES)))
        if kind == "function" and not isinstance(tool.get("name"), str):
            return _missing(f"{where}.name")
    return None


# -- counting -------------------------------------------------------------------------------------------


def _words(text: object) -> int:
    return len(text.split()) if isinstance(text, str) else 0


def count_input_words(request: dict[str, Any]) -> int:
    """Input "tokens": the words of ``instructions`` and of every text the input holds."""
    total = _words(request.get("instructions"))
    value = request.get("input")
    if isinstance(value, str):
        return total + _words(value)
    for item in value or ():
        content = item.get("content")
        if isinstance(content, str):
            total += _words(content)
        elif isinstance(content, list):
            total += sum(_words(part.get("text")) for part in content if isinstance(part, dict))
        output = item.get("output")
        total += _words(output) if isinstance(output, str) else 0
    return total


# -- answers --------------------------------------------------------------------------------------------


def _function_tools(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in request.get("tools") or () if t.get("type") == "function"]


def _forced_tool(request: dict[str, Any]) -> dict[str, Any] | None:
    """The function tool the answer calls (the chat fake's rule, on Responses input items)."""
    tools = _function_tools(request)
    choice = request.get("tool_choice", "auto")
    if not tools or choice == "none":
        return None
    if isinstance(choice, dict):
        if choice.get("type") != "function":
            return None
        return next((t for t in tools if t.get("name") == choice.get("name")), None)
    value = request.get("input")
    if isinstance(value, str):
        last_is_user = True
    else:
        last = value[-1] if value else {}
        last_is_user = last.get("type", "message") == "message" and last.get("role") == "user"
    if choice != "required" and not last_is_user:
        return None
    return tools[0]


def _usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def _response(request: dict[str, Any], response_id: str, created: int) -> dict[str, Any]:
    """The Response object as it stands before any output (echoing the request's settings)."""
    reasoning = request.get("reasoning") if isinstance(request.get("reasoning"), dict) else {}
    text = request.get("text") if isinstance(request.get("text"), dict) else {}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": "in_progress",
        "background": request.get("background", False),
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": request.get("max_tool_calls"),
        "model": request["model"],
        "output": [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "service_tier": request.get("service_tier", "default"),
        "store": request.get("store", True),
        "temperature": request.get("temperature", 1.0),
        "text": {"format": text.get("format", {"type": "text"}), "verbosity": text.get("verbosity", "medium")},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools", []),
        "top_logprobs": request.get("top_logprobs", 0),
        "top_p": request.get("top_p", 1.0),
        "truncation": request.get("truncation", "disabled"),
        "usage": None,
        "user": request.get("user"),
        "metadata": request.get("metadata", {}),
    }


def create_response(request: object, *, response_id: str, created: int, stored: Container[str] = ()) -> ResponsesReply:
    """Validate a decoded ``/v1/responses`` body and build the deterministic answer to it. ``stored``: the
    ids of earlier stored responses (what ``previous_response_id`` may name)."""
    if not isinstance(request, dict):
        return _invalid_type("body", "an object", request)
    refused = _check_top_level(request, stored)
    if refused is not None:
        return refused
    serial = response_id.rsplit("_", 1)[-1]
    input_tokens = count_input_words(request)
    tool = _forced_tool(request)
    status, incomplete = "completed", None
    if tool is not None:
        arguments = orjson.dumps(sample_value(tool.get("parameters") or {"type": "object"})).decode()
        item: dict[str, Any] = {
            "id": f"fc_{serial}",
            "type": "function_call",
            "status": "completed",
            "arguments": arguments,
            "call_id": f"call_{serial}",
            "name": tool["name"],
        }
        output_tokens = 1 + len(orjson.loads(arguments) or {})
    else:
        limit = request.get("max_output_tokens")
        if _function_tools(request):
            words = len(openai_chat.WORDS) if limit is None else min(limit, len(openai_chat.WORDS))
        else:
            words = openai_chat.DEFAULT_MAX_TOKENS if limit is None else limit
        if limit is not None and words == limit and not (_function_tools(request) and words == len(openai_chat.WORDS)):
            status, incomplete = "incomplete", {"reason": "max_output_tokens"}
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": openai_chat.completion_text(words)}
        item = {"id": f"msg_{serial}", "type": "message", "status": status, "content": [part], "role": "assistant"}
        output_tokens = words
    final = _response(request, response_id, created)
    final.update(status=status, incomplete_details=incomplete, output=[item], usage=_usage(input_tokens, output_tokens))
    keep = response_id if request.get("store", True) is not False else None
    if not request.get("stream"):
        return ResponsesReply(200, final, stored=keep)
    return ResponsesReply(200, events=_events(request, final, item), stored=keep)


def count_input_tokens(request: object, *, stored: Container[str] = ()) -> ResponsesReply:
    """``POST /v1/responses/input_tokens``: the input "tokens" :func:`create_response` would count, checked the same
    way (its own field list)."""
    if not isinstance(request, dict):
        return _invalid_type("body", "an object", request)
    refused = _check_top_level(request, stored, INPUT_TOKENS_FIELDS)
    if refused is not None:
        return refused
    return ResponsesReply(200, {"object": "response.input_tokens", "input_tokens": count_input_words(request)})


def _events(request: dict[str, Any], final: dict[str, Any], item: dict[str, Any]) -> list[dict[str, Any]]:
    opening = _response(request, final["id"], final["created_at"])
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": opening},
        {"type": "response.in_progress", "response": opening},
    ]
    if item["type"] == "function_call":
        events.append(
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {**item, "status": "in_progress", "arguments": ""},
            }
        )
        events.append(
            {
                "type": "response.function_call_arguments.delta",
                "item_id": item["id"],
                "output_index": 0,
                "delta": item["arguments"],
            }
        )
        events.append(
            {
                "type": "response.function_call_arguments.done",
                "item_id": item["id"],
                "output_index": 0,
                "name": item["name"],
                "arguments": item["arguments"],
            }
        )
    else:
        part = item["content"][0]
        where = {"item_id": item["id"], "output_index": 0, "content_index": 0}
        events.append(
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {**item, "status": "in_progress", "content": []},
            }
        )
        events.append({"type": "response.content_part.added", **where, "part": {**part, "text": ""}})
        for index, word in enumerate(part["text"].split(" ")):
            delta = word if index == 0 else " " + word
            events.append({"type": "response.output_text.delta", **where, "delta": delta, "logprobs": []})
        events.append({"type": "response.output_text.done", **where, "text": part["text"], "logprobs": []})
        events.append({"type": "response.content_part.done", **where, "part": part})
    events.append({"type": "response.output_item.done", "output_index": 0, "item": item})
    terminal = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
    events.append({"type": terminal, "response": final})
    for number, event in enumerate(events):
        event["sequence_number"] = number
    return events


def sse_frame(event: dict[str, Any]) -> bytes:
    """One SSE event as OpenAI frames a Responses stream: ``event: <type>`` and ``data: <json>``."""
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
