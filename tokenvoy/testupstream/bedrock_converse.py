"""AWS Bedrock Converse / ConverseStream behaviour of the fake upstream.

``POST /model/{modelId}/converse`` answers JSON; ``POST /model/{modelId}/converse-stream`` answers an AWS
event stream (``application/vnd.amazon.eventstream``). The core is pure (body bytes in, a
:class:`ConverseReply` out); :func:`handle` and :func:`error_response` are the thin HTTP adapter the
server's route uses. No authentication is checked (SigV4 belongs to the credentials layer).

Validation is strict the way Bedrock's is, so a translator that sends something Bedrock would refuse
fails here too, with a 400 ``ValidationException`` (``x-amzn-errortype`` header, ``{"message": …}`` body):
unknown top-level or block fields, missing or empty ``messages``, a first message not from the user, roles
not alternating, a content block that is not exactly one known member (``text``, ``image``, ``document``,
``toolUse``, ``toolResult``, ``reasoningContent``, ``cachePoint``) or sits in the wrong role, blank text,
``toolUse``/``toolResult`` in the history without ``toolConfig``, tool results that answer no call of the
previous turn (or calls left unanswered), ``inferenceConfig`` of the wrong types or ranges, a bad
``toolConfig``/``toolChoice``, and ``additionalModelRequestFields`` the model in the path does not take:
for Claude (``anthropic.…``, and an id that does not say) anything but ``thinking`` (budget ≥ 1024 and below
``maxTokens``), ``top_k`` and ``anthropic_beta`` (only the flags AWS documents for Claude,
:data:`anthropic_betas.BEDROCK_BETAS`: any other is 400 ``invalid beta flag``, as InvokeModel says); for
Amazon Nova anything but ``inferenceConfig`` and ``reasoningConfig``; for any other family Claude's
``thinking`` and ``anthropic_beta`` (400 ``Malformed input request: #: extraneous key [thinking] is not
permitted``, what Bedrock answers a model whose request schema lacks the key).

Determinism contract (tests rely on it):

* the answer is the sentence of :data:`openai_chat.WORDS` (``stopReason: end_turn``), cut at
  ``maxTokens`` words (``max_tokens``) or just before a stop sequence (``stop_sequence``);
* with ``thinking`` enabled a ``reasoningContent`` block (:data:`THINKING_TEXT`, signed with
  :data:`THINKING_SIGNATURE`) comes first; its words count as output and against ``maxTokens``;
* offered tools and a last user turn, the answer is one ``toolUse`` of the first tool (or the one
  ``toolChoice`` names) with an input valid for its JSON schema (:func:`anthropic_messages.sample_value`);
  after ``toolResult`` blocks the answer is text again unless ``toolChoice`` is ``any`` or ``tool``;
* ``usage.inputTokens`` counts whitespace-separated words of ``system`` and of every message's text
  (``text`` blocks, ``toolResult`` text); words up to the last ``cachePoint`` are reported as
  ``cacheReadInputTokens`` instead (a warm cache). ``outputTokens`` counts answer words (thinking
  included), a tool call counts 1 + its top-level arguments; ``totalTokens`` is the sum of all four;
* streamed: ``messageStart``; per text block one ``contentBlockDelta`` per word (Bedrock sends no
  ``contentBlockStart`` for text), per reasoning block one delta per word then a ``signature`` delta, per
  tool block ``contentBlockStart`` then the input JSON in three ``toolUse`` deltas; ``contentBlockStop``
  after each block; ``messageStop``; ``metadata`` (usage, ``metrics.latencyMs``). Every event payload
  carries Bedrock's ``p`` padding field. The request header ``x-testupstream-stream-exception:
  throttlingException`` (any exception name) cuts the stream after its first delta with that
  ``exception`` message.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote

import orjson

from tokenvoy.extproc.eventstream import CONTENT_TYPE as EVENTSTREAM_CONTENT_TYPE
from tokenvoy.extproc.eventstream import encode_event, encode_exception
from tokenvoy.testupstream.anthropic_betas import BEDROCK_BETAS
from tokenvoy.testupstream.http import Request, Response
from tokenvoy.testupstream.openai_chat import WORDS
from tokenvoy.testupstream.schemas import sample_value

__all__ = [
    "EXCEPTION_STATUS",
    "STREAM_EXCEPTION_HEADER",
    "THINKING_SIGNATURE",
    "THINKING_TEXT",
    "ConverseReply",
    "converse",
    "error_response",
    "exception_for_status",
    "frames",
    "handle",
    "matches",
]

THINKING_TEXT = "Let me think about the answer."
THINKING_SIGNATURE = "ZmFrZS1iZWRyb2NrLXNpZ25hdHVyZQ=="
MIN_THINKING_BUDGET = 1024
STREAM_EXCEPTION_HEADER = "x-testupstream-stream-exception"
ERROR_TYPE_SUFFIX = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
EXCEPTION_STATUS = {
    "ValidationException": 400,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
    "ModelTimeoutException": 408,
    "ModelErrorException": 424,
    "ThrottlingException": 429,
    "InternalServerException": 500,
    "ServiceUnavailableException": 503,
}
_STATUS_EXCEPTION = {status: name for name, status in EXCEPTION_STATUS.items()}
TOP_LEVEL_FIELDS = frozenset(
    {
        "messages",
        "system",
        "inferenceConfig",
        "toolConfig",
        "guardrailConfig",
        "additionalModelRequestFields",
        "promptVariables",
        "additionalModelResponseFieldPaths",
        "requestMetadata",
        "performanceConfig",
        "serviceTier",
        "outputConfig",
    }
)
_PATH = re.compile(r"/model/([^/]+)/(converse|converse-stream)$")
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_TOOL_USE_ID = re.compile(r"^[a-zA-Z0-9_.:-]{1,64}$")
_DOCUMENT_NAME = re.compile(r"^(?!.* {2})[A-Za-z0-9 ()\[\]-]{1,200}$")
_IMAGE_FORMATS = frozenset({"png", "jpeg", "gif", "webp"})
_DOCUMENT_FORMATS = frozenset({"pdf", "csv", "doc", "docx", "xls", "xlsx", "html", "txt", "md"})
_USER_BLOCKS = frozenset({"text", "image", "document", "toolResult", "cachePoint"})
_ASSISTANT_BLOCKS = frozenset({"text", "toolUse", "reasoningContent", "cachePoint"})
_ADDITIONAL_FIELDS = frozenset({"thinking", "top_k", "anthropic_beta"})
# Claude's request fields (the Anthropic Messages body on Bedrock): another family's model does not take them.
_CLAUDE_ONLY_FIELDS = frozenset({"thinking", "anthropic_beta"})
# Amazon Nova's ``additionalModelRequestFields`` (Nova's user guide: ``inferenceConfig.topK``, and
# ``reasoningConfig`` for Nova 2's extended thinking); a Claude field such as ``top_k`` is 400 "extraneous key".
_NOVA_FIELDS = frozenset({"inferenceConfig", "reasoningConfig"})
_MODEL_ID = re.compile(r"^(?:(?:us|eu|apac|jp|au|ca|us-gov|global)\.)?([a-z0-9]+)\.")
_PADDING = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456"


@dataclass(frozen=True, slots=True)
class ConverseReply:
    """What to send back: ``body`` (a Converse answer, or ``{"message": …}`` with ``error_type`` for an
    error) or, for a stream, ``events`` as ``(event type, payload)`` pairs."""

    status: int
    body: dict[str, Any] | None = None
    events: list[tuple[str, dict[str, Any]]] | None = None
    error_type: str | None = None


def exception_for_status(status: int) -> str:
    """The Bedrock exception a status comes with (other 5xx: InternalServerException, other 4xx:
    ValidationException)."""
    return _STATUS_EXCEPTION.get(status) or ("InternalServerException" if status >= 500 else "ValidationException")


class _Invalid(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.reply = ConverseReply(400, {"message": message}, error_type="ValidationException")


def _malformed(where: str, why: str) -> _Invalid:
    return _Invalid(f"Malformed input request: #/{where}: {why}, please reformat your input and try again.")


# -- validation -----------------------------------------------------------------------------------------


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _malformed(where, f"expected type: JSONObject, found: {_json_type(value)}")
    return value


def _json_type(value: object) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int | float):
        return "Number"
    if isinstance(value, str):
        return "String"
    if isinstance(value, list):
        return "JSONArray"
    return "JSONObject"


def _only(value: dict[str, Any], allowed: Iterable[str], where: str) -> None:
    extra = sorted(set(value) - set(allowed))
    if extra:
        raise _malformed(where, f"extraneous key [{extra[0]}] is not permitted")


def _union(value: object, allowed: frozenset[str], where: str) -> str:
    """The one member set in a union (a content block, a tool, a tool choice)."""
    block = _object(value, where)
    keys = list(block)
    if len(keys) != 1:
        raise _Invalid(f"The {where} union must have exactly one member set; found {len(keys)}.")
    if keys[0] not in allowed:
        raise _malformed(where, f"extraneous key [{keys[0]}] is not permitted")
    return keys[0]


def _base64(value: object, where: str) -> None:
    if not isinstance(value, str) or not value or len(value) % 4:
        raise _Invalid(f"The {where} field is not valid base64-encoded bytes.")


def _check_text(text: object, where: str) -> None:
    if not isinstance(text, str):
        raise _malformed(where, f"expected type: String, found: {_json_type(text)}")
    if not text.strip():
        raise _Invalid(
            f"The text field in the ContentBlock object at {where} is blank. Add text to the text field, and try again."
        )


def _check_image(image: object, where: str) -> None:
    image = _object(image, where)
    _only(image, ("format", "source"), where)
    if image.get("format") not in _IMAGE_FORMATS:
        raise _malformed(f"{where}/format", f"{image.get('format')!r} is not a valid enum value")
    source = _union(image.get("source"), frozenset({"bytes", "s3Location"}), f"{where}/source")
    if source == "bytes":
        _base64(image["source"]["bytes"], f"{where}.source.bytes")


def _check_document(document: object, where: str) -> None:
    document = _object(document, where)
    _only(document, ("format", "name", "source", "context", "citations"), where)
    if document.get("format") not in _DOCUMENT_FORMATS:
        raise _malformed(f"{where}/format", f"{document.get('format')!r} is not a valid enum value")
    name = document.get("name")
    if not isinstance(name, str) or not _DOCUMENT_NAME.match(name):
        raise _Invalid(
            f"The document name at {where} can only contain alphanumeric characters, whitespace characters, "
            "hyphens, parentheses, and square brackets."
        )
    source = _union(document.get("source"), frozenset({"bytes", "s3Location", "text"}), f"{where}/source")
    if source == "bytes":
        _base64(document["source"]["bytes"], f"{where}.source.bytes")


def _check_block(block: object, role: str, where: str) -> tuple[str, dict[str, Any] | str]:
    allowed = _USER_BLOCKS if role == "user" else _ASSISTANT_BLOCKS
    kind = _union(block, _USER_BLOCKS | _ASSISTANT_BLOCKS, where)
    if kind not in allowed:
        raise _Invalid(f"The {kind} content block at {where} is not allowed in a {role} message.")
    value = block[kind]  # type: ignore[index]
    if kind == "text":
        _check_text(value, where)
    elif kind == "image":
        _check_image(value, f"{where}/image")
    elif kind == "document":
        _check_document(value, f"{where}/document")
    elif kind == "cachePoint":
        point = _object(value, f"{where}/cachePoint")
        if point.get("type") != "default" or point.get("ttl", "5m") not in ("5m", "1h"):
            raise _malformed(f"{where}/cachePoint", "type must be 'default' (ttl 5m or 1h)")
    elif kind == "toolUse":
        use = _object(value, f"{where}/toolUse")
        _only(use, ("toolUseId", "name", "input", "type"), f"{where}/toolUse")
        if not isinstance(use.get("toolUseId"), str) or not _TOOL_USE_ID.match(use["toolUseId"]):
            raise _malformed(f"{where}/toolUse/toolUseId", "string does not match pattern ^[a-zA-Z0-9_.:-]+$")
        if not isinstance(use.get("name"), str) or not _TOOL_NAME.match(use["name"]):
            raise _malformed(f"{where}/toolUse/name", "string does not match pattern ^[a-zA-Z0-9_-]+$")
        if "input" not in use:
            raise _malformed(f"{where}/toolUse", "required key [input] not found")
    elif kind == "toolResult":
        result = _object(value, f"{where}/toolResult")
        _only(result, ("toolUseId", "content", "status", "type"), f"{where}/toolResult")
        if not isinstance(result.get("toolUseId"), str):
            raise _malformed(f"{where}/toolResult", "required key [toolUseId] not found")
        if not isinstance(result.get("content"), list):
            raise _malformed(f"{where}/toolResult", "required key [content] not found")
        if result.get("status", "success") not in ("success", "error"):
            raise _malformed(f"{where}/toolResult/status", f"{result['status']!r} is not a valid enum value")
        for i, part in enumerate(result["content"]):
            at = f"{where}/toolResult/content/{i}"
            member = _union(part, frozenset({"text", "json", "image", "document"}), at)
            if member == "text":
                _check_text(part["text"], at)
            elif member == "image":
                _check_image(part["image"], f"{at}/image")
            elif member == "document":
                _check_document(part["document"], f"{at}/document")
    elif kind == "reasoningContent":
        member = _union(value, frozenset({"reasoningText", "redactedContent"}), f"{where}/reasoningContent")
        if member == "reasoningText":
            text = _object(value[member], f"{where}/reasoningContent/reasoningText")
            _only(text, ("text", "signature"), f"{where}/reasoningContent/reasoningText")
            if not isinstance(text.get("text"), str):
                raise _malformed(f"{where}/reasoningContent/reasoningText", "required key [text] not found")
        else:
            _base64(value[member], f"{where}.reasoningContent.redactedContent")
    return kind, value


def _check_messages(messages: object, has_tool_config: bool) -> list[dict[str, Any]]:
    if messages is None:
        raise _malformed("", "required key [messages] not found")
    if not isinstance(messages, list):
        raise _malformed("messages", f"expected type: JSONArray, found: {_json_type(messages)}")
    if not messages:
        raise _Invalid(
            "A conversation must start with a user message. Try again with a conversation that starts with a "
            "user message."
        )
    previous: str | None = None
    open_calls: list[str] = []
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        message = _object(message, f"messages/{index}")
        _only(message, ("role", "content"), f"messages/{index}")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise _malformed(f"messages/{index}/role", f"{role!r} is not a valid enum value")
        if index == 0 and role != "user":
            raise _Invalid(
                "A conversation must start with a user message. Try again with a conversation that starts with "
                "a user message."
            )
        if role == previous:
            raise _Invalid(
                "A conversation must alternate between user and assistant roles. Make sure the conversation "
                "alternates between user and assistant roles and try again."
            )
        content = message.get("content")
        if not isinstance(content, list) or not content:
            raise _Invalid(
                f"The content field in the Message object at {where} is empty. Add a ContentBlock object to the "
                "content field and try again."
            )
        blocks = [_check_block(block, role, f"{where}.content.{i}") for i, block in enumerate(content)]
        kinds = [kind for kind, _ in blocks]
        if ("toolUse" in kinds or "toolResult" in kinds) and not has_tool_config:
            raise _Invalid("The toolConfig field must be defined when using toolUse and toolResult content blocks.")
        results = [value["toolUseId"] for kind, value in blocks if kind == "toolResult"]  # type: ignore[index]
        unexpected = [r for r in results if r not in open_calls]
        if unexpected:
            raise _Invalid(
                f"The toolResult block at {where} answers toolUse id {unexpected[0]}, which is not among the "
                "toolUse blocks of the previous turn."
            )
        missing = [c for c in open_calls if c not in results]
        if missing:
            raise _Invalid(f"Expected toolResult blocks at {where}.content for the following Ids: {', '.join(missing)}")
        open_calls = [value["toolUseId"] for kind, value in blocks if kind == "toolUse"]  # type: ignore[index]
        previous = role
    return messages


def _check_inference(config: object) -> dict[str, Any]:
    if config is None:
        return {}
    config = _object(config, "inferenceConfig")
    _only(config, ("maxTokens", "temperature", "topP", "stopSequences"), "inferenceConfig")
    max_tokens = config.get("maxTokens")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise _malformed("inferenceConfig/maxTokens", f"expected type: Integer >= 1, found: {_json_type(max_tokens)}")
    for key in ("temperature", "topP"):
        value = config.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _malformed(f"inferenceConfig/{key}", f"expected type: Number, found: {_json_type(value)}")
        if not 0 <= value <= 1:
            raise _Invalid(
                f"1 validation error detected: Value '{value}' at 'inferenceConfig.{key}' failed to satisfy "
                "constraint: Member must have value between 0 and 1"
            )
    stop = config.get("stopSequences")
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop)):
        raise _malformed("inferenceConfig/stopSequences", "expected an array of non-empty strings")
    return config


def _check_system(system: object) -> list[dict[str, Any]]:
    if system is None:
        return []
    if not isinstance(system, list):
        raise _malformed("system", f"expected type: JSONArray, found: {_json_type(system)}")
    for i, block in enumerate(system):
        kind = _union(block, frozenset({"text", "cachePoint", "guardContent"}), f"system/{i}")
        if kind == "text":
            _check_text(block["text"], f"system.{i}")
    return system


def _check_tools(config: object) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``(tool specs, tool choice)``; no toolConfig → no tools."""
    if config is None:
        return [], {"auto": {}}
    config = _object(config, "toolConfig")
    _only(config, ("tools", "toolChoice"), "toolConfig")
    tools = config.get("tools")
    if not isinstance(tools, list) or not tools:
        raise _Invalid("The toolConfig.tools field must contain at least one tool.")
    specs: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        kind = _union(tool, frozenset({"toolSpec", "cachePoint", "systemTool"}), f"toolConfig/tools/{i}")
        if kind != "toolSpec":
            continue
        spec = _object(tool["toolSpec"], f"toolConfig/tools/{i}/toolSpec")
        _only(spec, ("name", "description", "inputSchema", "strict"), f"toolConfig/tools/{i}/toolSpec")
        name = spec.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise _malformed(f"toolConfig/tools/{i}/toolSpec/name", "string does not match pattern ^[a-zA-Z0-9_-]+$")
        if any(s["name"] == name for s in specs):
            raise _Invalid(f"The tool name {name} is not unique; tool names must be unique.")
        schema = _object(spec.get("inputSchema"), f"toolConfig/tools/{i}/toolSpec/inputSchema")
        if list(schema) != ["json"] or not isinstance(schema["json"], dict):
            raise _malformed(f"toolConfig/tools/{i}/toolSpec/inputSchema", "expected exactly one member [json]")
        if schema["json"].get("type") != "object":
            raise _Invalid(f"The JSON schema of tool {name} must have type object.")
        specs.append(spec)
    choice = config.get("toolChoice", {"auto": {}})
    kind = _union(choice, frozenset({"auto", "any", "tool"}), "toolConfig/toolChoice")
    if kind == "tool":
        named = _object(choice["tool"], "toolConfig/toolChoice/tool").get("name")
        if not any(s["name"] == named for s in specs):
            raise _Invalid(f"The tool {named!r} in toolChoice is not defined in toolConfig.tools.")
    return specs, choice


