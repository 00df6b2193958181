"""Gemini API client (gemini-cli, the ``google-genai`` SDKs) → OpenAI Chat Completions backend.

The ``GenerateContentRequest`` (model and streaming from the path) is rebuilt as a chat completion request;
the answer, plain or streamed, is rebuilt as ``GenerateContentResponse``\\ s. Mapping decisions:

* ``systemInstruction`` (a ``Content`` or a string) → one leading ``system`` message, its text parts joined
  with a blank line.
* ``contents``: role ``user`` (or none) → ``user`` messages, ``model`` → ``assistant``. Text parts are text;
  ``thought`` parts of the model's turns are dropped (an OpenAI history has no place for them), and so are
  thought signatures. ``inlineData``: images → ``image_url`` data URIs, ``audio/wav`` and ``audio/mp3`` →
  ``input_audio``, PDFs → a ``file`` part, ``text/*`` → its text; ``fileData`` images at an http(s) URL →
  ``image_url``; any other media, ``gs://`` and File API files, ``executableCode`` and
  ``codeExecutionResult`` → 422 naming the part.
* ``functionCall`` parts → ``tool_calls``; the call's ``id`` when the client kept it, else
  ``call_{turn}_{part}`` (stable, so a replayed history gets the same ids). ``functionResponse`` parts →
  ``tool`` messages (before the rest of the turn, right after the calls as OpenAI wants), answering the call
  with the same ``id``, else the first unanswered call of that name in the model turn before; the result
  is the ``output`` string when ``response`` is ``{"output": "…"}`` (gemini-cli's), else ``response`` as
  JSON text. A response that answers no call → 400.
* ``tools``: ``functionDeclarations`` → function tools; ``parameters`` (Gemini's OpenAPI subset) become JSON
  Schema (``OBJECT`` → ``object``, ``nullable`` → a ``null`` type, ``format: enum`` and
  ``propertyOrdering`` dropped), ``parametersJsonSchema`` goes as it is. Gemini's built-in tools
  (``googleSearch``, ``codeExecution``, ``urlContext``, …) run only on Gemini → 422.
  ``toolConfig.functionCallingConfig``: ``AUTO``/``VALIDATED`` → ``auto``, ``NONE`` → ``none``, ``ANY`` →
  ``required`` (one ``allowedFunctionNames`` → that function; several → ``required`` with only those tools).
* ``generationConfig``: ``maxOutputTokens`` → ``max_completion_tokens``, ``temperature``, ``topP`` →
  ``top_p``, ``candidateCount`` → ``n``, ``stopSequences`` → ``stop``, ``seed``, ``presencePenalty`` /
  ``frequencyPenalty``; ``responseMimeType: application/json`` → ``response_format`` ``json_object``, with
  ``responseSchema`` or ``responseJsonSchema`` → ``json_schema``. ``thinkingConfig``: ``thinkingLevel`` as
  ``reasoning_effort``, else ``thinkingBudget`` 1-1024 → ``low``, up to 8192 → ``medium``, more → ``high``
  (0 and -1, dynamic: none sent, the model's default); none is sent to ``gpt-4*``, ``gpt-3.5*`` or
  ``chatgpt-4o*``, which refuse it. ``topK``, ``safetySettings``, ``labels`` and
  ``mediaResolution`` are dropped (OpenAI has none); ``cachedContent``, log probabilities, non-text
  ``responseModalities`` and ``speechConfig`` → 422.
* Streams get ``stream_options.include_usage`` always: Gemini clients read ``usageMetadata``.
* ``x-goog-api-key`` and ``x-goog-api-client`` are not sent to a non-Google backend.
* Answers: one candidate per choice (``index`` kept); ``reasoning_content`` → a ``thought: true`` text part,
  ``content`` → a text part, ``tool_calls`` → ``functionCall`` parts with their ``id`` (clients send it back
  in ``functionResponse.id``) and parsed ``args``. ``finishReason``: stop and tool_calls → ``STOP``, length →
  ``MAX_TOKENS``, content_filter → ``SAFETY``, others → ``OTHER``. ``usageMetadata``: ``promptTokenCount``
  (cached included, as both APIs count), ``candidatesTokenCount`` (completion minus reasoning),
  ``thoughtsTokenCount``, ``cachedContentTokenCount``, ``totalTokenCount``; ``modelVersion`` is the
  provider's model, ``responseId`` its id. Streams: one ``data:`` event per text or thought delta; a
  choice's function calls (whose arguments OpenAI streams in pieces) go whole in the last event, with the
  finish reasons and the usage, once the usage chunk or ``[DONE]`` arrived. Provider errors, JSON or not,
  are in Google's shape (``{"error": {"code", "message", "status"}}``) with the status kept; an error mid-stream
  becomes an ``{"error": …}`` event, and a stream that ends before every choice finished ends with one.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from tokenvoy.apis.client_apis import FAMILIES, Family
from tokenvoy.config.model import Backend
from tokenvoy.extproc.errors import GatewayError, gemini_error_body, untranslatable_field
from tokenvoy.extproc.errors import invalid_field as _invalid
from tokenvoy.extproc.sse import SSEParser
from tokenvoy.extproc.translate.base import (
    ClientRequest,
    HeaderChanges,
    TranslatorBase,
    UpstreamRequest,
    rewritten_answer_headers,
)
from tokenvoy.extproc.translate.bodies import DONE_EVENT, WholeBody, stream_items
from tokenvoy.extproc.translate.openai_common import provider_error, takes_reasoning_effort
from tokenvoy.extproc.translate.shapes import answer_object, require
from tokenvoy.extproc.usage import TokenUsage

CHAT_PATH = "/chat/completions"
TARGET = "an OpenAI-schema backend"
# Client headers only Google understands: not sent to another provider.
GOOGLE_HEADERS = ("x-goog-api-key", "x-goog-api-client")
FINISH_REASONS = {
    "stop": "STOP",
    "tool_calls": "STOP",
    "function_call": "STOP",
    "length": "MAX_TOKENS",
    "content_filter": "SAFETY",
}
GEMINI_TOOLS = (
    "googleSearch",
    "googleSearchRetrieval",
    "codeExecution",
    "urlContext",
    "retrieval",
    "computerUse",
    "fileSearch",
    "googleMaps",
    "enterpriseWebSearch",
)
_THINKING_LEVELS = frozenset({"minimal", "low", "medium", "high"})
_AUDIO_FORMATS = {"audio/wav": "wav", "audio/x-wav": "wav", "audio/mp3": "mp3", "audio/mpeg": "mp3"}
_UNSUPPORTED_CONFIG = (
    ("responseLogprobs", (None, False), "the gateway does not translate log probabilities"),
    ("logprobs", (None, 0), "the gateway does not translate log probabilities"),
    ("speechConfig", (None,), "audio answers are not translated"),
)


def _unsupported(where: str, why: str) -> GatewayError:
    return untranslatable_field(where, TARGET, why)


_SNAKE = re.compile(r"(?<!^)(?=[A-Z])")


def snake_case(name: str) -> str:
    """``systemInstruction`` → ``system_instruction``: the proto field name, which Google's JSON parser
    accepts as well as the camelCase one (the REST examples of Google's docs use both)."""
    return _SNAKE.sub("_", name).lower()


def _f(obj: dict[str, Any], name: str) -> Any:
    """A field of a Gemini request object, spelled camelCase or snake_case."""
    value = obj.get(name)
    return obj.get(snake_case(name)) if value is None else value


# ---- request --------------------------------------------------------------------------------------------


def build_request(body: dict[str, Any], model: str, stream: bool) -> dict[str, Any]:
    """The OpenAI chat completion body for a Gemini ``GenerateContentRequest`` (raises GatewayError)."""
    if _f(body, "cachedContent") is not None:
        raise _unsupported("cachedContent", "Gemini's context caches exist only on Gemini")
    out: dict[str, Any] = {"model": model}
    messages: list[dict[str, Any]] = []
    system = _system_text(_f(body, "systemInstruction"))
    if system:
        messages.append({"role": "system", "content": system})
    messages.extend(convert_contents(body.get("contents")))
    out["messages"] = messages
    tools = body.get("tools")
    if tools:
        functions = convert_tools(tools)
        if functions:
            choice, allowed = convert_tool_config(_f(body, "toolConfig"), {f["function"]["name"] for f in functions})
            if allowed is not None:
                functions = [f for f in functions if f["function"]["name"] in allowed]
            out["tools"] = functions
            if choice is not None:
                out["tool_choice"] = choice
    elif tools is not None and not isinstance(tools, list):
        raise _invalid("tools", "expected an array")
    out.update(generation_config(_f(body, "generationConfig")))
    if not takes_reasoning_effort(model):
        out.pop("reasoning_effort", None)
    if stream:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _parts(content: object, where: str) -> list[dict[str, Any]]:
    if not isinstance(content, dict):
        raise _invalid(where, "expected a Content object with `parts`")
    parts = content.get("parts")
    if parts is None:
        return []
    if not isinstance(parts, list):
        raise _invalid(f"{where}.parts", "expected an array")
    for index, part in enumerate(parts):
        if not isinstance(part, dict):
            raise _invalid(f"{where}.parts[{index}]", "expected an object")
    return parts


def _system_text(system: object) -> str:
    if system is None:
        return ""
    if isinstance(system, str):
        return system
    texts = []
    for index, part in enumerate(_parts(system, "systemInstruction")):
        text = part.get("text")
        if not isinstance(text, str):
            raise _unsupported(f"systemInstruction.parts[{index}]", "only text parts can be a system message")
        if text:
            texts.append(text)
    return "\n\n".join(texts)


@dataclass(slots=True)
class _Call:
    id: str
    name: str
    answered: bool = False


def convert_contents(contents: object) -> list[dict[str, Any]]:
    if not isinstance(contents, list) or not contents:
        raise _invalid("contents", "expected a non-empty array of Content objects")
    out: list[dict[str, Any]] = []
    calls: list[_Call] = []  # the calls of the last model turn, for the function responses after it
    for index, content in enumerate(contents):
        where = f"contents[{index}]"
        parts = _parts(content, where)
        role = content.get("role") or "user"
        if role == "model":
            message, calls = _model_message(parts, index, where)
            if message is not None:
                out.append(message)
        elif role in ("user", "function"):
            out.extend(_user_messages(parts, where, calls))
        else:
            raise _invalid(f"{where}.role", f"expected `user` or `model`, not {role!r}")
    return out


def _model_message(parts: list[dict[str, Any]], turn: int, where: str) -> tuple[dict[str, Any] | None, list[_Call]]:
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    calls: list[_Call] = []
    for index, part in enumerate(parts):
        at = f"{where}.parts[{index}]"
        if part.get("thought") is True:
            continue
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(_f(part, "functionCall"), dict):
            call = _f(part, "functionCall")
            name = call.get("name")
            if not isinstance(name, str) or not name:
                raise _invalid(f"{at}.functionCall.name", "expected a non-empty string")
            call_id = call.get("id") if isinstance(call.get("id"), str) and call.get("id") else f"call_{turn}_{index}"
            arguments = call.get("args")
            if arguments is not None and not isinstance(arguments, dict):
                raise _invalid(f"{at}.functionCall.args", "expected an object")
            tool_calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": orjson.dumps(arguments or {}).decode()},
                }
            )
            calls.append(_Call(call_id, name))
        else:
            raise _unsupported(at, f"a model part with {_kind(part)} has no OpenAI equivalent")
    text = "".join(texts)
    if not text and not tool_calls:
        return None, calls
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message, calls


