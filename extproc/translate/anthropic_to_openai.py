"""Anthropic Messages client (Claude Code, Cline, the ``anthropic`` SDKs) → OpenAI Chat Completions backend.

The request is rebuilt (the two APIs share no body layout). Mapping decisions:

* ``system`` (a string or text blocks) → one leading ``system`` message; blocks are joined with a blank
  line. ``cache_control`` marks are dropped everywhere (OpenAI caches prompts by itself). A
  mid-conversation ``role: "system"`` message (Claude Code sends one at ``messages[1]`` for model names it
  does not know) stays where it is, as a ``system`` message: OpenAI takes system messages anywhere.
* User turns: ``text`` → text parts, ``image`` (base64 or URL source) → ``image_url`` (a ``data:`` URI for
  base64), a base64 PDF ``document`` → a ``file`` part with ``file_data``. A turn of only text stays a
  plain string. ``tool_result`` blocks become ``tool`` messages placed before the rest of the turn (OpenAI
  wants them right after the assistant's ``tool_calls``); their text is the tool message's content (a
  string result as is, text blocks joined by newlines). An ``is_error`` result is sent as its text (OpenAI
  has no error flag); images inside a result go in a user message right after the tool messages, since
  OpenAI tool messages hold only text.
* Assistant turns: ``text`` blocks → ``content`` (joined), ``tool_use`` → ``tool_calls`` with the input as
  JSON ``arguments``; ``thinking``/``redacted_thinking`` blocks are dropped (OpenAI history has no place
  for them).
* ``tools`` → function tools (``input_schema`` → ``parameters``); Anthropic server tools (``bash_…``,
  ``web_search_…``, ``text_editor_…``, anything with a ``type`` other than ``custom``) → 422.
  ``tool_choice``: ``auto`` → ``"auto"``, ``any`` → ``"required"``, ``tool`` → that function, ``none`` →
  ``"none"``; ``disable_parallel_tool_use: true`` → ``parallel_tool_calls: false``.
* ``max_tokens`` → ``max_completion_tokens`` (OpenAI's current name, the only one reasoning models take);
  ``stop_sequences`` → ``stop``; ``temperature``/``top_p`` as they are; ``top_k`` is dropped (OpenAI has
  none); ``metadata.user_id`` → ``user``; ``service_tier`` and unknown fields are dropped.
* ``thinking: {type: enabled, budget_tokens: N}`` → ``reasoning_effort``: N < 4096 → ``low``, N < 16384 →
  ``medium``, else ``high`` (the inverse of the OpenAI→Anthropic budgets); ``{type: adaptive}`` (Claude Code's
  default) → ``output_config.effort`` as it is (``max`` → ``xhigh``; none → ``high``, Anthropic's default);
  disabled → none sent. Only reasoning models take ``reasoning_effort``: for the models OpenAI
  documents without reasoning (``gpt-4*``, ``gpt-3.5*``, ``chatgpt-4o*``) it is not sent. Reasoning that
  comes back (``reasoning_content``, as DeepSeek/vLLM send it) becomes a ``thinking`` block with an empty
  signature.
* ``stream: true`` → ``stream_options.include_usage: true`` always: the client's ``message_delta`` must
  carry the usage, and the gateway must see it.
* Answers: an Anthropic ``message`` with the provider's id (``msg_`` added when missing); stop reasons per
  :data:`STOP_REASONS`; usage per Anthropic (``input_tokens`` exclude cache reads, which go in
  ``cache_read_input_tokens``); the gateway's own usage normalised as OpenAI's. Streams:
  ``message_start`` (its ``input_tokens`` the gateway's estimate of the prompt, bytes / 4 as for budget
  reservations: OpenAI reports usage only at the end, and Claude Code reads it to track its context),
  ``content_block_start``/``delta``/``stop`` per text, thinking or tool_use block (tool input as
  ``input_json_delta``), ``message_delta`` with the stop reason and the usage (sent once the usage chunk or
  ``[DONE]`` arrived), ``message_stop``. A keep-alive comment from the provider (``: …``) becomes Anthropic's
  ``ping`` event, so a client waiting through long reasoning does not time out. Provider errors, JSON or not, are
  in Anthropic's error shape with the status kept; an error mid-stream becomes an ``error`` event, and a stream
  that ends without a finish reason ends with an ``error`` event too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from tokenvoy.config.model import Backend
from tokenvoy.extproc.errors import GatewayError, UpstreamShapeError, anthropic_error_body, untranslatable_field
from tokenvoy.extproc.errors import invalid_field as _invalid
from tokenvoy.extproc.estimate import prompt_tokens
from tokenvoy.extproc.sse import SSEParser
from tokenvoy.extproc.translate.anthropic_common import MessagesEventWriter, anthropic_usage
from tokenvoy.extproc.translate.base import (
    ClientRequest,
    HeaderChanges,
    TranslatorBase,
    UpstreamRequest,
    rewritten_answer_headers,
)
from tokenvoy.extproc.translate.bodies import DONE_EVENT, KEEP_ALIVE, WholeBody, stream_items
from tokenvoy.extproc.translate.openai_common import provider_error, takes_reasoning_effort
from tokenvoy.extproc.translate.shapes import answer_object, require, stream_cut
from tokenvoy.extproc.usage import TokenUsage

CHAT_PATH = "/chat/completions"
PROVIDER = "the OpenAI-schema provider"
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
# Client headers only Anthropic understands: not sent to an OpenAI-schema backend.
ANTHROPIC_HEADERS = ("anthropic-version", "anthropic-beta", "anthropic-dangerous-direct-browser-access")
_IGNORED_BLOCKS = ("thinking", "redacted_thinking")


def _unsupported(field: str, why: str) -> GatewayError:
    return untranslatable_field(field, "an OpenAI-schema backend", why)


# ---- request --------------------------------------------------------------------------------------------


# Anthropic's ``output_config.effort`` → OpenAI's ``reasoning_effort`` (``max`` has no OpenAI equal: its highest).
EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh", "max": "xhigh"}


def reasoning_effort(thinking: object, output_config: object = None) -> str | None:
    """The ``reasoning_effort`` for Anthropic's ``thinking``: ``enabled`` by its budget, ``adaptive`` (Claude
    Code's default) by ``output_config.effort`` (Anthropic's default, ``high``, when none); otherwise none."""
    if not isinstance(thinking, dict):
        return None
    if thinking.get("type") == "adaptive":
        effort = output_config.get("effort") if isinstance(output_config, dict) else None
        if effort is None:
            return "high"
        if effort not in EFFORTS:
            raise _invalid("output_config.effort", f"expected one of {', '.join(EFFORTS)}")
        return EFFORTS[effort]
    if thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise _invalid("thinking.budget_tokens", "expected an integer")
    if budget < 4096:
        return "low"
    if budget < 16384:
        return "medium"
    return "high"


def build_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The OpenAI chat completion body for an Anthropic Messages body (raises GatewayError)."""
    out: dict[str, Any] = {"model": model}
    messages: list[dict[str, Any]] = []
    system = _system_text(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    messages.extend(convert_messages(body.get("messages")))
    out["messages"] = messages

    max_tokens = body.get("max_tokens")
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise _invalid("max_tokens", "expected a positive integer")
        out["max_completion_tokens"] = max_tokens
    stop = body.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _invalid("stop_sequences", "expected an array of strings")
        if stop:
            out["stop"] = stop
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    effort = reasoning_effort(body.get("thinking"), body.get("output_config"))
    if effort is not None and takes_reasoning_effort(model):
        out["reasoning_effort"] = effort
    metadata = body.get("metadata")
    user = metadata.get("user_id") if isinstance(metadata, dict) else None
    if isinstance(user, str) and user:
        out["user"] = user

    tools = body.get("tools")
    if tools:
        out["tools"] = convert_tools(tools)
        choice = body.get("tool_choice")
        if choice is not None:
            converted, parallel = convert_tool_choice(choice)
            out["tool_choice"] = converted
            if parallel is False:
                out["parallel_tool_calls"] = False
    elif isinstance(body.get("tool_choice"), dict) and body["tool_choice"].get("type") not in ("auto", "none"):
        raise _invalid("tool_choice", "a tool is required but no `tools` were given")
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _system_text(system: object, where: str = "system") -> str:
    if system is None:
        return ""
    if isinstance(system, str):
        return system
    if not isinstance(system, list):
        raise _invalid(where, "expected a string or an array of text blocks")
    texts = []
    for index, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise _invalid(f"{where}[{index}]", "expected a text block")
        if block["text"]:
            texts.append(block["text"])
    return "\n\n".join(texts)


def convert_messages(messages: object) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages", "expected a non-empty array of messages")
    out: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _invalid(where, "expected an object")
        role = message.get("role")
        content = message.get("content")
        if role == "user":
            out.extend(_user_messages(content, f"{where}.content"))
        elif role == "assistant":
            assistant = _assistant_message(content, f"{where}.content")
            if assistant is not None:
                out.append(assistant)
        elif role == "system":  # a mid-conversation system message: OpenAI takes one anywhere, in place
            text = _system_text(content, f"{where}.content")
            if text:
                out.append({"role": "system", "content": text})
        else:
            raise _invalid(f"{where}.role", f"expected `user`, `assistant` or `system`, not {role!r}")
    return out


def _blocks(content: object, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise _invalid(where, "expected a string or an array of content blocks")
    for index, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise _invalid(f"{where}[{index}]", "expected a content block with a `type`")
    return content


def _text(block: dict[str, Any], where: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise _invalid(f"{where}.text", "expected a string")
    return text


def _user_messages(content: object, where: str) -> list[dict[str, Any]]:
    """A user turn → ``tool`` messages (its tool results, first) and then one ``user`` message."""
    tool_messages: list[dict[str, Any]] = []
    result_images: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for index, block in enumerate(_blocks(content, where)):
        at = f"{where}[{index}]"
        kind = block["type"]
        if kind == "text":
            parts.append({"type": "text", "text": _text(block, at)})
        elif kind == "image":
            parts.append(_image(block, at))
        elif kind == "document":
            parts.append(_document(block, at))
        elif kind == "tool_result":
            message, images = _tool_result(block, at)
            tool_messages.append(message)
            result_images.extend(images)
        elif kind in _IGNORED_BLOCKS:
            continue
        else:
            raise _unsupported(at, f"content block type {kind!r} has no OpenAI equivalent")
    out = tool_messages
    parts = result_images + parts
    if parts:
        if all(part["type"] == "text" for part in parts):
            out.append({"role": "user", "content": "\n".join(part["text"] for part in parts)})
        else:
            out.append({"role": "user", "content": parts})
    return out


def _image(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if not isinstance(media_type, str) or not isinstance(data, str):
            raise _invalid(f"{where}.source", "a base64 source needs `media_type` and `data` strings")
        return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}
    if kind == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise _unsupported(f"{where}.source", f"image source {kind!r}: only base64 and url sources can be sent")


def _document(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if (
        isinstance(source, dict)
        and source.get("type") == "base64"
        and source.get("media_type") == "application/pdf"
        and isinstance(source.get("data"), str)
    ):
        file: dict[str, Any] = {"file_data": f"data:application/pdf;base64,{source['data']}"}
        title = block.get("title")
        file["filename"] = title if isinstance(title, str) and title else "document.pdf"
        return {"type": "file", "file": file}
    raise _unsupported(f"{where}.source", "only base64 PDF documents can be sent")


def _tool_result(block: dict[str, Any], where: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise _invalid(f"{where}.tool_use_id", "expected the id of the tool_use this result answers")
    content = block.get("content")
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for index, part in enumerate(content):
            at = f"{where}.content[{index}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                texts.append(_text(part, at))
            elif kind == "image":
                images.append(_image(part, at))
            else:
                raise _unsupported(at, f"tool result block type {kind!r} has no OpenAI equivalent")
    elif content is not None:
        raise _invalid(f"{where}.content", "expected a string or an array of blocks")
    return {"role": "tool", "tool_call_id": call_id, "content": "\n".join(texts)}, images


def _assistant_message(content: object, where: str) -> dict[str, Any] | None:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for index, block in enumerate(_blocks(content, where)):
        at = f"{where}[{index}]"
        kind = block["type"]
        if kind == "text":
            texts.append(_text(block, at))
        elif kind == "tool_use":
            call_id, name = block.get("id"), block.get("name")
            if not isinstance(call_id, str) or not isinstance(name, str):
                raise _invalid(at, "a tool_use block needs `id` and `name` strings")
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})
        elif kind in _IGNORED_BLOCKS:
            continue
        else:
            raise _unsupported(at, f"content block type {kind!r} has no OpenAI equivalent")
    text = "".join(texts)
    if not text and not calls:
        return None  # e.g. a turn of only thinking: nothing an OpenAI model can read
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    return message


def convert_tools(tools: object) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _invalid("tools", "expected an array")
    out = []
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise _invalid(where, "expected an object")
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise _unsupported(where, f"Anthropic server tool {kind!r} only runs on Anthropic")
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise _invalid(f"{where}.name", "expected a non-empty string")
        function: dict[str, Any] = {"name": name}
        description = tool.get("description")
        if isinstance(description, str) and description:
            function["description"] = description
        schema = tool.get("input_schema")
        function["parameters"] = schema if isinstance(schema, dict) else {"type": "object", "properties": {}}
        out.append({"type": "function", "function": function})
    return out


def convert_tool_choice(choice: object) -> tuple[Any, bool | None]:
    """``(OpenAI tool_choice, parallel_tool_calls or None)``."""
    if not isinstance(choice, dict):
        raise _invalid("tool_choice", "expected an object with a `type`")
    kind = choice.get("type")
    parallel = False if choice.get("disable_parallel_tool_use") is True else None
    if kind == "auto":
        return "auto", parallel
    if kind == "any":
        return "required", parallel
    if kind == "none":
        return "none", None
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise _invalid("tool_choice.name", "expected a non-empty string")
        return {"type": "function", "function": {"name": name}}, parallel
    raise _invalid("tool_choice.type", f"{kind!r} is not one of auto, any, tool, none")


# ---- response -------------------------------------------------------------------------------------------


def message_id(openai_id: object) -> str:
    text = openai_id if isinstance(openai_id, str) and openai_id else "gateway"
    return text if text.startswith("msg_") else f"msg_{text}"


def _tool_input(arguments: object) -> dict[str, Any]:
    if isinstance(arguments, str) and arguments.strip():
        try:
            parsed = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def anthropic_message(completion: dict[str, Any], fallback_model: str) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` as an Anthropic ``message``."""
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    reply = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    content: list[dict[str, Any]] = []
    reasoning = reply.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = reply.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    calls = reply.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": _tool_input(function.get("arguments")),
            }
        )
    usage = completion.get("usage")
    model = completion.get("model")
    return {
        "id": message_id(completion.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model if isinstance(model, str) and model else fallback_model,
        "content": content,
        "stop_reason": STOP_REASONS.get(
            finish if isinstance(finish := choice.get("finish_reason"), str) else "", "end_turn"
        ),
        "stop_sequence": None,
        "usage": anthropic_usage(TokenUsage.from_openai(usage if isinstance(usage, dict) else {})),
    }


class AnthropicToOpenAI(TranslatorBase):
    def __init__(self) -> None:
        super().__init__()
        self._model = ""  # the model asked for: the answer's model when the provider sends none
        self._stream = False
        self._body = WholeBody()
        self._parser = SSEParser()
        # stream state
        self._events = MessagesEventWriter()  # the client's stream
        self._started = False
        self._finished = False
        self._id: str | None = None
        self._block: int | None = None  # index of the open content block
        self._block_kind: str | None = None
        self._blocks = 0
        self._tools: dict[int, int] = {}  # OpenAI tool_calls index → Anthropic block index
        self._stop_reason: str | None = None
        self._input_estimate = 0  # message_start's input_tokens: OpenAI reports usage only at the end

    def translate_request(self, request: ClientRequest, backend: Backend, model: str) -> UpstreamRequest:
        self.answer.keep = request.capture_output
        body = build_request(request.body, model)
        self._model = model
        self._stream = body.get("stream") is True
        if self._stream:
            self._input_estimate = prompt_tokens(request.body)
        return UpstreamRequest(
            path=backend.path_prefix + CHAT_PATH,
            body=orjson.dumps(body),
            set_headers={"content-type": "application/json"},
            remove_headers=ANTHROPIC_HEADERS,
        )

    def translate_response_headers(self, headers: dict[str, str]) -> HeaderChanges | None:
        return rewritten_answer_headers(self._stream)

    def translate_error(self, status: int, headers: Mapping[str, str], body: bytes) -> bytes | None:
        return anthropic_error_body(provider_error(status, body))

    def translate_response_body(self, chunk: bytes, end_of_stream: bool) -> bytes | None:
        if not self._stream:
            raw = self._body.collect(chunk, end_of_stream)
            return b"" if raw is None else self._whole(raw)
        return self._translate_stream(chunk, end_of_stream)

    def _whole(self, raw: bytes) -> bytes:
        completion = answer_object(raw, PROVIDER)  # not OpenAI's answer: a 502, not an invented empty one
        choices = require(completion, "choices", list, PROVIDER)
        if not choices or not isinstance(choices[0], dict) or not isinstance(choices[0].get("message"), dict):
            raise UpstreamShapeError(f"{PROVIDER}'s answer has no `choices[0].message` object")
        self._take(completion)
        if self.answer.keep:
            choices = completion.get("choices")
            reply = (
                choices[0].get("message")
                if isinstance(choices, list) and choices and isinstance(choices[0], dict)
                else None
            )
            if isinstance(reply, dict) and isinstance(reply.get("content"), str):
                self.answer.add(reply["content"])
        return orjson.dumps(anthropic_message(completion, self._model))

    def _take(self, payload: dict[str, Any]) -> None:
        self.read_answer(payload, TokenUsage.from_openai)

    # -- streams --

    def _translate_stream(self, chunk: bytes, end_of_stream: bool) -> bytes:
        out: list[bytes] = []
        for item in stream_items(self._parser, chunk, end_of_stream):
            if self._finished:
                break
            if item == KEEP_ALIVE:  # keep the client's alive too
                self._start(out)
                out.append(MessagesEventWriter.PING)
            elif item == DONE_EVENT:
                self._finish(out)
            elif isinstance(item, dict):
                self._chunk(item, out)
        if end_of_stream and not self._finished:
            if self._stop_reason is not None:
                self._finish(out)  # some servers end without [DONE]
            else:  # cut short, or not OpenAI's stream at all
                raise stream_cut(PROVIDER, "a finish reason or `[DONE]`", b"".join(out))
        return b"".join(out)

    def _start(self, out: list[bytes]) -> None:
        if self._started:
            return
        self._started = True
        model = self.response_model or self._model
        out.append(self._events.message_start(message_id(self._id), model, self._input_estimate))

    def _chunk(self, payload: dict[str, Any], out: list[bytes]) -> None:
        error = payload.get("error")
        if error is not None:
            message = error.get("message") if isinstance(error, dict) else error
            self._error("api_error", message if isinstance(message, str) else "provider stream error", out)
            return
        if self._id is None and isinstance(payload.get("id"), str) and payload["id"]:
            self._id = payload["id"]
        self._take(payload)
        choices = payload.get("choices")
        if not isinstance(choices, list) or not choices:
            return  # the usage chunk, or Azure's opening prompt-filter chunk
        choice = choices[0]
        if not isinstance(choice, dict):
            return
        self._start(out)
        delta = choice.get("delta")
        if isinstance(delta, dict):
            reasoning = delta.get("reasoning_content")
            if isinstance(reasoning, str) and reasoning:
                self._open("thinking", out)
                self._delta({"type": "thinking_delta", "thinking": reasoning}, out)
            content = delta.get("content")
            if isinstance(content, str) and content:
                if self.answer.keep:
                    self.answer.add(content)
                self._open("text", out)
                self._delta({"type": "text_delta", "text": content}, out)
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                if isinstance(call, dict):
                    self._tool_call(call, out)
        finish = choice.get("finish_reason")
        if isinstance(finish, str) and finish:
            self._close(out)
            self._stop_reason = STOP_REASONS.get(finish, "end_turn")

    def _open(self, kind: str, out: list[bytes], block: dict[str, Any] | None = None) -> None:
        if self._block is not None and self._block_kind == kind and block is None:
            return
        self._close(out)
        self._block, self._block_kind = self._blocks, kind
        self._blocks += 1
        if block is None:
            block = {"type": "text", "text": ""} if kind == "text" else {"type": kind, "thinking": "", "signature": ""}
        out.append(self._events.block_start(self._block, block))

    def _delta(self, delta: dict[str, Any], out: list[bytes], index: int | None = None) -> None:
        at = self._block if index is None else index
        out.append(self._events.block_delta(at, delta))

    def _close(self, out: list[bytes]) -> None:
        if self._block is None:
            return
        out.append(self._events.block_stop(self._block))
        self._block = self._block_kind = None

    def _tool_call(self, call: dict[str, Any], out: list[bytes]) -> None:
        position = call.get("index") if isinstance(call.get("index"), int) else len(self._tools)
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        block = self._tools.get(position)
        if block is None:
            self._tools[position] = self._blocks
            start = {"type": "tool_use", "id": call.get("id") or f"toolu_{position}", "name": function.get("name")}
            self._open("tool_use", out, {**start, "input": {}})
            block = self._tools[position]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            self._delta({"type": "input_json_delta", "partial_json": arguments}, out, block)

    def _finish(self, out: list[bytes]) -> None:
        self._start(out)
        self._close(out)
        self._finished = True
        out.append(self._events.message_end(self._stop_reason or "end_turn", self.usage))

    def _error(self, error_type: str, message: str, out: list[bytes]) -> None:
        self._finished = True
        out.append(self._events.error(error_type, message))
