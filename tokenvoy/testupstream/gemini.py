"""Gemini ``generateContent`` / ``streamGenerateContent`` on Vertex AI, as the fake upstream answers it.

Pure functions, no I/O: the request bytes and the model (from the path) go in; a status plus either a JSON
body or the list of ``GenerateContentResponse`` chunks comes out, shaped like Vertex AI's (``candidates``
with ``content.parts``, ``finishReason``, ``usageMetadata``, ``modelVersion``, ``createTime``,
``responseId``; proto3 JSON, so zero values such as candidate ``index`` 0 are left out). Validation is
strict the way Vertex's is, with a 400 ``INVALID_ARGUMENT`` in Google's error shape naming the problem:
unknown fields anywhere (e.g. ``additionalProperties`` in a function's parameters), no ``contents``, a role
other than ``user``/``model``, a turn without parts, a part without exactly one kind of data, function
responses that do not answer the calls of the model turn just before them (by name and count), a function
declaration whose parameters are not an ``OBJECT`` with properties, and ``generationConfig`` values of the
wrong type or range.

Determinism contract (tests and benchmarks rely on it):

* the answer is the 28-word sentence of :data:`openai_chat.WORDS` (``finishReason: STOP``), cut after
  ``maxOutputTokens`` words (``MAX_TOKENS``) or just before a stop sequence (``STOP``);
* with ``thinkingConfig.includeThoughts`` (and a budget other than 0) a thought part
  (:data:`THINKING_TEXT`, ``thought: true``) comes first; its words are ``thoughtsTokenCount`` and count
  against ``maxOutputTokens``, as Gemini's thoughts do;
* when function declarations are offered, the mode is not ``NONE`` and the last turn is the user's, the
  answer is one ``functionCall`` of the first function (or the first of ``allowedFunctionNames``) with
  ``args`` valid for its schema (every required property, see ``anthropic_messages.sample_value``) and
  :data:`THOUGHT_SIGNATURE` on the part, as Gemini 3 signs calls. After function responses the answer is
  text again unless the mode is ``ANY``, so agent loops end;
* ``promptTokenCount`` counts whitespace-separated words of ``systemInstruction`` and of every text part,
  plus the words of the string values inside ``functionResponse.response``; ``candidatesTokenCount`` counts
  answer words (a call counts 1 + its top-level arguments) times ``candidateCount``;
  ``totalTokenCount`` = prompt + candidates + thoughts;
* streamed: a chunk with the thought (if any), then one chunk per word (``"The"``, ``" quick"``, …) or one
  chunk with the call(s); every chunk carries ``usageMetadata`` so far, the last one ``finishReason`` and
  the final counts. Framed by :func:`sse_frame` (``data: …`` and CRLF line endings, as Google sends).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from tokenvoy.testupstream.embeddings import google_error
from tokenvoy.testupstream.openai_chat import WORDS
from tokenvoy.testupstream.schemas import sample_value

__all__ = [
    "MAX_OUTPUT_TOKENS",
    "THINKING_TEXT",
    "THOUGHT_SIGNATURE",
    "GeminiReply",
    "count_prompt_words",
    "count_tokens",
    "create_time",
    "error_body",
    "generate_content",
    "sse_frame",
]

MAX_OUTPUT_TOKENS = 65_536
THINKING_TEXT = "Let me think about the answer."
THOUGHT_SIGNATURE = "Q2lnbmVkIGZha2UgdGhvdWdodA=="
MAX_CANDIDATES = 8
MAX_STOP_SEQUENCES = 5
_TOP_LEVEL = frozenset(
    {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "safetySettings", "labels"}
)
_COUNT_TOP_LEVEL = frozenset({"contents", "systemInstruction", "tools", "generationConfig"})
_PART_DATA = ("text", "inlineData", "fileData", "functionCall", "functionResponse")
_PART_FIELDS = frozenset({*_PART_DATA, "thought", "thoughtSignature"})
_SCHEMA_FIELDS = frozenset(
    {
        "type",
        "format",
        "title",
        "description",
        "nullable",
        "default",
        "items",
        "minItems",
        "maxItems",
        "enum",
        "properties",
        "propertyOrdering",
        "required",
        "minProperties",
        "maxProperties",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "pattern",
        "example",
        "anyOf",
    }
)
_SCHEMA_INTS = ("minItems", "maxItems", "minProperties", "maxProperties", "minLength", "maxLength")
_TYPES = frozenset({"TYPE_UNSPECIFIED", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT"})
_MODES = frozenset({"MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"})
_MIME_TYPES = frozenset({"text/plain", "application/json", "text/x.enum"})
_FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$")
_NUMBER = (int, float)


@dataclass(frozen=True, slots=True)
class GeminiReply:
    """What to send back: ``body`` for JSON replies (success or error), ``chunks`` for a stream."""

    status: int
    body: dict[str, Any] | None = None
    chunks: list[dict[str, Any]] | None = None


def error_body(status: int, message: str) -> dict[str, Any]:
    """Google's error envelope: ``{"error": {"code", "message", "status"}}``."""
    return google_error(status, message)