def model_family(model_id: str) -> str | None:
    """The provider part of a model or inference profile id (``us.anthropic.claude-…`` → ``anthropic``,
    ``amazon.nova-lite-v1:0`` → ``amazon``), also inside a foundation-model ARN; None when the id does not say
    (an application inference profile's ARN, a provisioned model's)."""
    if model_id.startswith("arn:"):
        parts = model_id.split(":", 5)  # arn:partition:bedrock:region:account:kind/id
        kind, _, model_id = parts[-1].partition("/")
        if len(parts) < 6 or kind not in ("foundation-model", "inference-profile"):
            return None
    match = _MODEL_ID.match(model_id)
    return match.group(1) if match else None


def _extraneous(key: str) -> _Invalid:
    return _Invalid(
        f"Malformed input request: #: extraneous key [{key}] is not permitted, please reformat your input "
        "and try again."
    )


def _check_model_fields(fields: dict[str, Any], model_id: str) -> bool:
    """Refuse what ``model_id``'s family does not take in ``additionalModelRequestFields``; True when the fields
    are Claude's (checked further), False when they belong to another family (passed to it unread)."""
    family = model_family(model_id)
    if family in (None, "anthropic"):
        return True
    if family == "amazon" and "nova" in model_id:
        allowed: Iterable[str] = _NOVA_FIELDS
    else:
        allowed = set(fields) - _CLAUDE_ONLY_FIELDS
    extra = sorted(set(fields) - set(allowed))
    if extra:
        raise _extraneous(extra[0])
    return False