def _kind(part: dict[str, Any]) -> str:
    keys = [key for key in part if key not in ("thought", "thoughtSignature", "videoMetadata")]
    return f"`{keys[0]}`" if keys else "no data"


def _user_messages(parts: list[dict[str, Any]], where: str, calls: list[_Call]) -> list[dict[str, Any]]:
    tool_messages: list[dict[str, Any]] = []
    content: list[dict[str, Any]] = []
    for index, part in enumerate(parts):
        at = f"{where}.parts[{index}]"
        if isinstance(part.get("text"), str):
            if part["text"]:
                content.append({"type": "text", "text": part["text"]})
        elif isinstance(_f(part, "inlineData"), dict):
            content.append(_inline(_f(part, "inlineData"), f"{at}.inlineData"))
        elif isinstance(_f(part, "fileData"), dict):
            content.append(_file(_f(part, "fileData"), f"{at}.fileData"))
        elif isinstance(_f(part, "functionResponse"), dict):
            tool_messages.append(_function_response(_f(part, "functionResponse"), f"{at}.functionResponse", calls))
        else:
            raise _unsupported(at, f"a user part with {_kind(part)} has no OpenAI equivalent")
    out = tool_messages
    if content:
        if all(item["type"] == "text" for item in content):
            out.append({"role": "user", "content": "\n".join(item["text"] for item in content)})
        else:
            out.append({"role": "user", "content": content})
    return out


