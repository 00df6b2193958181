"""Anthropic Messages client (Claude Code, Cline, the ``anthropic`` SDKs) → AWS Bedrock Converse /
ConverseStream backend (schema ``AWSBedrock``).

The request is rebuilt as Converse blocks; the two APIs describe the same things, so most of it maps one
to one. Mapping decisions:

* Path ``/model/{model}/converse`` (``converse-stream`` for ``stream: true``), the model id URL-encoded
  whole. The ``anthropic-beta`` header becomes ``additionalModelRequestFields.anthropic_beta`` (how Claude on
  Bedrock takes betas), keeping only the flags AWS documents for Claude on Bedrock
  (:data:`~anthropic_common.BEDROCK_CLAUDE_BETAS`, or ``TokenvoyConfig`` ``spec.anthropicBetas.AWSBedrock``);
  ``anthropic-*`` headers and the client's ``x-api-key`` are not
  sent (signing is the credentials layer's job).
* ``system`` (a string or text blocks) → ``system`` text blocks. A mid-conversation ``role: "system"`` message
  (Claude Code sends one at ``messages[1]`` for model names it does not know) becomes more ``system`` blocks after
  those: Converse takes system text only at the top level and roles only ``user``/``assistant``, and a user text
  block would lose the instruction's authority. Content: ``text``; ``image`` with a base64 source → ``image`` (URL
  sources → 422: Bedrock fetches nothing); ``document`` with a base64 source (pdf, csv, doc(x), xls(x), html, txt,
  md) or a plain-text source → ``document`` named after its ``title``; ``tool_use`` → ``toolUse``; ``tool_result``
  → ``toolResult`` (text and image content, ``is_error`` → ``status: error``); ``thinking`` →
  ``reasoningContent.reasoningText`` with its signature and ``redacted_thinking`` →
  ``reasoningContent.redactedContent``, so multi-turn tool use with thinking replays. ``cache_control`` on any
  block or tool → a ``cachePoint`` after it (its ``ttl`` kept). Consecutive turns of one role are merged (the
  Messages API merges them too).
* ``tools`` (custom) → ``toolConfig.tools[].toolSpec``; Anthropic server tools (``bash_…``,
  ``web_search_…``, …), ``mcp_servers`` and other blocks only Anthropic runs → 422. ``tool_choice``: ``auto``
  (Bedrock's default, not sent), ``any``, ``tool`` map one to one; ``none`` drops the tools and is a 422
  when the history holds tool blocks (Bedrock has no ``none``). ``disable_parallel_tool_use`` is dropped.
* ``max_tokens``, ``temperature``, ``top_p``, ``stop_sequences`` → ``inferenceConfig``; ``top_k`` and
  ``thinking`` (as sent) → ``additionalModelRequestFields``; ``output_format`` / ``output_config.format``
  JSON schemas → ``outputConfig.textFormat`` and ``output_config.effort`` → ``outputConfig.effort``.
  ``metadata``, ``service_tier`` and unknown fields are dropped.
* Answers: an Anthropic ``message`` with ``msg_bdrk_`` + Bedrock's request id and the model id sent;
  ``reasoningContent`` → ``thinking`` (signed) / ``redacted_thinking``; stop reasons per :data:`STOP_REASONS`
  (``stop_sequence`` is null: Converse does not say which one matched). Usage maps field for field
  (``inputTokens`` exclude the cache, as Anthropic's ``input_tokens`` do); the gateway's own counts are normalised
 . Streams: ``message_start`` at ``messageStart`` (``input_tokens`` the gateway's estimate of the
  prompt, bytes / 4: Bedrock reports usage only at the end), ``content_block_start``/``delta``/``stop`` per block
  (Bedrock starts only tool blocks explicitly; text and thinking blocks are opened at their first delta; a
  redacted thinking block is sent whole when it ends), then ``message_delta`` with the stop reason and the full
  usage, and ``message_stop``, after ``metadata``. Errors keep their status and Bedrock's type
  (``{"type":"error","error":{"type":"ThrottlingException",…}}``); a mid-stream ``exception`` or a cut stream
  becomes an ``error`` event.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from typing import Any

import orjson

from tokenvoy.config.model import Backend
from tokenvoy.extproc.errors import invalid_field as _invalid
from tokenvoy.extproc.estimate import prompt_tokens
from tokenvoy.extproc.translate.anthropic_common import (
    BEDROCK_CLAUDE_BETAS,
    MessagesEventWriter,
    allowed_betas,
    anthropic_usage,
)
from tokenvoy.extproc.translate.base import ClientRequest, UpstreamRequest
from tokenvoy.extproc.translate.bedrock_common import (
    PROVIDER,
    BedrockTranslator,
    append_turn,
    cache_point,
    document_block,
    has_tool_blocks,
    image_block,
    inference_config,
    json_schema_output,
    tool_config,
    tool_spec,
    unsupported,
    usage_from_bedrock,
)
from tokenvoy.extproc.translate.shapes import stream_cut

STOP_REASONS = {
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "model_context_window_exceeded": "model_context_window_exceeded",
    "guardrail_intervened": "refusal",
    "content_filtered": "refusal",
}
ANTHROPIC_HEADERS = ("anthropic-version", "anthropic-beta", "anthropic-dangerous-direct-browser-access", "x-api-key")


# ---- request --------------------------------------------------------------------------------------------


def build_request(
    body: dict[str, Any], beta: str | None = None, allowed: frozenset[str] | None = BEDROCK_CLAUDE_BETAS
) -> dict[str, Any]:
    """The Converse body for an Anthropic Messages body (raises GatewayError); ``beta`` is the client's
    ``anthropic-beta`` header, of which only the ``allowed`` flags are sent. The model goes in the path."""
    if body.get("mcp_servers"):
        raise unsupported("mcp_servers", "Bedrock does not connect to MCP servers")
    if body.get("container") is not None:
        raise unsupported("container", "code execution containers run only on Anthropic")
    mid_conversation: list[dict[str, Any]] = []
    messages = convert_messages(body.get("messages"), mid_conversation)
    out: dict[str, Any] = {"messages": messages}
    system = convert_system(body.get("system")) + mid_conversation
    if system:
        out["system"] = system

    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise _invalid("max_tokens", "expected a positive integer")
    stop = body.get("stop_sequences")
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop)):
        raise _invalid("stop_sequences", "expected an array of non-empty strings")
    config = inference_config(max_tokens, body.get("temperature"), body.get("top_p"), stop)
    if config:
        out["inferenceConfig"] = config

    tools = body.get("tools")
    choice = body.get("tool_choice")
    if tools or choice is not None or has_tool_blocks(messages):
        specs = convert_tools(tools) if tools else []
        toolconfig = tool_config(specs, convert_tool_choice(choice), messages, "tool_choice")
        if toolconfig is not None:
            out["toolConfig"] = toolconfig

    additional: dict[str, Any] = {}
    thinking = body.get("thinking")
    if thinking is not None:
        if not isinstance(thinking, dict):
            raise _invalid("thinking", "expected an object")
        additional["thinking"] = thinking
    top_k = body.get("top_k")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise _invalid("top_k", "expected a non-negative integer")
        additional["top_k"] = top_k
    betas = allowed_betas(beta, allowed, "Bedrock Converse")
    if betas:
        additional["anthropic_beta"] = betas
    if additional:
        out["additionalModelRequestFields"] = additional
    output = _output_config(body)
    if output:
        out["outputConfig"] = output
    return out


def _output_config(body: dict[str, Any]) -> dict[str, Any]:
    output_config = body.get("output_config")
    if output_config is not None and not isinstance(output_config, dict):
        raise _invalid("output_config", "expected an object")
    output_config = output_config or {}
    out: dict[str, Any] = {}
    formats = (("output_config.format", output_config.get("format")), ("output_format", body.get("output_format")))
    for field, fmt in formats:
        if fmt is None:
            continue
        if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
            raise unsupported(field, "only a `json_schema` format can be sent to Bedrock")
        out.update(json_schema_output(fmt.get("schema"), fmt.get("name"), fmt.get("description"), f"{field}.schema"))
    effort = output_config.get("effort")
    if effort is not None:
        if not isinstance(effort, str):
            raise _invalid("output_config.effort", "expected a string")
        out["effort"] = effort
    return out


def convert_system(system: object, where: str = "system") -> list[dict[str, Any]]:
    if system is None:
        return []
    if isinstance(system, str):
        return [{"text": system}] if system else []
    if not isinstance(system, list):
        raise _invalid(where, "expected a string or an array of text blocks")
    blocks: list[dict[str, Any]] = []
    for index, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise _invalid(f"{where}[{index}]", "expected a text block")
        if block["text"]:
            blocks.extend(_marked({"text": block["text"]}, block))
    return blocks


def _marked(converted: dict[str, Any], block: dict[str, Any]) -> list[dict[str, Any]]:
    point = cache_point(block.get("cache_control"))
    return [converted, point] if point is not None else [converted]


def convert_messages(messages: object, system: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Converse messages; mid-conversation ``role: "system"`` messages go into ``system`` (Converse system
    blocks, after the top-level ones) when a list is given, else they are refused."""
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages", "expected a non-empty array of messages")
    out: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _invalid(where, "expected an object")
        role = message.get("role")
        if role == "system" and system is not None:
            system.extend(convert_system(message.get("content"), f"{where}.content"))
            continue
        if role not in ("user", "assistant"):
            raise _invalid(f"{where}.role", f"expected `user`, `assistant` or `system`, not {role!r}")
        content = message.get("content")
        if isinstance(content, str):
            blocks = [{"text": content}] if content else []
        elif isinstance(content, list):
            blocks = []
            for position, block in enumerate(content):
                blocks.extend(_block(block, role, f"{where}.content[{position}]"))
        else:
            raise _invalid(f"{where}.content", "expected a string or an array of content blocks")
        append_turn(out, role, blocks)
    return out