def _check_additional(fields: object, max_tokens: int | None, model_id: str = "") -> dict[str, Any]:
    if fields is None:
        return {}
    fields = _object(fields, "additionalModelRequestFields")
    if not _check_model_fields(fields, model_id):
        return fields
    _only(fields, _ADDITIONAL_FIELDS, "")
    thinking = fields.get("thinking")
    if thinking is not None:
        thinking = _object(thinking, "thinking")
        if thinking.get("type") == "enabled":
            budget = thinking.get("budget_tokens")
            if isinstance(budget, bool) or not isinstance(budget, int) or budget < MIN_THINKING_BUDGET:
                raise _malformed("thinking/budget_tokens", f"must be an integer >= {MIN_THINKING_BUDGET}")
            if max_tokens is None or budget >= max_tokens:
                raise _Invalid("`max_tokens` must be greater than `thinking.budget_tokens`")
        elif thinking.get("type") not in ("disabled", "adaptive"):
            raise _malformed("thinking/type", "expected one of enabled, disabled, adaptive")
    top_k = fields.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)):
        raise _malformed("top_k", f"expected type: Integer, found: {_json_type(top_k)}")
    betas = fields.get("anthropic_beta")
    if betas is not None and (not isinstance(betas, list) or not all(isinstance(b, str) for b in betas)):
        raise _malformed("anthropic_beta", "expected an array of strings")
    unknown = [beta for beta in betas or () if beta not in BEDROCK_BETAS]
    if unknown:
        raise _Invalid(f"invalid beta flag: {unknown[0]}")
    return fields


