"""Gemini (Vertex AI ``generateContent``) facts shared by every translator that talks to Gemini.

Kept apart from any one client API so an OpenAI-chat and an Anthropic-messages front end read usage,
finish reasons, errors and tool schemas the same way. Pure functions, no I/O.

Tool and response schemas: Gemini takes a subset of OpenAPI 3.0 (``Schema``: ``type``, ``format``,
``title``, ``description``, ``nullable``, ``default``, ``example``, ``enum`` of strings, ``properties``,
``required``, ``propertyOrdering``, ``items``, ``anyOf`` and the ``min``/``max`` bounds, ``pattern``) and
refuses any other key. :func:`gemini_schema` converts a JSON Schema to it:

* ``type`` is written in Gemini's enum spelling (``OBJECT``, ``STRING``, …); ``type: [T, "null"]`` becomes
  ``type: T`` + ``nullable: true``; several non-null types become an ``anyOf`` of one schema per type.
* ``anyOf``/``oneOf`` → ``anyOf`` (``oneOf``'s "exactly one" is not expressible; ``anyOf`` is the closest);
  a ``{"type": "null"}`` member becomes ``nullable`` and a single remaining member is inlined (pydantic's
  ``Optional[X]``). ``allOf`` with one member is inlined; several → 422 (no merge is guessed).
* ``$ref`` to ``#/$defs/…`` or ``#/definitions/…`` is inlined (sibling keys such as ``description`` win);
  a recursive or unresolvable ``$ref`` → 422: Gemini's schemas cannot refer to themselves.
* ``const`` → a one-value ``enum``. ``enum`` values that are not strings are written as JSON text (Gemini's
  enums are strings) with ``format: enum`` on numeric types; a ``null`` member becomes ``nullable``.
* ``required`` names that are not ``properties`` are dropped, and so is an empty ``properties`` (Gemini
  refuses both).
* ``format`` is kept only where Gemini documents it (``float``/``double``/``int32``/``int64`` on numbers,
  ``enum``/``date-time`` on strings); ``uri``, ``uuid``, ``email`` … are dropped.
* Every other keyword (``additionalProperties``, ``$schema``, ``$id``, ``$comment``, ``examples``,
  ``exclusiveMinimum``/``exclusiveMaximum``, ``multipleOf``, ``uniqueItems``, ``patternProperties``,
  ``not``, ``if``/``then``/``else``, ``readOnly``, ``deprecated``, ``strict``, …) is dropped: each only
  narrows or annotates, so the model sees a looser schema and the client still validates what it gets.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

import orjson

from tokenvoy.extproc.errors import GatewayError, invalid_field, untranslatable_field
from tokenvoy.extproc.usage import TokenUsage, token_count

GENERATE_SUFFIX = ":generateContent"
STREAM_SUFFIX = ":streamGenerateContent?alt=sse"


def model_path(prefix: str, model: str, stream: bool) -> str:
    """``{prefix}/publishers/google/models/{model}:generateContent`` (or the SSE streaming method); the
    prefix is ``/v1/projects/{project}/locations/{region}`` when GCP credentials are configured."""
    return f"{prefix}/publishers/google/models/{quote(model, safe='@')}{STREAM_SUFFIX if stream else GENERATE_SUFFIX}"


# Candidate.finishReason → OpenAI's finish_reason. STOP with functionCall parts is "tool_calls" (decided by
# the caller, which sees the parts); anything unlisted (OTHER, LANGUAGE, MALFORMED_FUNCTION_CALL, …) → stop.
FINISH_REASONS: dict[str, str] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
}


def finish_reason(gemini_reason: str, called_tools: bool) -> str:
    mapped = FINISH_REASONS.get(gemini_reason, "stop")
    return "tool_calls" if mapped == "stop" and called_tools else mapped


def usage_from_gemini(metadata: dict[str, Any]) -> TokenUsage:
    """Usage normalised for Gemini. ``promptTokenCount`` already includes cached tokens (as OpenAI's
    ``prompt_tokens`` do); tool-use prompt tokens (e.g. grounding results) are input too. Output is
    ``candidatesTokenCount`` + ``thoughtsTokenCount``: OpenAI's ``completion_tokens`` include reasoning,
    and Google bills thoughts as output; the thoughts alone are also ``reasoning``. total = input + output,
    which is Gemini's ``totalTokenCount``."""
    prompt = token_count(metadata.get("promptTokenCount"), "promptTokenCount")
    prompt += token_count(metadata.get("toolUsePromptTokenCount"), "toolUsePromptTokenCount")
    thoughts = token_count(metadata.get("thoughtsTokenCount"), "thoughtsTokenCount")
    output = token_count(metadata.get("candidatesTokenCount"), "candidatesTokenCount") + thoughts
    return TokenUsage(
        input=prompt,
        cached_input=token_count(metadata.get("cachedContentTokenCount"), "cachedContentTokenCount"),
        output=output,
        reasoning=thoughts,
        total=prompt + output,
    )


