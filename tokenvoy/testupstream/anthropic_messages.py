"""Anthropic Messages API behaviour of the fake upstream: pure functions, no I/O.

The request bytes and headers go in; a status plus either a JSON body or the list of SSE event dicts comes
out, shaped like api.anthropic.com's (``msg_…`` ids, ``content`` blocks, ``usage`` with cache fields,
``message_start`` … ``message_stop``). Validation is strict the way Anthropic's is (required
``max_tokens`` and ``anthropic-version``, an API key, only the ``anthropic-beta`` flags Anthropic documents
(:data:`anthropic_betas.ANTHROPIC_BETAS`), alternating roles starting with ``user``,
``tool_use``/``tool_result`` pairing, no unknown fields), so a translator that sends something Anthropic
would refuse fails here too, with a 400 ``invalid_request_error`` naming the problem.

Determinism contract (tests and benchmarks rely on it):

* the answer is the 28-word sentence of :data:`openai_chat.WORDS`: the model's natural end
  (``stop_reason: end_turn``). When ``max_tokens`` leaves room for fewer words it is cut there
  (``max_tokens``); when a stop sequence appears in it, it is cut just before it (``stop_sequence``);
* with ``thinking`` enabled or adaptive a thinking block (:data:`THINKING_TEXT`, signed) comes first and its words
  count as output and against ``max_tokens``;
* when tools are offered, ``tool_choice`` is not ``none`` and the last turn is the user's, the answer is
  one ``tool_use`` of the first custom tool (Anthropic's own versioned tools, ``web_search_20250305`` …, are
  accepted as the API does and never called) (or the one ``tool_choice`` names) with an input valid for its schema:
  every required property filled with a value of its type (see :func:`sample_value`). After ``tool_result``
  blocks the answer is text again unless ``tool_choice`` forces a tool, so agent loops end;
* ``usage.input_tokens`` counts whitespace-separated words of ``system`` and of every message's text
  (strings, ``text`` blocks, ``tool_result`` text). Words up to and including the last block carrying
  ``cache_control`` are reported as ``cache_read_input_tokens`` instead (as if the cache were warm);
  ``output_tokens`` counts answer words (thinking included), a tool call counts 1 + its top-level
  arguments;
* streamed: ``message_start`` (``output_tokens: 1``), ``ping``, per block ``content_block_start``, deltas
  (one ``text_delta`` per word, ``thinking_delta`` per word then a ``signature_delta``, the tool input
  JSON in three ``input_json_delta`` pieces, the first empty) and ``content_block_stop``, then
  ``message_delta`` (stop reason, ``usage.output_tokens``) and ``message_stop``; framed by
  :func:`sse_frame`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from tokenvoy.testupstream.anthropic_betas import ANTHROPIC_BETAS, anthropic_betas, unknown_betas
from tokenvoy.testupstream.openai_chat import WORDS
from tokenvoy.testupstream.schemas import sample_value

__all__ = [
    "MAX_OUTPUT_TOKENS",
    "THINKING_SIGNATURE",
    "THINKING_TEXT",
    "MessagesReply",
    "count_prompt_words",
    "count_tokens",
    "create_message",
    "error_body",
    "error_for_status",
    "sample_value",
    "sse_frame",
]

MAX_OUTPUT_TOKENS = 128_000
THINKING_TEXT = "Let me think about the answer."
THINKING_SIGNATURE = "ZmFrZS1zaWduYXR1cmU="
MIN_THINKING_BUDGET = 1024
ANSWER = " ".join(WORDS)
TOP_LEVEL_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "thinking",
        "service_tier",
        # Also in the API reference's request body (some behind an ``anthropic-beta`` flag, which the
        # real API does not check for the field to be accepted):
        "container",
        "context_management",
        "mcp_servers",
        "output_config",
        "output_format",
    }
)
_THINKING_TYPES = ("adaptive", "disabled", "enabled")
_EFFORTS = ("low", "medium", "high", "xhigh", "max")
_SERVICE_TIERS = ("auto", "standard_only")
# A custom tool's fields in the API reference (defer_loading … for tool search, strict, examples).
_TOOL_FIELDS = frozenset(
    {
        "name",
        "description",
        "input_schema",
        "cache_control",
        "type",
        "allowed_callers",
        "defer_loading",
        "eager_input_streaming",
        "input_examples",
        "strict",
    }
)
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_VERSIONED_TOOL = re.compile(r"^[a-z][a-z0-9_]*_\d{8}$")  # web_search_20250305, text_editor_20250728, …
_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_USER_BLOCKS = frozenset({"text", "image", "document", "tool_result"})
_ASSISTANT_BLOCKS = frozenset({"text", "tool_use", "thinking", "redacted_thinking"})
_TOOL_CHOICES = frozenset({"auto", "any", "tool", "none"})
_EMPTY = "all messages must have non-empty content except for the optional final assistant message"


@dataclass(frozen=True, slots=True)
class MessagesReply:
    """What to send back: ``body`` for JSON replies (success or error), ``events`` for a stream."""

    status: int
    body: dict[str, Any] | None = None
    events: list[dict[str, Any]] | None = None


# -- errors ---------------------------------------------------------------------------------------------


def error_body(message: str, type: str = "invalid_request_error") -> dict[str, Any]:
    """Anthropic's error envelope."""
    return {"type": "error", "error": {"type": type, "message": message}}