def _check_output(config: object) -> None:
    if config is None:
        return
    config = _object(config, "outputConfig")
    _only(config, ("textFormat", "effort"), "outputConfig")
    text_format = config.get("textFormat")
    if text_format is not None:
        text_format = _object(text_format, "outputConfig/textFormat")
        structure = _object(text_format.get("structure"), "outputConfig/textFormat/structure")
        definition = _object(structure.get("jsonSchema"), "outputConfig/textFormat/structure/jsonSchema")
        if text_format.get("type") != "json_schema" or not isinstance(definition.get("schema"), str):
            raise _malformed("outputConfig/textFormat", "expected type json_schema with a schema string")
        try:
            orjson.loads(definition["schema"])
        except orjson.JSONDecodeError:
            raise _Invalid("The JSON schema in outputConfig.textFormat is not valid JSON.") from None


# -- answers --------------------------------------------------------------------------------------------


def _pieces(blocks: Iterable[dict[str, Any]]) -> list[tuple[str, bool]]:
    """``(text, is cache point)`` of every countable piece, in prompt order."""
    out: list[tuple[str, bool]] = []
    for block in blocks:
        if "cachePoint" in block:
            out.append(("", True))
        elif isinstance(block.get("text"), str):
            out.append((block["text"], False))
        elif isinstance(block.get("toolResult"), dict):
            for part in block["toolResult"].get("content") or ():
                if isinstance(part.get("text"), str):
                    out.append((part["text"], False))
                elif "json" in part:
                    out.append((orjson.dumps(part["json"]).decode(), False))
    return out