class _Invalid(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.reply = GeminiReply(400, error_body(400, message))


def _unknown(name: str, at: str | None) -> _Invalid:
    where = f" at '{at}'" if at else ""  # top-level names have no location
    return _Invalid(f'Invalid JSON payload received. Unknown name "{name}"{where}: Cannot find field.')


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _bad_value(at: str, kind: str, value: object) -> _Invalid:
    return _Invalid(f"Invalid value at '{at}' ({kind}), {orjson.dumps(value).decode()}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool)


# -- validation -----------------------------------------------------------------------------------------
# Proto JSON takes a field by its lowerCamelCase JSON name or by its proto (snake_case) name, as Google's
# own SDK sometimes sends; every checker returns its object with camelCase names so answers read one form.


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _check_fields(obj: object, allowed: frozenset[str], at: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _Invalid(f"Invalid JSON payload received. '{at}' must be an object.")
    out = {}
    for name, value in obj.items():
        key = _camel(name)
        if key not in allowed:
            raise _unknown(name, at)
        out[key] = value
    return out


def _check_part(part: object, at: str) -> dict[str, Any]:
    part = _check_fields(part, _PART_FIELDS, at)
    present = [key for key in _PART_DATA if key in part]
    if len(present) != 1:
        raise _Invalid(f"{at}: a part must have exactly one of {', '.join(_PART_DATA)}, found {present or 'none'}.")
    kind = present[0]
    if kind == "text" and not isinstance(part["text"], str):
        raise _bad_value(f"{at}.text", "TYPE_STRING", part["text"])
    if kind == "inlineData":
        data = part["inlineData"] = _check_fields(
            part["inlineData"], frozenset({"mimeType", "data", "displayName"}), f"{at}.inline_data"
        )
        if not isinstance(data.get("mimeType"), str) or not data["mimeType"]:
            raise _Invalid(f"{at}.inline_data.mime_type: required field is not set.")
        try:
            base64.b64decode(data.get("data") or "", validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise _bad_value(f"{at}.inline_data.data", "TYPE_BYTES", data.get("data")) from None
    if kind == "fileData":
        data = part["fileData"] = _check_fields(
            part["fileData"], frozenset({"mimeType", "fileUri", "displayName"}), f"{at}.file_data"
        )
        for key in ("mimeType", "fileUri"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise _Invalid(f"{at}.file_data.{_snake(key)}: required field is not set.")
    if kind == "functionCall":
        call = part["functionCall"] = _check_fields(
            part["functionCall"], frozenset({"name", "args", "id"}), f"{at}.function_call"
        )
        if not isinstance(call.get("name"), str) or not call["name"]:
            raise _Invalid(f"{at}.function_call.name: required field is not set.")
        if "args" in call and not isinstance(call["args"], dict):
            raise _bad_value(f"{at}.function_call.args", "type.googleapis.com/google.protobuf.Struct", call["args"])
    if kind == "functionResponse":
        response = part["functionResponse"] = _check_fields(
            part["functionResponse"], frozenset({"name", "response", "id", "parts"}), f"{at}.function_response"
        )
        if not isinstance(response.get("name"), str) or not response["name"]:
            raise _Invalid(f"{at}.function_response.name: required field is not set.")
        if not isinstance(response.get("response"), dict):
            raise _bad_value(
                f"{at}.function_response.response",
                "type.googleapis.com/google.protobuf.Struct",
                response.get("response"),
            )
    if "thought" in part and not isinstance(part["thought"], bool):
        raise _bad_value(f"{at}.thought", "TYPE_BOOL", part["thought"])
    if "thoughtSignature" in part:
        try:
            base64.b64decode(part["thoughtSignature"], validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise _bad_value(f"{at}.thought_signature", "TYPE_BYTES", part["thoughtSignature"]) from None
    return part


def _check_contents(contents: object) -> list[dict[str, Any]]:
    if contents is None or contents == []:
        raise _Invalid("Unable to submit request because it must include at least one contents field.")
    if not isinstance(contents, list):
        raise _bad_value("contents", "type.googleapis.com/google.cloud.aiplatform.v1.Content", contents)
    out = []
    previous_calls: list[str] = []  # function names called by the model turn just before
    previous_role = None
    for i, content in enumerate(contents):
        at = f"contents[{i}]"
        content = _check_fields(content, frozenset({"role", "parts"}), at)
        role = content.get("role") or "user"
        if role not in ("user", "model"):
            raise _Invalid("Please use a valid role: user, model.")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            raise _Invalid(
                "Unable to submit request because it must include at least one parts field, which describes the "
                "prompt input."
            )
        checked = [_check_part(part, f"{at}.parts[{j}]") for j, part in enumerate(parts)]
        calls = [p["functionCall"]["name"] for p in checked if "functionCall" in p]
        responses = [p["functionResponse"]["name"] for p in checked if "functionResponse" in p]
        if calls and role != "model":
            raise _Invalid(f"{at}: function calls can only come from the model.")
        if calls and previous_role == "model":
            raise _Invalid(
                "Please ensure that function call turn comes immediately after a user turn or after a function "
                "response turn."
            )
        if responses:
            if role != "user" or not previous_calls:
                raise _Invalid(
                    "Please ensure that function response turn comes immediately after a function call turn."
                )
            if len(responses) != len(previous_calls):
                raise _Invalid(
                    "Please ensure that the number of function response parts is equal to the number of function "
                    "call parts of the function call turn."
                )
            for name in responses:
                if name not in previous_calls:
                    raise _Invalid(
                        f"{at}: function response {name!r} answers no function call of the previous model turn "
                        f"({', '.join(previous_calls)})."
                    )
        out.append({"role": role, "parts": checked})
        previous_calls = calls
        previous_role = role
    return out


def _check_schema(schema: object, at: str) -> dict[str, Any]:
    schema = _check_fields(schema, _SCHEMA_FIELDS, at)
    kind = schema.get("type")
    if kind is not None and (not isinstance(kind, str) or kind.upper() not in _TYPES):
        raise _bad_value(f"{at}.type", "type.googleapis.com/google.cloud.aiplatform.v1.Type", kind)
    for key in _SCHEMA_INTS:
        if key in schema and not _is_int(schema[key]):
            raise _bad_value(f"{at}.{_snake(key)}", "TYPE_INT64", schema[key])
    for key in ("minimum", "maximum"):
        if key in schema and not _is_number(schema[key]):
            raise _bad_value(f"{at}.{key}", "TYPE_DOUBLE", schema[key])
    if "nullable" in schema and not isinstance(schema["nullable"], bool):
        raise _bad_value(f"{at}.nullable", "TYPE_BOOL", schema["nullable"])
    for key in ("enum", "required", "propertyOrdering"):
        values = schema.get(key)
        if values is None:
            continue
        if not isinstance(values, list):
            raise _Invalid(f"Invalid JSON payload received. '{at}.{_snake(key)}': Proto field is repeated.")
        for value in values:
            if not isinstance(value, str):
                raise _bad_value(f"{at}.{_snake(key)}", "TYPE_STRING", value)
    properties = schema.get("properties")
    if properties is not None:
        if not isinstance(properties, dict):
            raise _bad_value(f"{at}.properties", "map", properties)
        schema["properties"] = {
            name: _check_schema(value, f"{at}.properties[{name}]") for name, value in properties.items()
        }
    if "items" in schema:
        schema["items"] = _check_schema(schema["items"], f"{at}.items")
    any_of = schema.get("anyOf")
    if any_of is not None:
        if not isinstance(any_of, list):
            raise _Invalid(f"Invalid JSON payload received. '{at}.any_of': Proto field is repeated.")
        schema["anyOf"] = [_check_schema(member, f"{at}.any_of[{index}]") for index, member in enumerate(any_of)]
    return schema


def _check_declaration(declaration: object, at: str, seen: list[dict[str, Any]]) -> dict[str, Any]:
    declaration = _check_fields(
        declaration,
        frozenset({"name", "description", "parameters", "parametersJsonSchema", "response", "responseJsonSchema"}),
        at,
    )
    name = declaration.get("name")
    if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
        raise _Invalid(
            f"* GenerateContentRequest.{at}.name: Invalid function name. Must start with a letter or an "
            "underscore. Must be alphanumeric (a-z, A-Z, 0-9), underscores (_), dots (.), colons (:), or "
            "dashes (-), with a maximum length of 128."
        )
    if any(d["name"] == name for d in seen):
        raise _Invalid(f"Duplicate function declaration found: {name}")
    parameters = declaration.get("parameters")
    if parameters is not None:
        if "parametersJsonSchema" in declaration:
            raise _Invalid(f"{at}: parameters and parameters_json_schema cannot both be set.")
        parameters = declaration["parameters"] = _check_schema(parameters, f"{at}.parameters")
        if str(parameters.get("type", "")).upper() != "OBJECT":
            raise _Invalid(f"* GenerateContentRequest.{at}.parameters.type: must be specified as OBJECT.")
        if not parameters.get("properties"):
            raise _Invalid(f"* GenerateContentRequest.{at}.parameters.properties: should be non-empty for OBJECT type")
    json_schema = declaration.get("parametersJsonSchema")
    if json_schema is not None and not isinstance(json_schema, dict):
        raise _bad_value(f"{at}.parameters_json_schema", "type.googleapis.com/google.protobuf.Value", json_schema)
    return declaration


def _check_tools(tools: object, tool_config: object) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The function declarations offered and the function calling config, validated."""
    if tools is None:
        tools = []
    if not isinstance(tools, list):
        raise _Invalid("Invalid JSON payload received. 'tools': Proto field is repeated.")
    declarations: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        tool = _check_fields(tool, frozenset({"functionDeclarations", "googleSearch", "codeExecution"}), f"tools[{i}]")
        for j, declaration in enumerate(tool.get("functionDeclarations") or ()):
            declarations.append(_check_declaration(declaration, f"tools[{i}].function_declarations[{j}]", declarations))
    calling: dict[str, Any] = {}
    if tool_config is not None:
        config = _check_fields(tool_config, frozenset({"functionCallingConfig"}), "tool_config")
        calling = _check_fields(
            config.get("functionCallingConfig") or {},
            frozenset({"mode", "allowedFunctionNames"}),
            "tool_config.function_calling_config",
        )
        mode = calling.get("mode", "AUTO")
        if mode not in _MODES:
            raise _bad_value("tool_config.function_calling_config.mode", "TYPE_ENUM", mode)
        allowed = calling.get("allowedFunctionNames")
        if allowed is not None:
            if mode != "ANY":
                raise _Invalid("allowed_function_names should only be set when the Mode is ANY.")
            names = {d["name"] for d in declarations}
            for name in allowed:
                if name not in names:
                    raise _Invalid(f"Function name {name!r} in allowed_function_names is not declared in tools.")
    return declarations, calling


_GENERATION_FIELDS = frozenset(
    {
        "temperature",
        "topP",
        "topK",
        "candidateCount",
        "maxOutputTokens",
        "stopSequences",
        "presencePenalty",
        "frequencyPenalty",
        "seed",
        "responseMimeType",
        "responseSchema",
        "responseJsonSchema",
        "responseLogprobs",
        "logprobs",
        "thinkingConfig",
    }
)


def _check_generation_config(config: object) -> dict[str, Any]:
    if config is None:
        return {}
    at = "generation_config"
    config = _check_fields(config, _GENERATION_FIELDS, at)
    for key, low, high in (
        ("temperature", 0, 2),
        ("topP", 0, 1),
        ("presencePenalty", -2, 2),
        ("frequencyPenalty", -2, 2),
    ):
        if key not in config:
            continue
        value = config[key]
        if not _is_number(value):
            raise _bad_value(f"{at}.{_snake(key)}", "TYPE_FLOAT", value)
        if not low <= value <= high:
            raise _Invalid(
                f"Unable to submit request because it has a {key} value of {value} but the supported range is from "
                f"{low} (inclusive) to {high} (inclusive). Update the value and try again."
            )
    if "topK" in config and not _is_number(config["topK"]):
        raise _bad_value(f"{at}.top_k", "TYPE_FLOAT", config["topK"])
    for key, low, high in (("candidateCount", 1, MAX_CANDIDATES), ("maxOutputTokens", 1, MAX_OUTPUT_TOKENS)):
        if key not in config:
            continue
        value = config[key]
        if not _is_int(value):
            raise _bad_value(f"{at}.{_snake(key)}", "TYPE_INT32", value)
        if not low <= value <= high:
            raise _Invalid(f"Unable to submit request because {key} must be between {low} and {high}, got {value}.")
    if "seed" in config and not _is_int(config["seed"]):
        raise _bad_value(f"{at}.seed", "TYPE_INT32", config["seed"])
    stops = config.get("stopSequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise _bad_value(f"{at}.stop_sequences", "TYPE_STRING", stops)
        if len(stops) > MAX_STOP_SEQUENCES:
            raise _Invalid(f"Unable to submit request because stopSequences allows at most {MAX_STOP_SEQUENCES}.")
    mime = config.get("responseMimeType")
    if mime is not None and mime not in _MIME_TYPES:
        raise _Invalid(f"Unable to submit request because responseMimeType {mime!r} is not supported.")
    if "responseSchema" in config:
        if mime not in ("application/json", "text/x.enum"):
            raise _Invalid(
                "Unable to submit request because responseSchema requires responseMimeType application/json."
            )
        config["responseSchema"] = _check_schema(config["responseSchema"], f"{at}.response_schema")
    thinking = config.get("thinkingConfig")
    if thinking is not None:
        thinking = config["thinkingConfig"] = _check_fields(
            thinking, frozenset({"thinkingBudget", "includeThoughts", "thinkingLevel"}), f"{at}.thinking_config"
        )
        if "thinkingBudget" in thinking and not _is_int(thinking["thinkingBudget"]):
            raise _bad_value(f"{at}.thinking_config.thinking_budget", "TYPE_INT32", thinking["thinkingBudget"])
        if "includeThoughts" in thinking and not isinstance(thinking["includeThoughts"], bool):
            raise _bad_value(f"{at}.thinking_config.include_thoughts", "TYPE_BOOL", thinking["includeThoughts"])
    return config


@dataclass(slots=True)
class _Request:
    """A validated request, every name in camelCase."""

    contents: list[dict[str, Any]]
    system: list[dict[str, Any]]
    declarations: list[dict[str, Any]]
    calling: dict[str, Any]
    config: dict[str, Any]


def _check(raw: bytes, top_level: frozenset[str] = _TOP_LEVEL) -> _Request:
    """The request, validated as Vertex would; raises ``_Invalid``."""
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _Invalid("Invalid JSON payload received. Unexpected token.") from None
    request = _check_fields(decoded, top_level, "")
    contents = _check_contents(request.get("contents"))
    system_parts: list[dict[str, Any]] = []
    system = request.get("systemInstruction")
    if system is not None:
        system = _check_fields(system, frozenset({"role", "parts"}), "system_instruction")
        for j, part in enumerate(system.get("parts") or ()):
            checked = _check_part(part, f"system_instruction.parts[{j}]")
            if "text" not in checked:
                raise _Invalid("system_instruction: only text parts are supported.")
            system_parts.append(checked)
    declarations, calling = _check_tools(request.get("tools"), request.get("toolConfig"))
    config = _check_generation_config(request.get("generationConfig"))
    return _Request(contents, system_parts, declarations, calling, config)


# -- counting -------------------------------------------------------------------------------------------


def _string_words(value: object) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, dict):
        return sum(_string_words(v) for v in value.values())
    if isinstance(value, list):
        return sum(_string_words(v) for v in value)
    return 0


def count_prompt_words(system: list[dict[str, Any]], contents: list[dict[str, Any]]) -> int:
    """Prompt "tokens": words of every text part (system included) and of function responses' strings."""
    total = 0
    for parts in (system, *(content["parts"] for content in contents)):
        for part in parts:
            if isinstance(part.get("text"), str):
                total += len(part["text"].split())
            elif "functionResponse" in part:
                total += _string_words(part["functionResponse"]["response"])
    return total


def count_tokens(raw: bytes) -> GeminiReply:
    """``:countTokens``: Vertex's ``CountTokensRequest`` (``contents``, ``systemInstruction``, ``tools``,
    ``generationConfig``; the generate-only fields such as ``safetySettings`` are unknown there) validated
    like a generate request, answered with the prompt's word count as ``totalTokens`` and its characters
    (spaces excluded, as Vertex bills them) as ``totalBillableCharacters``."""
    try:
        request = _check(raw, _COUNT_TOP_LEVEL)
    except _Invalid as invalid:
        return invalid.reply
    total = count_prompt_words(request.system, request.contents)
    characters = sum(
        len("".join(part["text"].split()))
        for parts in (request.system, *(content["parts"] for content in request.contents))
        for part in parts
        if isinstance(part.get("text"), str)
    )
    body = {
        "totalTokens": total,
        "totalBillableCharacters": characters,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total}],
    }
    return GeminiReply(200, body)


# -- answers --------------------------------------------------------------------------------------------


def _lower_types(schema: object) -> object:
    """A Gemini schema with JSON Schema's lower-case type names, for :func:`sample_value`."""
    if isinstance(schema, dict):
        out = {key: _lower_types(value) for key, value in schema.items()}
        if isinstance(out.get("type"), str):
            out["type"] = out["type"].lower()
        return out
    if isinstance(schema, list):
        return [_lower_types(value) for value in schema]
    return schema


def _function_to_call(request: _Request) -> dict[str, Any] | None:
    mode = request.calling.get("mode", "AUTO")
    last = request.contents[-1]
    if not request.declarations or mode == "NONE" or last["role"] != "user":
        return None
    answered = any("functionResponse" in part for part in last["parts"])
    if answered and mode != "ANY":
        return None
    allowed = request.calling.get("allowedFunctionNames")
    if allowed:
        return next(d for d in request.declarations if d["name"] == allowed[0])
    return request.declarations[0]


def _arguments(function: dict[str, Any]) -> dict[str, Any]:
    """Arguments valid for the function's ``parameters`` (Gemini schema) or ``parametersJsonSchema``."""
    if function.get("parameters"):
        args = sample_value(_lower_types(function["parameters"]))
    else:
        args = sample_value(function.get("parametersJsonSchema") or {"type": "object"})
    return args if isinstance(args, dict) else {}


def _answer_text(limit: int, stop_sequences: list[str]) -> tuple[str, str]:
    """``(text, finishReason)``: the sentence word by word until the limit or a stop sequence."""
    text = ""
    if limit <= 0:
        return "", "MAX_TOKENS"
    for count, word in enumerate(WORDS, start=1):
        text = f"{text} {word}" if text else word
        hits = [text.find(s) for s in stop_sequences if s and s in text]
        if hits:
            return text[: min(hits)], "STOP"
        if count >= limit and count < len(WORDS):
            return text, "MAX_TOKENS"
    return text, "STOP"


def _pieces(text: str) -> list[str]:
    """Word-sized pieces ("The", " quick", …) whose concatenation is ``text``."""
    return re.findall(r"\s*\S+|\s+", text)


def create_time(epoch_seconds: float) -> str:
    """Vertex's ``createTime``: RFC 3339 in UTC with microseconds."""
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def generate_content(
    raw: bytes, model: str, *, stream: bool, response_id: str, created: str = "2025-01-01T00:00:00.000000Z"
) -> GeminiReply:
    """Validate a ``:generateContent`` body for ``model`` and build the deterministic answer (a list of
    chunks when ``stream``)."""
    try:
        request = _check(raw)
    except _Invalid as invalid:
        return invalid.reply
    config = request.config
    count = config.get("candidateCount", 1)
    limit = config.get("maxOutputTokens", MAX_OUTPUT_TOKENS)
    thinking = config.get("thinkingConfig") or {}
    thought = thinking.get("includeThoughts") is True and thinking.get("thinkingBudget", -1) != 0
    thought_words = len(THINKING_TEXT.split()) if thought else 0

    function = _function_to_call(request)
    if function is not None:
        args = _arguments(function)
        call = {"functionCall": {"name": function["name"], "args": args}, "thoughtSignature": THOUGHT_SIGNATURE}
        answer_parts: list[dict[str, Any]] = [call]
        answer_words, reason = 1 + len(args), "STOP"
        pieces: list[list[dict[str, Any]]] = [[call]]
    else:
        text, reason = _answer_text(limit - thought_words, config.get("stopSequences") or [])
        answer_parts = [{"text": text}]
        answer_words = len(text.split())
        pieces = [[{"text": piece}] for piece in _pieces(text)] or [[{"text": ""}]]
    thought_part = {"text": THINKING_TEXT, "thought": True}
    parts = [thought_part, *answer_parts] if thought else answer_parts
    prompt = count_prompt_words(request.system, request.contents)
    usage = _usage(prompt, answer_words * count, thought_words * count)
    envelope = {"modelVersion": model, "createTime": created, "responseId": response_id}

    def candidates(chunk_parts: list[dict[str, Any]], finish: str | None) -> list[dict[str, Any]]:
        out = []
        for index in range(count):
            candidate: dict[str, Any] = {"content": {"role": "model", "parts": chunk_parts}}
            if finish:
                candidate["finishReason"] = finish
            if index:
                candidate["index"] = index
            out.append(candidate)
        return out

    if not stream:
        return GeminiReply(200, {"candidates": candidates(parts, reason), "usageMetadata": usage, **envelope})
    if thought:
        pieces.insert(0, [thought_part])
    chunks = []
    output_so_far = 0
    for position, chunk_parts in enumerate(pieces):
        last = position == len(pieces) - 1
        if last:
            chunk_usage = usage
        else:
            output_so_far += sum(len(p.get("text", "").split()) for p in chunk_parts if not p.get("thought"))
            chunk_usage = _usage(prompt, output_so_far * count, thought_words * count)
        chunks.append(
            {"candidates": candidates(chunk_parts, reason if last else None), "usageMetadata": chunk_usage, **envelope}
        )
    return GeminiReply(200, chunks=chunks)


def _usage(prompt: int, candidates: int, thoughts: int) -> dict[str, Any]:
    usage: dict[str, Any] = {"promptTokenCount": prompt}
    if candidates:
        usage["candidatesTokenCount"] = candidates
    usage["totalTokenCount"] = prompt + candidates + thoughts
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    usage["trafficType"] = "ON_DEMAND"
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    return usage


def sse_frame(chunk: dict[str, Any]) -> bytes:
    """One SSE event as Google frames it: ``data: <json>`` and a blank line, with CRLF line endings."""
    return b"data: " + orjson.dumps(chunk) + b"\r\n\r\n"