def _block(block: object, role: str, where: str) -> list[dict[str, Any]]:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise _invalid(where, "expected a content block with a `type`")
    kind = block["type"]
    if kind == "text":
        text = block.get("text")
        if not isinstance(text, str):
            raise _invalid(f"{where}.text", "expected a string")
        return _marked({"text": text}, block) if text else []
    if kind == "image":
        return _marked(_image(block, where), block)
    if kind == "document":
        return _marked(_document(block, where), block)
    if kind == "tool_use" and role == "assistant":
        call_id, name, tool_input = block.get("id"), block.get("name"), block.get("input")
        if not isinstance(call_id, str) or not call_id or not isinstance(name, str):
            raise _invalid(where, "a tool_use block needs `id` and `name` strings")
        if tool_input is not None and not isinstance(tool_input, dict):
            raise _invalid(f"{where}.input", "expected an object")
        return _marked({"toolUse": {"toolUseId": call_id, "name": name, "input": tool_input or {}}}, block)
    if kind == "tool_result" and role == "user":
        return _marked(_tool_result(block, where), block)
    if kind == "thinking" and role == "assistant":
        thinking, signature = block.get("thinking"), block.get("signature")
        if not isinstance(thinking, str):
            raise _invalid(f"{where}.thinking", "expected a string")
        text: dict[str, Any] = {"text": thinking}
        if isinstance(signature, str) and signature:
            text["signature"] = signature
        return [{"reasoningContent": {"reasoningText": text}}]
    if kind == "redacted_thinking" and role == "assistant":
        data = block.get("data")
        if not isinstance(data, str):
            raise _invalid(f"{where}.data", "expected a string")
        return [{"reasoningContent": {"redactedContent": data}}]
    if kind in ("tool_use", "tool_result", "thinking", "redacted_thinking"):
        raise _invalid(where, f"a {kind} block cannot be in a {role} message")
    raise unsupported(where, f"content block type {kind!r} has no Bedrock equivalent")