def count_prompt_words(system: list[dict[str, Any]], messages: list[dict[str, Any]]) -> tuple[int, int]:
    """``(uncached, cached)`` prompt words; cached: those before the last cache point."""
    pieces = _pieces(system)
    for message in messages:
        pieces.extend(_pieces(message["content"]))
    counts = [len(text.split()) for text, _ in pieces]
    last_point = max((i for i, (_, point) in enumerate(pieces) if point), default=-1)
    cached = sum(counts[: last_point + 1])
    return sum(counts) - cached, cached


def _answer_text(limit: int | None, stop_sequences: list[str]) -> tuple[str, str]:
    """``(text, stopReason)``: the sentence word by word until the limit or a stop sequence."""
    text = ""
    for count, word in enumerate(WORDS, start=1):
        text = f"{text} {word}" if text else word
        hits = [text.find(s) for s in stop_sequences if s in text]
        if hits:
            return text[: min(hits)], "stop_sequence"
        if limit is not None and count >= limit and count < len(WORDS):
            return text, "max_tokens"
    return text, "end_turn"


def _tool_to_call(specs: list[dict[str, Any]], choice: dict[str, Any], messages: list[dict[str, Any]]) -> Any:
    last = messages[-1]
    if not specs or last["role"] != "user":
        return None
    if "tool" in choice:
        return next(s for s in specs if s["name"] == choice["tool"]["name"])
    answered = any("toolResult" in block for block in last["content"])
    if answered and "auto" in choice:
        return None
    return specs[0]