_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_for_status(status: int, message: str) -> dict[str, Any]:
    """The error body Anthropic sends with ``status`` (529 is its "overloaded")."""
    default = "api_error" if status >= 500 else "invalid_request_error"
    return error_body(message, _STATUS_TYPES.get(status, default))


class _Invalid(Exception):
    def __init__(self, message: str, status: int = 400, type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.reply = MessagesReply(status, error_body(message, type))


# -- counting -------------------------------------------------------------------------------------------


def _texts(content: object) -> list[tuple[str, bool]]:
    """``(text, cache marker)`` of every countable piece of a ``system`` or message ``content``."""
    if isinstance(content, str):
        return [(content, False)]
    pieces: list[tuple[str, bool]] = []
    if not isinstance(content, list):
        return pieces
    for block in content:
        if not isinstance(block, dict):
            continue
        marked = isinstance(block.get("cache_control"), dict)
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            pieces.append((block["text"], marked))
        elif kind == "tool_result":
            inner = _texts(block.get("content"))
            pieces.extend(inner)
            if marked:
                pieces.append(("", True))
        elif marked:
            pieces.append(("", True))
    return pieces


def count_prompt_words(system: object, messages: list[dict[str, Any]]) -> tuple[int, int]:
    """``(uncached, cached)`` prompt words; the cached ones are those up to the last ``cache_control``."""
    pieces = _texts(system)
    for message in messages:
        pieces.extend(_texts(message.get("content")))
    counts = [len(text.split()) for text, _ in pieces]
    last_marked = max((i for i, (_, marked) in enumerate(pieces) if marked), default=-1)
    cached = sum(counts[: last_marked + 1])
    return sum(counts) - cached, cached


# -- validation -----------------------------------------------------------------------------------------


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a valid boolean"
    if isinstance(value, int | float):
        return "a valid number"
    if isinstance(value, str):
        return "a valid string"
    if isinstance(value, list):
        return "a valid list"
    return "a valid dictionary"


def _expect(value: object, kind: type | tuple[type, ...], where: str, name: str) -> None:
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise _Invalid(f"{where}: Input should be {name}")
    if not isinstance(value, kind):
        raise _Invalid(f"{where}: Input should be {name}")


def _check_headers(headers: Mapping[str, str]) -> None:
    """A key is required: ``x-api-key`` (what gateways send) or ``authorization: Bearer`` (what the
    anthropic SDK ≥ 2 sends); which keys are valid is the route's check (``credentials.py``). Then
    ``anthropic-version``, and every ``anthropic-beta`` flag must be one Anthropic documents."""
    bearer = headers.get("authorization", "")
    if not headers.get("x-api-key") and not (bearer.lower().startswith("bearer ") and bearer[7:].strip()):
        raise _Invalid("x-api-key header is required", 401, "authentication_error")
    if not headers.get("anthropic-version"):
        raise _Invalid("anthropic-version: header is required")
    beta = headers.get("anthropic-beta")
    # the installed SDK's flags are looked up only for a flag the list lacks (anthropic_betas: a slow import)
    unknown = unknown_betas(beta, ANTHROPIC_BETAS) if beta is not None else []
    if unknown and (unknown := unknown_betas(beta, anthropic_betas())):
        raise _Invalid(
            f"Unexpected value(s) {', '.join(f'`{flag}`' for flag in unknown)} for the `anthropic-beta` header. "
            "Please consult our documentation at docs.claude.com or try again without the header."
        )


def _check_text_content(content: object, where: str) -> None:
    """``system`` or a ``tool_result``'s content: a string or a list of non-empty text blocks."""
    if isinstance(content, str):
        return
    _expect(content, list, where, "a valid list")
    assert isinstance(content, list)
    for i, block in enumerate(content):
        if not isinstance(block, dict) or block.get("type") not in ("text", "image"):
            raise _Invalid(f"{where}.{i}: Input tag does not match any of the expected tags: 'text', 'image'")
        if block["type"] == "text":
            _check_text_block(block, f"{where}.{i}")


def _check_text_block(block: dict[str, Any], where: str) -> None:
    text = block.get("text")
    _expect(text, str, f"{where}.text", "a valid string")
    if not text:
        raise _Invalid(f"{where}: text content blocks must be non-empty")


def _check_source(block: dict[str, Any], where: str, media_types: tuple[str, ...]) -> None:
    source = block.get("source")
    _expect(source, dict, f"{where}.source", "a valid dictionary")
    kind = source.get("type")
    if kind == "base64":
        if source.get("media_type") not in media_types:
            raise _Invalid(f"{where}.source.base64.media_type: Input should be {', '.join(map(repr, media_types))}")
        if not isinstance(source.get("data"), str) or not source["data"]:
            raise _Invalid(f"{where}.source.base64.data: Field required")
    elif kind == "url":
        if not isinstance(source.get("url"), str) or not source["url"].startswith(("http://", "https://")):
            raise _Invalid(f"{where}.source.url.url: Input should be a valid URL")
    else:
        raise _Invalid(f"{where}.source: Input tag {kind!r} does not match any of the expected tags: 'base64', 'url'")


def _check_message(message: object, index: int) -> list[dict[str, Any]]:
    where = f"messages.{index}"
    _expect(message, dict, where, "a valid dictionary")
    assert isinstance(message, dict)
    extra = set(message) - {"role", "content"}
    if extra:
        raise _Invalid(f"{where}.{sorted(extra)[0]}: Extra inputs are not permitted")
    role = message.get("role")
    if role not in ("user", "assistant"):
        raise _Invalid(f"{where}.role: Input should be 'user' or 'assistant'")
    content = message.get("content")
    if isinstance(content, str):
        if not content:
            raise _Invalid(
                f"{where}: all messages must have non-empty content except for the optional final assistant message"
            )
        return [{"type": "text", "text": content}]
    _expect(content, list, f"{where}.content", "a valid list")
    assert isinstance(content, list)
    if not content:
        raise _Invalid(
            f"{where}: all messages must have non-empty content except for the optional final assistant message"
        )
    allowed = _USER_BLOCKS if role == "user" else _ASSISTANT_BLOCKS
    for i, block in enumerate(content):
        at = f"{where}.content.{i}"
        _expect(block, dict, at, "a valid dictionary")
        kind = block.get("type")
        if kind not in allowed:
            raise _Invalid(f"{at}: blocks of type {kind!r} are not allowed in {role} messages")
        if kind == "text":
            _check_text_block(block, at)
        elif kind == "image":
            _check_source(block, at, _IMAGE_TYPES)
        elif kind == "document":
            _check_source(block, at, ("application/pdf",))
        elif kind == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise _Invalid(f"{at}.tool_use: `id` and `name` are required")
            _expect(block.get("input"), dict, f"{at}.tool_use.input", "a valid dictionary")
        elif kind == "tool_result":
            if not isinstance(block.get("tool_use_id"), str):
                raise _Invalid(f"{at}.tool_result.tool_use_id: Field required")
            if "content" in block:
                _check_text_content(block["content"], f"{at}.tool_result.content")
        elif kind == "thinking" and not isinstance(block.get("signature"), str):
            raise _Invalid(f"{at}.thinking.signature: Field required")
    return content


def _check_conversation(messages: list[Any]) -> None:
    """Roles alternate starting with the user, and every ``tool_use`` is answered in the next turn."""
    previous_role = None
    open_calls: list[str] = []
    for index, message in enumerate(messages):
        blocks = _check_message(message, index)
        role = message["role"]
        if index == 0 and role != "user":
            raise _Invalid('messages: first message must use the "user" role')
        if role == previous_role:
            raise _Invalid(
                'messages: roles must alternate between "user" and "assistant", '
                f'but found multiple "{role}" roles in a row'
            )
        results = [b["tool_use_id"] for b in blocks if b.get("type") == "tool_result"]
        unexpected = [r for r in results if r not in open_calls]
        if unexpected:
            raise _Invalid(
                f"messages.{index}.content: unexpected `tool_use_id` found in `tool_result` blocks: {unexpected[0]}. "
                "Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
            )
        missing = [c for c in open_calls if c not in results]
        if missing:
            raise _Invalid(
                f"messages.{index}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                f"{missing[0]}. Each `tool_use` block must have a corresponding `tool_result` block in the next "
                "message."
            )
        if results and any(b.get("type") != "tool_result" for b in blocks[: len(results)]):
            raise _Invalid(f"messages.{index}.content: tool_result blocks must come first in the content")
        open_calls = [b["id"] for b in blocks if b.get("type") == "tool_use"]
        previous_role = role


def _check_tools(tools: object, tool_choice: object) -> list[dict[str, Any]]:
    if tools is None:
        tools = []
    _expect(tools, list, "tools", "a valid list")
    assert isinstance(tools, list)
    names = set()
    for i, tool in enumerate(tools):
        _expect(tool, dict, f"tools.{i}", "a valid dictionary")
        name = tool.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise _Invalid(f"tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
        if name in names:
            raise _Invalid("tools: Tool names must be unique.")
        names.add(name)
        if _is_server_tool(tool):
            continue  # a versioned tool Anthropic defines (web_search_20250305, …): it takes no input_schema
        schema = tool.get("input_schema")
        _expect(schema, dict, f"tools.{i}.custom.input_schema", "a valid dictionary")
        if schema.get("type") != "object":
            raise _Invalid(f"tools.{i}.custom.input_schema.type: Input should be 'object'")
        extra = set(tool) - _TOOL_FIELDS
        if extra:
            raise _Invalid(f"tools.{i}.custom.{sorted(extra)[0]}: Extra inputs are not permitted")
    if tool_choice is not None:
        _expect(tool_choice, dict, "tool_choice", "a valid dictionary")
        assert isinstance(tool_choice, dict)
        kind = tool_choice.get("type")
        if kind not in _TOOL_CHOICES:
            raise _Invalid(
                "tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', 'tool', 'none'"
            )
        if kind == "tool" and tool_choice.get("name") not in names:
            raise _Invalid(f"tool_choice.tool.name: tool {tool_choice.get('name')!r} is not one of the tools offered")
        if kind in ("any", "tool") and not names:
            raise _Invalid("tool_choice: a tool choice that forces a tool needs `tools`")
    return tools


def _is_server_tool(tool: dict[str, Any]) -> bool:
    """A tool of a versioned type Anthropic defines (``web_search_20250305``, ``bash_20250124``, …), not custom."""
    kind = tool.get("type")
    return isinstance(kind, str) and kind != "custom" and _VERSIONED_TOOL.match(kind) is not None


def _check_number(request: dict[str, Any], key: str, low: float, high: float) -> None:
    value = request.get(key)
    if value is None:
        return
    _expect(value, int | float, key, "a valid number")
    if not low <= value <= high:
        raise _Invalid(f"{key}: range: {low}..{high}")


THINKING_TEMPERATURE = (
    "`temperature` may only be set to 1 when thinking is enabled or in adaptive mode. Please consult our "
    "documentation at https://platform.claude.com/docs/en/build-with-claude/extended-thinking"
)


def _check_thinking_sampling(request: dict[str, Any]) -> None:
    """Extended thinking "isn't compatible with temperature or top_k modifications"; ``top_p`` may be 0.95-1
    (the extended thinking page). ``temperature: 1`` is the default, so it is taken."""
    temperature = request.get("temperature")
    if temperature is not None and temperature != 1:
        raise _Invalid(THINKING_TEMPERATURE)
    if request.get("top_k") is not None:
        raise _Invalid("`top_k` is not supported when thinking is enabled or in adaptive mode.")
    top_p = request.get("top_p")
    if top_p is not None and top_p < 0.95:
        raise _Invalid("`top_p` must be between 0.95 and 1 when thinking is enabled or in adaptive mode.")


def _check_output_config(config: object) -> None:
    """``output_config``: ``effort`` (low … max) and ``format`` (structured outputs), nothing else."""
    if config is None:
        return
    _expect(config, dict, "output_config", "a valid dictionary")
    assert isinstance(config, dict)
    extra = set(config) - {"effort", "format"}
    if extra:
        raise _Invalid(f"output_config.{sorted(extra)[0]}: Extra inputs are not permitted")
    effort = config.get("effort")
    if effort is not None and effort not in _EFFORTS:
        raise _Invalid(f"output_config.effort: Input should be {', '.join(map(repr, _EFFORTS))}")
    if config.get("format") is not None:
        _expect(config["format"], dict, "output_config.format", "a valid dictionary")


def _check_objects(request: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        if request.get(key) is not None:
            _expect(request[key], dict, key, "a valid dictionary")


def _check(request: object) -> dict[str, Any]:
    """The request, validated as Anthropic would; raises ``_Invalid``."""
    _expect(request, dict, "body", "a valid dictionary")
    assert isinstance(request, dict)
    extra = set(request) - TOP_LEVEL_FIELDS
    if extra:
        raise _Invalid(f"{sorted(extra)[0]}: Extra inputs are not permitted")
    for key in ("model", "max_tokens", "messages"):
        if key not in request:
            raise _Invalid(f"{key}: Field required")
    _expect(request["model"], str, "model", "a valid string")
    max_tokens = request["max_tokens"]
    _expect(max_tokens, int, "max_tokens", "a valid integer")
    if max_tokens < 1:
        raise _Invalid("max_tokens: Input should be greater than or equal to 1")
    if max_tokens > MAX_OUTPUT_TOKENS:
        raise _Invalid(
            f"max_tokens: {max_tokens} > {MAX_OUTPUT_TOKENS}, which is the maximum allowed number of output tokens "
            f"for {request['model']}"
        )
    messages = request["messages"]
    _expect(messages, list, "messages", "a valid list")
    if not messages:
        raise _Invalid("messages: at least one message is required")
    if "system" in request:
        _check_text_content(request["system"], "system")
    _check_conversation(messages)
    _check_number(request, "temperature", 0.0, 1.0)
    _check_number(request, "top_p", 0.0, 1.0)
    if request.get("top_k") is not None:
        _expect(request["top_k"], int, "top_k", "a valid integer")
    stop = request.get("stop_sequences")
    if stop is not None:
        _expect(stop, list, "stop_sequences", "a valid list")
        for i, item in enumerate(stop):
            _expect(item, str, f"stop_sequences.{i}", "a valid string")
    if request.get("stream") is not None:
        _expect(request["stream"], bool, "stream", "a valid boolean")
    metadata = request.get("metadata")
    if metadata is not None:
        _expect(metadata, dict, "metadata", "a valid dictionary")
        if set(metadata) - {"user_id"}:
            raise _Invalid(f"metadata.{sorted(set(metadata) - {'user_id'})[0]}: Extra inputs are not permitted")
    thinking = request.get("thinking")
    if thinking is not None:
        _expect(thinking, dict, "thinking", "a valid dictionary")
        if thinking.get("type") == "enabled":
            budget = thinking.get("budget_tokens")
            _expect(budget, int, "thinking.enabled.budget_tokens", "a valid integer")
            if budget < MIN_THINKING_BUDGET:
                raise _Invalid("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
            if budget >= max_tokens:
                raise _Invalid("`max_tokens` must be greater than `thinking.budget_tokens`")
        elif thinking.get("type") not in _THINKING_TYPES:
            raise _Invalid(
                "thinking: Input tag does not match any of the expected tags: 'adaptive', 'disabled', 'enabled'"
            )
    if thinking is not None and thinking.get("type") in ("enabled", "adaptive"):
        _check_thinking_sampling(request)
    _check_output_config(request.get("output_config"))
    _check_objects(request, ("context_management", "output_format"))
    if request.get("mcp_servers") is not None:
        _expect(request["mcp_servers"], list, "mcp_servers", "a valid list")
    if request.get("container") is not None:
        _expect(request["container"], (str, dict), "container", "a valid string")
    tier = request.get("service_tier")
    if tier is not None and tier not in _SERVICE_TIERS:
        raise _Invalid("service_tier: Input should be 'auto' or 'standard_only'")
    _check_tools(request.get("tools"), request.get("tool_choice"))
    return request


# -- answers --------------------------------------------------------------------------------------------


def _answer_text(limit: int, stop_sequences: list[str]) -> tuple[str, str, str | None]:
    """``(text, stop_reason, stop_sequence)``: the sentence word by word until a limit or stop sequence."""
    text = ""
    for count, word in enumerate(WORDS, start=1):
        text = f"{text} {word}" if text else word
        hits = [(text.find(s), s) for s in stop_sequences if s and s in text]
        if hits:
            position, sequence = min(hits)
            return text[:position], "stop_sequence", sequence
        if count >= limit and count < len(WORDS):
            return text, "max_tokens", None
    return text, "end_turn", None


def _tool_to_call(request: dict[str, Any]) -> dict[str, Any] | None:
    tools = [tool for tool in request.get("tools") or [] if not _is_server_tool(tool)]  # the fake runs no server tool
    choice = request.get("tool_choice") or {"type": "auto"}
    if not tools or choice.get("type") == "none" or request["messages"][-1]["role"] != "user":
        return None
    last = request["messages"][-1]["content"]
    answered = isinstance(last, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in last)
    if choice.get("type") == "tool":
        return next(t for t in tools if t["name"] == choice.get("name"))
    if answered and choice.get("type") == "auto":
        return None
    return tools[0]


def _content(request: dict[str, Any], message_id: str) -> tuple[list[dict[str, Any]], str, str | None, int]:
    """``(blocks, stop_reason, stop_sequence, output tokens)`` of the deterministic answer."""
    blocks: list[dict[str, Any]] = []
    output = 0
    limit = request["max_tokens"]
    thinking = request.get("thinking") or {}
    if thinking.get("type") in ("enabled", "adaptive"):
        blocks.append({"type": "thinking", "thinking": THINKING_TEXT, "signature": THINKING_SIGNATURE})
        output += len(THINKING_TEXT.split())
        limit = max(1, limit - output)
    tool = _tool_to_call(request)
    if tool is not None:
        tool_input = sample_value(tool["input_schema"])
        call_id = "toolu_" + message_id.removeprefix("msg_")
        blocks.append({"type": "tool_use", "id": call_id, "name": tool["name"], "input": tool_input})
        return blocks, "tool_use", None, output + 1 + len(tool_input)
    text, stop_reason, stop_sequence = _answer_text(limit, request.get("stop_sequences") or [])
    if text:
        blocks.append({"type": "text", "text": text})
    return blocks, stop_reason, stop_sequence, output + len(text.split())


def _usage(uncached: int, cached: int, output: int) -> dict[str, Any]:
    return {
        "input_tokens": uncached,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": output,
        "service_tier": "standard",
    }


def create_message(raw: bytes, headers: Mapping[str, str], *, message_id: str) -> MessagesReply:
    """Validate a ``POST /v1/messages`` (body bytes, lower-cased headers) and build the deterministic answer."""
    try:
        _check_headers(headers)
        try:
            decoded = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _Invalid("There was an error parsing the body of your request: it is not valid JSON") from None
        request = _check(decoded)
    except _Invalid as invalid:
        return invalid.reply
    uncached, cached = count_prompt_words(request.get("system"), request["messages"])
    blocks, stop_reason, stop_sequence, output = _content(request, message_id)
    message = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": request["model"],
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": _usage(uncached, cached, output),
    }
    if not request.get("stream"):
        return MessagesReply(200, message)
    return MessagesReply(200, events=_events(message))


# ``POST /v1/messages/count_tokens``' body in the API reference: the create fields that shape the prompt; the
# generation settings (``max_tokens``, ``stream``, sampling, ``stop_sequences``, ``metadata``) are not accepted.
COUNT_FIELDS = frozenset(
    {
        "model",
        "messages",
        "system",
        "tools",
        "tool_choice",
        "thinking",
        "mcp_servers",
        "context_management",
        "output_config",
        "output_format",
    }
)


def count_tokens(raw: bytes, headers: Mapping[str, str]) -> MessagesReply:
    """``POST /v1/messages/count_tokens``: ``{"input_tokens": N}``, N being what ``create_message`` would report
    as the whole input (cache reads included), after the same validation of the prompt."""
    try:
        _check_headers(headers)
        try:
            decoded = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _Invalid("There was an error parsing the body of your request: it is not valid JSON") from None
        _expect(decoded, dict, "body", "a valid dictionary")
        extra = set(decoded) - COUNT_FIELDS
        if extra:
            raise _Invalid(f"{sorted(extra)[0]}: Extra inputs are not permitted")
        request = _check({**decoded, "max_tokens": MAX_OUTPUT_TOKENS})
    except _Invalid as invalid:
        return invalid.reply
    uncached, cached = count_prompt_words(request.get("system"), request["messages"])
    return MessagesReply(200, {"input_tokens": uncached + cached})


def _pieces(text: str) -> list[str]:
    """Word-sized deltas ("The", " quick", …) whose concatenation is ``text``."""
    return re.findall(r"\s*\S+|\s+", text)


def _events(message: dict[str, Any]) -> list[dict[str, Any]]:
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {**message["usage"], "output_tokens": 1}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}, {"type": "ping"}]
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        deltas: list[dict[str, Any]]
        if kind == "text":
            opening = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": piece} for piece in _pieces(block["text"])]
        elif kind == "thinking":
            opening = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": piece} for piece in _pieces(block["thinking"])]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        else:
            opening = {**block, "input": {}}
            arguments = orjson.dumps(block["input"]).decode()
            middle = len(arguments) // 2
            deltas = [
                {"type": "input_json_delta", "partial_json": part}
                for part in ("", arguments[:middle], arguments[middle:])
            ]
        events.append({"type": "content_block_start", "index": index, "content_block": opening})
        events.extend({"type": "content_block_delta", "index": index, "delta": delta} for delta in deltas)
        events.append({"type": "content_block_stop", "index": index})
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]},
            "usage": {"output_tokens": message["usage"]["output_tokens"]},
        }
    )
    events.append({"type": "message_stop"})
    return events


def sse_frame(event: dict[str, Any]) -> bytes:
    """One SSE event as Anthropic frames it: ``event: <type>``, ``data: <json>``, a blank line."""
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