def _image(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if not isinstance(media_type, str) or not isinstance(data, str):
            raise _invalid(f"{where}.source", "a base64 source needs `media_type` and `data` strings")
        return image_block(media_type, data, f"{where}.source")
    raise unsupported(f"{where}.source", f"image source {kind!r}: Bedrock takes images only as base64 bytes")


def _document(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    title = block.get("title") if isinstance(block.get("title"), str) else None
    if kind == "base64" and isinstance(source.get("media_type"), str) and isinstance(source.get("data"), str):
        converted = document_block(source["media_type"], source["data"], title, f"{where}.source")
    elif kind == "text" and isinstance(source.get("data"), str):
        data = base64.b64encode(source["data"].encode()).decode()
        converted = document_block("text/plain", data, title, f"{where}.source")
    else:
        raise unsupported(f"{where}.source", f"document source {kind!r}: Bedrock takes base64 and text sources")
    context = block.get("context")
    if isinstance(context, str) and context:
        converted["document"]["context"] = context
    return converted


def _tool_result(block: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise _invalid(f"{where}.tool_use_id", "expected the id of the tool_use this result answers")
    content = block.get("content")
    parts: list[dict[str, Any]] = []
    if isinstance(content, str):
        if content:
            parts.append({"text": content})
    elif isinstance(content, list):
        for index, part in enumerate(content):
            at = f"{where}.content[{index}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                if part["text"]:
                    parts.append({"text": part["text"]})
            elif kind == "image":
                parts.append(_image(part, at))
            elif kind == "document":
                parts.append(_document(part, at))
            else:
                raise unsupported(at, f"tool result block type {kind!r} has no Bedrock equivalent")
    elif content is not None:
        raise _invalid(f"{where}.content", "expected a string or an array of blocks")
    result: dict[str, Any] = {"toolUseId": call_id, "content": parts}
    if block.get("is_error") is True:
        result["status"] = "error"
    return {"toolResult": result}


def convert_tools(tools: object) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _invalid("tools", "expected an array")
    out: list[dict[str, Any]] = []
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise _invalid(where, "expected an object")
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise unsupported(where, f"Anthropic server tool {kind!r} only runs on Anthropic")
        out.extend(_marked(tool_spec(tool.get("name"), tool.get("description"), tool.get("input_schema"), where), tool))
    return out


def convert_tool_choice(choice: object) -> dict[str, Any] | None:
    """Bedrock's ``toolChoice``; None for ``none`` (no tool may be called)."""
    if choice is None:
        return {"auto": {}}
    if not isinstance(choice, dict):
        raise _invalid("tool_choice", "expected an object with a `type`")
    kind = choice.get("type")
    if kind == "auto":
        return {"auto": {}}
    if kind == "any":
        return {"any": {}}
    if kind == "none":
        return None
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise _invalid("tool_choice.name", "expected a non-empty string")
        return {"tool": {"name": name}}
    raise _invalid("tool_choice.type", f"{kind!r} is not one of auto, any, tool, none")


# ---- response -------------------------------------------------------------------------------------------


def _content(block: dict[str, Any]) -> dict[str, Any] | None:
    """One Converse answer block as an Anthropic content block (None: nothing Anthropic has)."""
    if isinstance(block.get("text"), str):
        return {"type": "text", "text": block["text"]}
    reasoning = block.get("reasoningContent")
    if isinstance(reasoning, dict):
        text = reasoning.get("reasoningText")
        if isinstance(text, dict) and isinstance(text.get("text"), str):
            signature = text.get("signature")
            return {"type": "thinking", "thinking": text["text"], "signature": signature if signature else ""}
        if isinstance(reasoning.get("redactedContent"), str):
            return {"type": "redacted_thinking", "data": reasoning["redactedContent"]}
        return None
    use = block.get("toolUse")
    if isinstance(use, dict):
        tool_input = use.get("input")
        return {
            "type": "tool_use",
            "id": use.get("toolUseId"),
            "name": use.get("name"),
            "input": tool_input if isinstance(tool_input, dict) else {},
        }
    return None


def anthropic_message(response: dict[str, Any], message_id: str, model: str) -> dict[str, Any]:
    """A Converse answer as an Anthropic ``message``."""
    output = response.get("output")
    message = output.get("message") if isinstance(output, dict) else None
    content = []
    for block in (message.get("content") if isinstance(message, dict) else None) or ():
        converted = _content(block) if isinstance(block, dict) else None
        if converted is not None:
            content.append(converted)
    stop_reason = response.get("stopReason")
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP_REASONS.get(stop_reason if isinstance(stop_reason, str) else "", "end_turn"),
        "stop_sequence": None,
        "usage": anthropic_usage(usage_from_bedrock(response.get("usage"))),
    }


class AnthropicToBedrock(BedrockTranslator):
    """One attempt's translation; stream state lives here (see the module docstring for the mapping)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._events = MessagesEventWriter()  # the client's stream
        self._started = False
        self._stop_reason: str | None = None
        self._blocks: dict[int, tuple[int, str]] = {}  # Bedrock contentBlockIndex → (client index, kind)
        self._open: set[int] = set()  # Bedrock indices whose client block is started and not stopped
        self._redacted: dict[int, bytearray] = {}  # redacted reasoning, sent whole at its block's end
        self._betas: frozenset[str] | None = BEDROCK_CLAUDE_BETAS  # the anthropic-beta flags Bedrock is sent
        self._input_estimate = 0  # message_start's input_tokens: Bedrock reports usage only at the end

    def translate_request(self, request: ClientRequest, backend: Backend, model: str) -> UpstreamRequest:
        if backend.anthropic_betas is not None:
            self._betas = backend.anthropic_betas
        return super().translate_request(request, backend, model)

    def build(self, request: ClientRequest, model: str) -> dict[str, Any]:
        if request.stream:
            self._input_estimate = prompt_tokens(request.body)
        return build_request(request.body, request.headers.get("anthropic-beta"), self._betas)

    def remove_headers(self) -> tuple[str, ...]:
        return ANTHROPIC_HEADERS

    def error_body(self, status: int, error_type: str, message: str) -> bytes:
        return orjson.dumps({"type": "error", "error": {"type": error_type, "message": message}})

    @property
    def _id(self) -> str:
        return f"msg_bdrk_{self.answer_id}"

    def whole(self, response: dict[str, Any]) -> bytes:
        self.read_usage(response.get("usage"))
        message = anthropic_message(response, self._id, self._model)
        for block in message["content"]:
            if block["type"] == "text":
                self.answer.add(block["text"])
        return orjson.dumps(message)

    # -- streams --

    def _start(self, out: list[bytes]) -> None:
        if self._started:
            return
        self._started = True
        out.append(self._events.message_start(self._id, self._model, self._input_estimate))

    def _open_block(self, index: int, kind: str, block: dict[str, Any], out: list[bytes]) -> int:
        """The client index of Bedrock block ``index``, starting it as ``block`` the first time."""
        known = self._blocks.get(index)
        if known is not None:
            return known[0]
        position = len(self._blocks)
        self._blocks[index] = (position, kind)
        self._open.add(index)
        out.append(self._events.block_start(position, block))
        return position

    def on_event(self, kind: str, payload: dict[str, Any], out: list[bytes]) -> None:
        index = payload.get("contentBlockIndex")
        if kind == "messageStart":
            self._start(out)
        elif kind == "contentBlockStart" and isinstance(index, int):
            self._start(out)
            start = payload.get("start")
            use = start.get("toolUse") if isinstance(start, dict) else None
            if isinstance(use, dict):
                block = {"type": "tool_use", "id": use.get("toolUseId"), "name": use.get("name"), "input": {}}
                self._open_block(index, "tool_use", block, out)
        elif kind == "contentBlockDelta" and isinstance(index, int):
            self._start(out)
            delta = payload.get("delta")
            if isinstance(delta, dict):
                self._delta(index, delta, out)
        elif kind == "contentBlockStop" and isinstance(index, int):
            self._stop_block(index, out)
        elif kind == "messageStop":
            self._start(out)
            reason = payload.get("stopReason")
            self._stop_reason = STOP_REASONS.get(reason if isinstance(reason, str) else "", "end_turn")
            for open_index in sorted(self._open | set(self._redacted)):
                self._stop_block(open_index, out)
        elif kind == "metadata":
            self.read_usage(payload.get("usage"))
            if self._stop_reason is not None:
                self._finish(out)

    def _delta(self, index: int, delta: dict[str, Any], out: list[bytes]) -> None:
        text = delta.get("text")
        if isinstance(text, str):
            position = self._open_block(index, "text", {"type": "text", "text": ""}, out)
            if text:
                self.answer.add(text)
                out.append(self._block_delta(position, {"type": "text_delta", "text": text}))
            return
        reasoning = delta.get("reasoningContent")
        if isinstance(reasoning, dict):
            redacted = reasoning.get("redactedContent")
            if isinstance(redacted, str):
                with contextlib.suppress(binascii.Error, ValueError):  # not base64: nothing to pass on
                    self._redacted.setdefault(index, bytearray()).extend(base64.b64decode(redacted))
                return
            opening = {"type": "thinking", "thinking": "", "signature": ""}
            position = self._open_block(index, "thinking", opening, out)
            thought, signature = reasoning.get("text"), reasoning.get("signature")
            if isinstance(thought, str) and thought:
                out.append(self._block_delta(position, {"type": "thinking_delta", "thinking": thought}))
            if isinstance(signature, str) and signature:
                out.append(self._block_delta(position, {"type": "signature_delta", "signature": signature}))
            return
        use = delta.get("toolUse")
        known = self._blocks.get(index)
        if isinstance(use, dict) and known is not None and known[1] == "tool_use":
            arguments = use.get("input")
            if isinstance(arguments, str) and arguments:
                out.append(self._block_delta(known[0], {"type": "input_json_delta", "partial_json": arguments}))

    def _block_delta(self, position: int, delta: dict[str, Any]) -> bytes:
        return self._events.block_delta(position, delta)

    def _stop_block(self, index: int, out: list[bytes]) -> None:
        redacted = self._redacted.pop(index, None)
        if redacted is not None and index not in self._blocks:
            block = {"type": "redacted_thinking", "data": base64.b64encode(bytes(redacted)).decode()}
            self._open_block(index, "redacted_thinking", block, out)
        if index in self._open:
            self._open.discard(index)
            out.append(self._events.block_stop(self._blocks[index][0]))

    def _finish(self, out: list[bytes]) -> None:
        self._finished = True
        out.append(self._events.message_end(self._stop_reason or "end_turn", self.usage))

    def on_error(self, status: int, error_type: str, message: str, out: list[bytes]) -> None:
        out.append(self._events.error(error_type, message))

    def on_end(self, out: list[bytes]) -> None:
        if self._stop_reason is not None:
            self._finish(out)  # no metadata event: the answer is complete, its usage unknown
        else:  # cut short: the events so far, then the router's error event
            raise stream_cut(PROVIDER, "`messageStop`", b"".join(out))