def _content(
    request: dict[str, Any], specs: list[dict[str, Any]], choice: dict[str, Any], call_id: str
) -> tuple[list[dict[str, Any]], str, int]:
    """``(blocks, stopReason, output tokens)`` of the deterministic answer."""
    blocks: list[dict[str, Any]] = []
    output = 0
    config = request.get("inferenceConfig") or {}
    limit = config.get("maxTokens")
    thinking = (request.get("additionalModelRequestFields") or {}).get("thinking") or {}
    if thinking.get("type") == "enabled":
        reasoning = {"reasoningText": {"text": THINKING_TEXT, "signature": THINKING_SIGNATURE}}
        blocks.append({"reasoningContent": reasoning})
        output += len(THINKING_TEXT.split())
        limit = max(1, limit - output) if limit is not None else None
    tool = _tool_to_call(specs, choice, request["messages"])
    if tool is not None:
        tool_input = sample_value(tool["inputSchema"]["json"])
        blocks.append({"toolUse": {"toolUseId": call_id, "name": tool["name"], "input": tool_input}})
        return blocks, "tool_use", output + 1 + len(tool_input)
    text, stop_reason = _answer_text(limit, config.get("stopSequences") or [])
    if text:
        blocks.append({"text": text})
    return blocks, stop_reason, output + len(text.split())