def _inline(data: dict[str, Any], where: str) -> dict[str, Any]:
    mime, payload = _f(data, "mimeType"), data.get("data")
    if not isinstance(mime, str) or not isinstance(payload, str):
        raise _invalid(where, "inline data needs `mimeType` and base64 `data` strings")
    mime = mime.lower()
    if mime.startswith("image/"):
        return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{payload}"}}
    if mime in _AUDIO_FORMATS:
        return {"type": "input_audio", "input_audio": {"data": payload, "format": _AUDIO_FORMATS[mime]}}
    if mime == "application/pdf":
        return {"type": "file", "file": {"filename": "document.pdf", "file_data": f"data:{mime};base64,{payload}"}}
    if mime.startswith("text/"):
        try:
            text = base64.b64decode(payload, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise _invalid(f"{where}.data", "expected base64 UTF-8 text") from None
        return {"type": "text", "text": text}
    raise _unsupported(where, f"inline {mime!r} data: only images, wav/mp3 audio, PDFs and text can be sent")


def _file(data: dict[str, Any], where: str) -> dict[str, Any]:
    mime, uri = _f(data, "mimeType"), _f(data, "fileUri")
    if isinstance(uri, str) and uri.startswith(("https://", "http://")) and str(mime or "").startswith("image/"):
        return {"type": "image_url", "image_url": {"url": uri}}
    raise _unsupported(
        where, "only images at an http(s) URL can be sent by reference (gs:// and File API files live on Google)"
    )


def _function_response(response: dict[str, Any], where: str, calls: list[_Call]) -> dict[str, Any]:
    name, call_id = response.get("name"), response.get("id")
    call = None
    if isinstance(call_id, str) and call_id:
        call = next((c for c in calls if c.id == call_id), None)
    if call is None and isinstance(name, str):
        call = next((c for c in calls if c.name == name and not c.answered), None)
    if call is None:
        raise _invalid(where, f"answers no functionCall of the model turn before it (name {name!r}, id {call_id!r})")
    call.answered = True
    result = response.get("response")
    if isinstance(result, dict) and set(result) == {"output"} and isinstance(result["output"], str):
        text = result["output"]
    else:
        text = orjson.dumps(result if result is not None else {}).decode()
    return {"role": "tool", "tool_call_id": call.id, "content": text}


def convert_tools(tools: object) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _invalid("tools", "expected an array")
    out = []
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise _invalid(where, "expected an object")
        for builtin in GEMINI_TOOLS:
            if _f(tool, builtin) is not None:
                raise _unsupported(f"{where}.{builtin}", "Gemini's built-in tools run only on Gemini")
        declarations = _f(tool, "functionDeclarations") or []
        if not isinstance(declarations, list):
            raise _invalid(f"{where}.functionDeclarations", "expected an array")
        for position, declaration in enumerate(declarations):
            out.append(_function(declaration, f"{where}.functionDeclarations[{position}]"))
    return out


def _function(declaration: object, where: str) -> dict[str, Any]:
    if not isinstance(declaration, dict) or not isinstance(declaration.get("name"), str) or not declaration["name"]:
        raise _invalid(f"{where}.name", "expected a non-empty string")
    function: dict[str, Any] = {"name": declaration["name"]}
    description = declaration.get("description")
    if isinstance(description, str) and description:
        function["description"] = description
    if isinstance(_f(declaration, "parametersJsonSchema"), dict):
        function["parameters"] = _f(declaration, "parametersJsonSchema")
    elif isinstance(declaration.get("parameters"), dict):
        function["parameters"] = json_schema(declaration["parameters"])
    else:
        function["parameters"] = {"type": "object", "properties": {}}
    return {"type": "function", "function": function}


_SCHEMA_DROPPED = frozenset({"propertyOrdering", "nullable", "example"})


def json_schema(schema: object) -> dict[str, Any]:
    """A Gemini ``Schema`` (OpenAPI 3.0 subset, ``OBJECT``-style types) as the JSON Schema OpenAI tools take."""
    if not isinstance(schema, dict):
        return {}
    out: dict[str, Any] = {}
    for name, value in schema.items():
        key = _camel(name)  # a keyword, spelled either way (property names are not keywords: kept as they are)
        if key in _SCHEMA_DROPPED:
            continue
        if key == "type":
            if isinstance(value, str) and value.upper() != "TYPE_UNSPECIFIED":
                out["type"] = value.lower()
        elif key == "properties" and isinstance(value, dict):
            out["properties"] = {name: json_schema(child) for name, child in value.items()}
        elif key == "items":
            out["items"] = json_schema(value)
        elif key == "anyOf" and isinstance(value, list):
            out["anyOf"] = [json_schema(child) for child in value]
        elif key == "format" and value == "enum":
            continue
        else:
            out[key] = value
    if "example" in schema:
        out["examples"] = [schema["example"]]
    kind = out.get("type")
    if kind in ("integer", "number") and isinstance(out.get("enum"), list):
        out["enum"] = [_number(value) for value in out["enum"]]
    if schema.get("nullable") is True:
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
        elif "anyOf" in out:
            out["anyOf"].append({"type": "null"})
    return out


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def _number(value: object) -> object:
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def convert_tool_config(config: object, names: set[str]) -> tuple[Any, set[str] | None]:
    """``(tool_choice or None, the only tools to offer or None)`` for a ``toolConfig``."""
    calling = _f(config, "functionCallingConfig") if isinstance(config, dict) else None
    if not isinstance(calling, dict):
        return None, None
    mode = str(calling.get("mode") or "AUTO").upper()  # Google's examples write it lower-case too
    if mode in ("AUTO", "MODE_UNSPECIFIED", "VALIDATED"):
        return None, None
    if mode == "NONE":
        return "none", None
    if mode != "ANY":
        raise _invalid("toolConfig.functionCallingConfig.mode", f"{mode!r} is not one of AUTO, ANY, NONE, VALIDATED")
    allowed = _f(calling, "allowedFunctionNames")
    if not allowed:
        return "required", None
    if not isinstance(allowed, list) or not all(isinstance(name, str) for name in allowed):
        raise _invalid("toolConfig.functionCallingConfig.allowedFunctionNames", "expected an array of names")
    unknown = [name for name in allowed if name not in names]
    if unknown:
        raise _invalid(
            "toolConfig.functionCallingConfig.allowedFunctionNames", f"{unknown[0]!r} is not a declared function"
        )
    if len(allowed) == 1:
        return {"type": "function", "function": {"name": allowed[0]}}, None
    return "required", set(allowed)


def generation_config(config: object) -> dict[str, Any]:
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise _invalid("generationConfig", "expected an object")
    for key, accepted, why in _UNSUPPORTED_CONFIG:
        if _f(config, key) not in accepted:
            raise _unsupported(f"generationConfig.{key}", why)
    out: dict[str, Any] = {}
    for key, name in (
        ("maxOutputTokens", "max_completion_tokens"),
        ("candidateCount", "n"),
        ("seed", "seed"),
    ):
        value = _f(config, key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise _invalid(f"generationConfig.{key}", "expected an integer")
        if key != "candidateCount" or value != 1:
            out[name] = value
    for key, name in (
        ("temperature", "temperature"),
        ("topP", "top_p"),
        ("presencePenalty", "presence_penalty"),
        ("frequencyPenalty", "frequency_penalty"),
    ):
        value = _f(config, key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _invalid(f"generationConfig.{key}", "expected a number")
        out[name] = value
    stop = _f(config, "stopSequences")
    if stop:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _invalid("generationConfig.stopSequences", "expected an array of strings")
        out["stop"] = stop
    modalities = _f(config, "responseModalities")
    if modalities and [str(m).upper() for m in modalities] != ["TEXT"]:
        raise _unsupported("generationConfig.responseModalities", "only text answers are translated")
    out.update(_response_format(config))
    effort = _reasoning_effort(_f(config, "thinkingConfig"))
    if effort is not None:
        out["reasoning_effort"] = effort
    return out


def _response_format(config: dict[str, Any]) -> dict[str, Any]:
    mime = _f(config, "responseMimeType")
    schema = _f(config, "responseJsonSchema")
    if schema is None and _f(config, "responseSchema") is not None:
        schema = json_schema(_f(config, "responseSchema"))
    if mime in (None, "text/plain") and schema is None:
        return {}
    if mime not in (None, "application/json"):
        raise _unsupported(
            "generationConfig.responseMimeType", f"{mime!r}: only JSON and text answers can be asked for"
        )
    if schema is None:
        return {"response_format": {"type": "json_object"}}
    return {"response_format": {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}}


def _reasoning_effort(thinking: object) -> str | None:
    if not isinstance(thinking, dict):
        return None
    level = _f(thinking, "thinkingLevel")
    if isinstance(level, str) and level.lower() in _THINKING_LEVELS:
        return level.lower()
    budget = _f(thinking, "thinkingBudget")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
        return None  # 0: off; -1: dynamic, the model's default
    if budget <= 1024:
        return "low"
    if budget <= 8192:
        return "medium"
    return "high"


# ---- response -------------------------------------------------------------------------------------------


def usage_metadata(usage: TokenUsage) -> dict[str, int]:
    """Gemini's ``usageMetadata``: thoughts apart from the candidates, cached tokens inside the prompt's."""
    out = {
        "promptTokenCount": usage.input,
        "candidatesTokenCount": max(usage.output - usage.reasoning, 0),
        "totalTokenCount": usage.total or usage.input + usage.output,
    }
    if usage.reasoning:
        out["thoughtsTokenCount"] = usage.reasoning
    if usage.cached_input:
        out["cachedContentTokenCount"] = usage.cached_input
    return out


def _arguments(arguments: object) -> dict[str, Any]:
    if isinstance(arguments, str) and arguments.strip():
        try:
            parsed = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def function_call(call_id: object, name: object, arguments: object) -> dict[str, Any]:
    call: dict[str, Any] = {"name": name, "args": _arguments(arguments)}
    if isinstance(call_id, str) and call_id:
        call["id"] = call_id
    return {"functionCall": call}


def _finish(reason: object) -> str:
    return FINISH_REASONS.get(reason, "OTHER") if isinstance(reason, str) else "STOP"


def gemini_response(completion: dict[str, Any], fallback_model: str) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` as a Gemini ``GenerateContentResponse``."""
    candidates = []
    for position, choice in enumerate(completion.get("choices") or ()):
        if not isinstance(choice, dict):
            continue
        message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        parts: list[dict[str, Any]] = []
        reasoning = message.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            parts.append({"text": reasoning, "thought": True})
        text = message.get("content")
        if isinstance(text, str) and text:
            parts.append({"text": text})
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():  # a provider's `true` is no call list
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                parts.append(function_call(call.get("id"), function.get("name"), function.get("arguments")))
        index = choice.get("index")
        candidates.append(
            {
                "content": {"role": "model", "parts": parts},
                "finishReason": _finish(choice.get("finish_reason")),
                "index": index if isinstance(index, int) else position,
            }
        )
    out: dict[str, Any] = {"candidates": candidates}
    usage = completion.get("usage")
    if isinstance(usage, dict):
        out["usageMetadata"] = usage_metadata(TokenUsage.from_openai(usage))
    model = completion.get("model")
    out["modelVersion"] = model if isinstance(model, str) and model else fallback_model
    if isinstance(completion.get("id"), str) and completion["id"]:
        out["responseId"] = completion["id"]
    return out


def sse_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\r\n\r\n"


@dataclass(slots=True)
class _Choice:
    finish: str | None = None
    calls: dict[int, list[str]] = field(default_factory=dict)  # tool_calls index → [id, name, arguments]


class GeminiToOpenAI(TranslatorBase):
    def __init__(self) -> None:
        super().__init__()
        self._model = ""
        self._stream = False
        self._body = WholeBody()
        self._parser = SSEParser()
        self._id: str | None = None
        self._choices: dict[int, _Choice] = {}
        self._ended = False

    def translate_request(self, request: ClientRequest, backend: Backend, model: str) -> UpstreamRequest:
        self.answer.keep = request.capture_output
        self._model = model
        self._stream = request.stream
        body = build_request(request.body, model, request.stream)
        return UpstreamRequest(
            path=self.upstream_path(backend, model),
            body=orjson.dumps(body),
            set_headers={"content-type": "application/json"},
            remove_headers=GOOGLE_HEADERS,
        )

    def upstream_path(self, backend: Backend, model: str) -> str:
        return backend.path_prefix + CHAT_PATH

    def translate_response_headers(self, headers: dict[str, str]) -> HeaderChanges | None:
        return rewritten_answer_headers(self._stream)

    def translate_error(self, status: int, headers: Mapping[str, str], body: bytes) -> bytes | None:
        return gemini_error_body(provider_error(status, body))

    def translate_response_body(self, chunk: bytes, end_of_stream: bool) -> bytes | None:
        if not self._stream:
            raw = self._body.collect(chunk, end_of_stream)
            if raw is None:
                return b""
            completion = answer_object(raw, "the provider")  # not a chat completion: a 502, never a made-up one
            require(completion, "choices", list, "the provider")
            self._take(completion)
            response = gemini_response(completion, self._model)
            if self.answer.keep:
                self._capture(response)
            return orjson.dumps(response)
        return self._translate_stream(chunk, end_of_stream)

    def _take(self, payload: dict[str, Any]) -> None:
        self.read_answer(payload, TokenUsage.from_openai)
        if self._id is None and isinstance(payload.get("id"), str) and payload["id"]:
            self._id = payload["id"]

    def _capture(self, response: dict[str, Any]) -> None:
        for candidate in response["candidates"][:1]:
            for part in candidate["content"]["parts"]:
                if isinstance(part.get("text"), str) and part.get("thought") is not True:
                    self.answer.add(part["text"])

    # -- streams --

    def _translate_stream(self, chunk: bytes, end_of_stream: bool) -> bytes:
        out: list[bytes] = []
        for item in stream_items(self._parser, chunk, end_of_stream):
            if self._ended:
                break
            if item == DONE_EVENT:
                self._finish(out)
            elif isinstance(item, dict):
                self._chunk(item, out)
            # a keep-alive comment: Gemini's stream has none to pass on
        if end_of_stream and not self._ended:
            if self._choices and all(choice.finish for choice in self._choices.values()):
                self._finish(out)  # some servers end without [DONE]
            else:
                self._error(GatewayError(502, "the provider's stream ended before the answer was complete"), out)
        return b"".join(out)

    def _envelope(self, candidates: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"candidates": candidates, "modelVersion": self.response_model or self._model}
        if self._id:
            out["responseId"] = self._id
        return out

    def _chunk(self, payload: dict[str, Any], out: list[bytes]) -> None:
        error = payload.get("error")
        if error is not None:
            message = error.get("message") if isinstance(error, dict) else error
            code = error.get("code") if isinstance(error, dict) else None
            status = int(code) if isinstance(code, str) and code.isdigit() else code if isinstance(code, int) else 500
            self._error(GatewayError(status, message if isinstance(message, str) else "provider stream error"), out)
            return
        self._take(payload)
        if isinstance(payload.get("usage"), dict) and not payload.get("choices"):
            if self._choices and all(choice.finish for choice in self._choices.values()):
                self._finish(out)  # the usage chunk comes after every finish reason
            return
        choices = payload.get("choices")
        for position, choice in enumerate(choices if isinstance(choices, list) else ()):
            if not isinstance(choice, dict):
                continue
            index = choice.get("index") if isinstance(choice.get("index"), int) else position
            state = self._choices.setdefault(index, _Choice())
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            parts: list[dict[str, Any]] = []
            reasoning = delta.get("reasoning_content")
            if isinstance(reasoning, str) and reasoning:
                parts.append({"text": reasoning, "thought": True})
            content = delta.get("content")
            if isinstance(content, str) and content:
                parts.append({"text": content})
                if index == 0:
                    self.answer.add(content)
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                if isinstance(call, dict):
                    self._tool_call(state, call)
            if parts:
                candidate = {"content": {"role": "model", "parts": parts}, "index": index}
                out.append(sse_event(self._envelope([candidate])))
            finish = choice.get("finish_reason")
            if isinstance(finish, str) and finish:
                state.finish = finish

    @staticmethod
    def _tool_call(state: _Choice, call: dict[str, Any]) -> None:
        position = call.get("index") if isinstance(call.get("index"), int) else len(state.calls)
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        entry = state.calls.setdefault(position, ["", "", ""])
        if isinstance(call.get("id"), str) and call["id"]:
            entry[0] = call["id"]
        if isinstance(function.get("name"), str) and function["name"]:
            entry[1] = function["name"]
        if isinstance(function.get("arguments"), str):
            entry[2] += function["arguments"]

    def _finish(self, out: list[bytes]) -> None:
        """The last event: each choice's whole function calls and finish reason, and the usage."""
        self._ended = True
        candidates = []
        # An answer with no choice at all still ends with a finishReason (STOP): the Gemini client's end.
        for index, state in sorted((self._choices or {0: _Choice()}).items()):
            parts = [function_call(*state.calls[key]) for key in sorted(state.calls)]
            candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": index}
            candidate["finishReason"] = _finish(state.finish)
            candidates.append(candidate)
        final = self._envelope(candidates)
        final["usageMetadata"] = usage_metadata(self.usage or TokenUsage())
        out.append(sse_event(final))

    def _error(self, error: GatewayError, out: list[bytes]) -> None:
        self._ended = True
        out.append(sse_event(FAMILIES[Family.GOOGLE].error_document(error)))  # Google's error body