def created_at(response: dict[str, Any]) -> int | None:
    """``createTime`` (RFC 3339, Vertex only) as Unix seconds, for ``chat.completion.created``."""
    value = response.get("createTime")
    if not isinstance(value, str):
        return None
    try:
        return int(datetime.fromisoformat(value).timestamp())
    except ValueError:
        return None


def error_details(status: int, raw: bytes) -> str:
    """The message of a Google error body (``{"error": {"code", "message", "status"}}``, or a one-element
    array of it as streaming methods send); any other body is kept whole so the client still sees it."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = error.get("message")
        return message if isinstance(message, str) and message else orjson.dumps(error).decode()
    text = raw.decode("utf-8", errors="replace").strip()
    return text or f"the provider answered {status} with an empty body"


# Google's canonical error status → the HTTP status it comes with (for errors inside a 200 stream).
ERROR_STATUS: dict[str, int] = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ABORTED": 409,
    "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNKNOWN": 500,
    "DATA_LOSS": 500,
    "NOT_IMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


def stream_error(error: object) -> GatewayError:
    """An ``{"error": …}`` object that arrived inside a 200 stream, with the HTTP status it stands for."""
    error = error if isinstance(error, dict) else {}
    code = error.get("code")
    status = code if isinstance(code, int) and 400 <= code <= 599 else ERROR_STATUS.get(str(error.get("status")), 500)
    message = error.get("message")
    return GatewayError(status, message if isinstance(message, str) and message else "provider stream error")


# ---- JSON Schema → Gemini Schema ----------------------------------------------------------------------

_TYPES = {
    "string": "STRING",
    "number": "NUMBER",
    "integer": "INTEGER",
    "boolean": "BOOLEAN",
    "array": "ARRAY",
    "object": "OBJECT",
}
_KEPT = (
    "title",
    "description",
    "default",
    "example",
    "nullable",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "propertyOrdering",
)
_FORMATS = {
    "NUMBER": frozenset({"float", "double"}),
    "INTEGER": frozenset({"int32", "int64"}),
    "STRING": frozenset({"enum", "date-time"}),
}


def gemini_schema(schema: object, where: str, target: str = "a Gemini backend") -> dict[str, Any]:
    """``schema`` (JSON Schema, as OpenAI tools and response formats carry it) as a Gemini ``Schema``;
    raises a 422 :class:`GatewayError` naming the place (``where``) of what cannot be expressed."""
    if not isinstance(schema, dict):
        raise untranslatable_field(where, target, "a schema must be a JSON object")
    defs: dict[str, Any] = {}
    for key in ("definitions", "$defs"):
        found = schema.get(key)
        if isinstance(found, dict):
            defs.update({f"#/{key}/{name}": value for name, value in found.items()})
    return _Converter(defs, target).convert(schema, where, ())


class _Converter:
    __slots__ = ("_defs", "_target")

    def __init__(self, defs: dict[str, Any], target: str) -> None:
        self._defs = defs
        self._target = target

    def _fail(self, where: str, why: str) -> GatewayError:
        return untranslatable_field(where, self._target, why)

    def convert(self, schema: object, where: str, refs: tuple[str, ...]) -> dict[str, Any]:
        if schema is True:
            return {}
        if not isinstance(schema, dict):
            raise self._fail(where, "a schema must be a JSON object")
        ref = schema.get("$ref")
        if ref is not None:
            if ref in refs:
                raise self._fail(f"{where}.$ref", f"{ref} refers to itself: Gemini schemas cannot be recursive")
            target = self._defs.get(ref) if isinstance(ref, str) else None
            if not isinstance(target, dict):
                raise self._fail(f"{where}.$ref", f"{ref!r} is not a definition of this schema ($defs/definitions)")
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            return self.convert({**target, **siblings}, where, (*refs, ref))
        all_of = schema.get("allOf")
        if all_of is not None:
            if not isinstance(all_of, list) or len(all_of) != 1:
                raise self._fail(f"{where}.allOf", "only an allOf of one schema can be expressed")
            rest = {k: v for k, v in schema.items() if k != "allOf"}
            return {**self.convert(all_of[0], f"{where}.allOf[0]", refs), **self.convert(rest, where, refs)}

        out: dict[str, Any] = {}
        nullable = False
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if options is None:
                continue
            if not isinstance(options, list) or not options:
                raise self._fail(f"{where}.{key}", "expected a non-empty array of schemas")
            members = []
            for index, option in enumerate(options):
                if isinstance(option, dict) and option.get("type") == "null" and len(option) == 1:
                    nullable = True
                    continue
                members.append(self.convert(option, f"{where}.{key}[{index}]", refs))
            if len(members) == 1:
                out.update(members[0])
            elif members:
                out["anyOf"] = members
        kind = schema.get("type")
        if kind is not None:
            kinds = kind if isinstance(kind, list) else [kind]
            named = []
            for item in kinds:
                if not isinstance(item, str):  # e.g. "type": [{}]: not JSON Schema at all, whatever the target
                    raise invalid_field(f"{where}.type", "expected a JSON Schema type name or an array of them")
                if item == "null":
                    nullable = True
                elif item in _TYPES:
                    named.append(_TYPES[item])
                else:
                    raise self._fail(f"{where}.type", f"{item!r} is not a JSON Schema type")
            if len(named) == 1:
                out["type"] = named[0]
            elif len(named) > 1:
                out["anyOf"] = [{"type": name} for name in named]
            elif not out:
                raise self._fail(f"{where}.type", "a schema that only allows null cannot be expressed")
        for key in _KEPT:
            if key in schema:
                out[key] = schema[key]
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in _FORMATS.get(out.get("type", ""), ()):
            out["format"] = fmt
        if "const" in schema:
            self._enum(out, [schema["const"]])
        elif isinstance(schema.get("enum"), list):
            self._enum(out, schema["enum"])
        properties = schema.get("properties")
        if isinstance(properties, dict) and properties:  # Gemini refuses an empty ``properties``
            out["properties"] = {
                name: self.convert(value, f"{where}.properties.{name}", refs) for name, value in properties.items()
            }
            required = schema.get("required")
            if isinstance(required, list):
                out["required"] = [name for name in required if isinstance(name, str) and name in properties]
        items = schema.get("items")
        if isinstance(items, dict):
            out["items"] = self.convert(items, f"{where}.items", refs)
        elif items is not None and items is not True:
            raise self._fail(f"{where}.items", "only one schema for every item can be expressed")
        if nullable:
            out["nullable"] = True
        return out

    @staticmethod
    def _enum(out: dict[str, Any], values: list[Any]) -> None:
        """Gemini's enums are strings: other values are written as JSON text; an untyped enum gets the
        type of its values (``INTEGER``/``NUMBER`` when all are numbers, else ``STRING``)."""
        present = [value for value in values if value is not None]
        if len(present) < len(values):
            out["nullable"] = True
        if "type" not in out:
            numbers = [v for v in present if isinstance(v, int | float) and not isinstance(v, bool)]
            if present and len(numbers) == len(present):
                out["type"] = "INTEGER" if all(isinstance(v, int) for v in numbers) else "NUMBER"
            else:
                out["type"] = "STRING"
        out["enum"] = [value if isinstance(value, str) else orjson.dumps(value).decode() for value in present]
        if out["type"] in ("INTEGER", "NUMBER"):
            out["format"] = "enum"


def prompt_blocked(response: dict[str, Any]) -> bool:
    """True when Gemini refused the prompt itself (``promptFeedback.blockReason``, no candidates)."""
    feedback = response.get("promptFeedback")
    return isinstance(feedback, dict) and bool(feedback.get("blockReason"))