def converse(raw: bytes, *, stream: bool, request_number: str = "1", model_id: str = "") -> ConverseReply:
    """Validate a Converse request body and build the deterministic answer (JSON or stream events)."""
    try:
        try:
            request = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _Invalid("Malformed input request, please reformat your input and try again.") from None
        request = _object(request, "")
        _only(request, TOP_LEVEL_FIELDS, "")
        specs, choice = _check_tools(request.get("toolConfig"))
        messages = _check_messages(request.get("messages"), "toolConfig" in request)
        system = _check_system(request.get("system"))
        config = _check_inference(request.get("inferenceConfig"))
        _check_additional(request.get("additionalModelRequestFields"), config.get("maxTokens"), model_id)
        _check_output(request.get("outputConfig"))
    except _Invalid as invalid:
        return invalid.reply
    uncached, cached = count_prompt_words(system, messages)
    blocks, stop_reason, output = _content(request, specs, choice, f"tooluse_fake{request_number}")
    usage = {
        "inputTokens": uncached,
        "outputTokens": output,
        "totalTokens": uncached + cached + output,
        "cacheReadInputTokens": cached,
        "cacheWriteInputTokens": 0,
    }
    if not stream:
        answer = {
            "output": {"message": {"role": "assistant", "content": blocks}},
            "stopReason": stop_reason,
            "usage": usage,
            "metrics": {"latencyMs": 42},
        }
        return ConverseReply(200, answer)
    return ConverseReply(200, events=_events(blocks, stop_reason, usage))


def _words(text: str) -> list[str]:
    """Word-sized deltas ("The", " quick", …) whose concatenation is ``text``."""
    return re.findall(r"\s*\S+|\s+", text)


def _events(blocks: list[dict[str, Any]], stop_reason: str, usage: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = [("messageStart", {"role": "assistant"})]
    for index, block in enumerate(blocks):
        deltas: list[dict[str, Any]]
        if "text" in block:
            deltas = [{"text": piece} for piece in _words(block["text"])]
        elif "reasoningContent" in block:
            text = block["reasoningContent"]["reasoningText"]
            deltas = [{"reasoningContent": {"text": piece}} for piece in _words(text["text"])]
            deltas.append({"reasoningContent": {"signature": text["signature"]}})
        else:
            use = block["toolUse"]
            start = {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}
            events.append(("contentBlockStart", {"start": start, "contentBlockIndex": index}))
            arguments = orjson.dumps(use["input"]).decode()
            middle = len(arguments) // 2
            deltas = [{"toolUse": {"input": part}} for part in ("", arguments[:middle], arguments[middle:])]
        events.extend(("contentBlockDelta", {"delta": delta, "contentBlockIndex": index}) for delta in deltas)
        events.append(("contentBlockStop", {"contentBlockIndex": index}))
    events.append(("messageStop", {"stopReason": stop_reason}))
    events.append(("metadata", {"usage": usage, "metrics": {"latencyMs": 42}}))
    return events


def frames(events: list[tuple[str, dict[str, Any]]], exception: str | None = None) -> list[bytes]:
    """The events as event stream messages, each payload padded with ``p`` as Bedrock does; with
    ``exception`` (e.g. ``throttlingException``) the stream is cut after its first content delta."""
    out: list[bytes] = []
    for number, (kind, payload) in enumerate(events):
        padded = {**payload, "p": _PADDING[: 5 + number % 40]}
        out.append(encode_event(kind, orjson.dumps(padded)))
        if exception and kind == "contentBlockDelta":
            message = {"message": f"testupstream: forced {exception} mid-stream"}
            out.append(encode_exception(exception, orjson.dumps(message)))
            break
    return out


# -- HTTP adapter ---------------------------------------------------------------------------------------


class _Ids(Protocol):
    def next_id(self, prefix: str) -> str: ...

    def record_usage(self, request: Request, status: int, body: Any, events: list[Any] | None) -> None: ...


def matches(path: str) -> bool:
    return _PATH.search(path) is not None


def _request_id(ids: _Ids) -> str:
    number = int(ids.next_id(""))
    return f"{number:08x}-0000-4000-8000-{number:012x}"


def error_response(status: int, message: str, error_type: str | None = None, request_id: str = "") -> Response:
    """A Bedrock error: the type in ``x-amzn-errortype``, ``{"message": …}`` as the body."""
    name = error_type or exception_for_status(status)
    headers = [("x-amzn-errortype", name + ERROR_TYPE_SUFFIX)]
    if request_id:
        headers.append(("x-amzn-requestid", request_id))
    return Response(status, orjson.dumps({"message": message}), "application/json", headers)


async def _paced(parts: list[bytes], delay: float) -> AsyncIterator[bytes]:
    for i, part in enumerate(parts):
        if i:
            await asyncio.sleep(delay)
        yield part


def handle(request: Request, ids: _Ids, chunk_delay: float) -> Response:
    """``POST …/model/{id}/converse[-stream]`` → JSON answer, event stream, or Bedrock-shaped error."""
    match = _PATH.search(request.path)
    assert match is not None  # the route only takes matching paths
    model_id = unquote(match.group(1))
    if not model_id:
        return error_response(400, "The model identifier in the path is empty.")
    stream = match.group(2) == "converse-stream"
    request_id = _request_id(ids)
    reply = converse(request.body, stream=stream, request_number=request_id[:8], model_id=model_id)
    ids.record_usage(request, reply.status if reply.error_type is None else 400, reply.body, reply.events)
    if reply.error_type is not None or reply.status != 200:
        return error_response(reply.status, (reply.body or {}).get("message", ""), reply.error_type, request_id)
    headers = [("x-amzn-requestid", request_id)]
    if reply.events is None:
        return Response(200, orjson.dumps(reply.body), "application/json", headers)
    parts = frames(reply.events, request.headers.get(STREAM_EXCEPTION_HEADER))
    stream_parts = parts if chunk_delay <= 0 else _paced(parts, chunk_delay)
    return Response(200, content_type=EVENTSTREAM_CONTENT_TYPE, headers=headers, stream=stream_parts)
