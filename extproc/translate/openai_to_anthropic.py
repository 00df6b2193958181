"""OpenAI Chat Completions client → Anthropic Messages API backend.

The request is rebuilt (not edited in place): the two APIs share no body layout. Mapping decisions:

* ``system`` and ``developer`` messages, wherever they are, become the top-level ``system`` text blocks in
  order (Anthropic has no mid-conversation system turn).
* ``tool`` messages become ``tool_result`` blocks of a user turn; consecutive turns of one role are merged
  (Anthropic wants user/assistant alternation), so parallel tool results land in one user turn.
* ``max_completion_tokens`` (else ``max_tokens``) → ``max_tokens``, which Anthropic requires: **4096** when
  the client set none, a size every current Claude model accepts that leaves room for a real answer.
* ``reasoning_effort`` → ``thinking: {type: enabled, budget_tokens}``: minimal 1024, low 2048, medium 8192,
  high 16384, xhigh 32768; ``none`` → no thinking. OpenAI counts reasoning inside the completion limit,
  so a client limit is kept as ``max_tokens`` and the budget is cut to fit under it (a limit too small
  for Anthropic's 1024-token minimum → 422); without a client limit, ``max_tokens`` = budget + 4096.
  An Anthropic-style ``thinking`` object sent by the client is passed as is and wins.
* Thinking comes back as ``message.reasoning_content`` (``delta.reasoning_content`` when streamed), the
  field DeepSeek, vLLM and LiteLLM clients read, and as ``reasoning_details`` in OpenRouter's shape, which
  keeps what a replay needs: ``{"type": "reasoning.text", "text", "signature", "format": "anthropic-claude-v1",
  "index"}`` per thinking block and ``{"type": "reasoning.encrypted", "data", …}`` per redacted one (streamed:
  the text in pieces, the signature when Anthropic sends it, merged by ``index``). An assistant message sent
  back with its ``reasoning_details`` gets its signed ``thinking`` / ``redacted_thinking`` blocks first, so a
  thinking + tool-use loop replays turn after turn; details without a signature are dropped (Anthropic
  refuses unsigned thinking).
* ``parallel_tool_calls: false`` → ``disable_parallel_tool_use`` on the ``tool_choice``.
* ``safety_identifier`` (else the older ``user``) → ``metadata.user_id``. ``top_k`` and ``cache_control``
  on content parts and tools (common OpenAI-SDK extensions for Claude) are passed through.
* Not expressible → 422 naming the field: ``n`` > 1, ``logprobs``/``top_logprobs``, non-zero penalties,
  ``logit_bias``, ``response_format`` other than text, audio, ``prediction``, ``web_search_options``,
  the deprecated ``functions``/``function`` role, non-function tools, audio and non-PDF file parts.
  ``seed``, ``store``, ``metadata``, ``service_tier`` and unknown fields are dropped.
* ``temperature``/``top_p`` go as they are: values only Anthropic refuses (temperature > 1, sampling
  with thinking, a forced tool with thinking) get Anthropic's own 400, translated, rather than a guess.
* Path: the backend prefix (``/v1`` unless the AIServiceBackend sets one) + ``/messages``, with
  ``anthropic-version: 2023-06-01`` (pinned: later versions drop ``temperature``/``top_p``/``top_k``). The
  client's ``authorization`` is removed (the gateway adds ``x-api-key`` from the AnthropicAPIKey policy).
  Claude on Bedrock and Vertex differ only in the wire (:class:`~anthropic_common.MessagesWire`: path, body
  keys, stream framing, error shape); their translators are this class with another ``wire``
  (``aws_anthropic.py``, ``gcp_anthropic.py``).
* Answers: ``chat.completion`` (chunks) with Anthropic's ``msg_…`` id; stop reasons per
  :data:`FINISH_REASONS`; usage normalised with cache reads as ``cached_tokens``; provider
  errors, JSON or not, in OpenAI's error shape with the status kept; an ``error`` event mid-stream becomes
  an error chunk, and only ``message_stop`` yields ``data: [DONE]``. Anthropic's ``ping`` events and comment
  lines become the SSE comment ``: ping`` (skipped by the openai SDK), so long thinking does not time a client out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import orjson

from tokenvoy.config.model import Backend
from tokenvoy.extproc.errors import GatewayError, UpstreamShapeError, openai_error_body, untranslatable_field
from tokenvoy.extproc.errors import invalid_field as _invalid
from tokenvoy.extproc.sse import KEEPALIVE
from tokenvoy.extproc.translate.anthropic_common import (
    ANTHROPIC_API,
    ANTHROPIC_VERSION,
    ERROR_STATUS,
    MessagesWire,
    broken_stream,
    merge_usage,
    usage_from_anthropic,
)
from tokenvoy.extproc.translate.base import ClientRequest, HeaderChanges, TranslatorBase, UpstreamRequest
from tokenvoy.extproc.translate.bodies import KEEP_ALIVE, WholeBody, stream_items
from tokenvoy.extproc.translate.openai_common import (
    ChatChunkWriter,
    data_uri,
    function_calls,
    openai_usage,
    reasoning_encrypted_detail,
    reasoning_text_detail,
    refuse_non_defaults,
    thinking_blocks,
)
from tokenvoy.extproc.translate.shapes import answer_object, require, stream_cut

DEFAULT_MAX_TOKENS = 4096
MIN_THINKING_BUDGET = 1024
REASONING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 32768}
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
PROVIDER = "the Anthropic-schema provider"
# Why each chat field is refused unless it has its default value (openai_common.DEFAULT_VALUES).
_DEFAULT_ONLY = {
    "n": "Anthropic returns one choice per request",
    "logprobs": "Anthropic does not return log probabilities",
    "top_logprobs": "Anthropic does not return log probabilities",
    "frequency_penalty": "Anthropic has no frequency penalty",
    "presence_penalty": "Anthropic has no presence penalty",
    "logit_bias": "Anthropic has no logit bias",
    "audio": "Anthropic does not produce audio",
    "modalities": "Anthropic only produces text",
    "prediction": "Anthropic has no predicted outputs",
    "web_search_options": "use an Anthropic server tool instead",
    "functions": "use `tools`",
    "function_call": "use `tool_choice`",
}


TARGET = "an Anthropic backend"


def _unsupported(field: str, why: str) -> GatewayError:
    return untranslatable_field(field, TARGET, why)


# ---- request --------------------------------------------------------------------------------------------


def build_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The Anthropic Messages body for an OpenAI chat completion body (raises GatewayError)."""
    refuse_non_defaults(body, _DEFAULT_ONLY, TARGET)
    response_format = body.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        raise _unsupported("response_format", "Anthropic has no JSON mode; describe the format in the prompt")

    system, messages = convert_messages(body.get("messages"))
    out: dict[str, Any] = {"model": model}
    if system:
        out["system"] = system
    out["messages"] = messages
    limit = _limit(body)
    out["max_tokens"] = limit or DEFAULT_MAX_TOKENS

    thinking = body.get("thinking")
    if isinstance(thinking, dict):
        out["thinking"] = thinking
    elif (effort := body.get("reasoning_effort")) is not None and effort != "none":
        budget = REASONING_BUDGETS.get(effort) if isinstance(effort, str) else None
        if budget is None:
            raise _invalid("reasoning_effort", f"{effort!r} is not one of none, {', '.join(REASONING_BUDGETS)}")
        if limit is None:
            out["max_tokens"] = budget + DEFAULT_MAX_TOKENS
        else:
            budget = min(budget, limit - 1)
            if budget < MIN_THINKING_BUDGET:
                raise _unsupported(
                    "reasoning_effort",
                    f"Anthropic's thinking needs at least {MIN_THINKING_BUDGET} tokens under the completion "
                    f"limit, and max_completion_tokens is {limit}",
                )
        out["thinking"] = {"type": "enabled", "budget_tokens": budget}

    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        out["stop_sequences"] = stop
    elif stop is not None and stop != []:
        raise _invalid("stop", "expected a string or an array of strings")
    for key in ("temperature", "top_p", "top_k"):
        if body.get(key) is not None:
            out[key] = body[key]
    user = body.get("safety_identifier") or body.get("user")  # OpenAI's newer name first
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}

    tools = body.get("tools")
    if tools:
        out["tools"] = convert_tools(tools)
        choice = convert_tool_choice(body.get("tool_choice"))
        if body.get("parallel_tool_calls") is False and choice.get("type") != "none":
            choice = {**choice, "disable_parallel_tool_use": True}
        if choice != {"type": "auto"}:
            out["tool_choice"] = choice
    if body.get("stream") is True:
        out["stream"] = True
    return out


def _limit(body: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _invalid(key, "expected a positive integer")
        return value
    return None


def convert_messages(messages: object) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(system blocks, messages)``; same-role neighbours merged so roles alternate."""
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages", "expected a non-empty array of messages")
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _invalid(where, "expected an object")
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system.extend(_text_blocks(content, f"{where}.content"))
            continue
        if role == "user":
            blocks = _user_blocks(content, f"{where}.content")
            anthropic_role = "user"
        elif role == "assistant":
            blocks = _assistant_blocks(message, where)
            anthropic_role = "assistant"
        elif role == "tool":
            blocks = [_tool_result(message, where)]
            anthropic_role = "user"
        elif role == "function":
            raise _unsupported(f"{where}.role", "the deprecated `function` role has no tool_call_id; use `tool`")
        else:
            raise _invalid(f"{where}.role", f"unknown role {role!r}")
        if not blocks:
            continue  # Anthropic rejects empty turns; an empty OpenAI message says nothing
        if out and out[-1]["role"] == anthropic_role:
            _append_turn(out[-1], blocks)
        else:
            out.append({"role": anthropic_role, "content": blocks})
    return system, out


def _append_turn(turn: dict[str, Any], blocks: list[dict[str, Any]]) -> None:
    """Merge into the previous same-role turn, keeping tool results first as Anthropic requires."""
    content = turn["content"]
    if any(b.get("type") == "tool_result" for b in blocks) and content and content[-1].get("type") != "tool_result":
        results = [b for b in blocks if b.get("type") == "tool_result"]
        others = [b for b in blocks if b.get("type") != "tool_result"]
        leading = 0
        while leading < len(content) and content[leading].get("type") == "tool_result":
            leading += 1
        turn["content"] = [*content[:leading], *results, *content[leading:], *others]
        return
    content.extend(blocks)


def _text_blocks(content: object, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _invalid(where, "expected a string or an array of content parts")
    blocks = []
    for index, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
            raise _unsupported(f"{where}[{index}]", "only text parts are allowed here")
        key = "text" if part["type"] == "text" else "refusal"
        text = part.get(key)
        if not isinstance(text, str):
            raise _invalid(f"{where}[{index}].{key}", "expected a string")
        if text:
            blocks.append(_with_cache_control({"type": "text", "text": text}, part))
    return blocks


def _user_blocks(content: object, where: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return _text_blocks(content, where)
    blocks = []
    for index, part in enumerate(content):
        at = f"{where}[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.extend(_text_blocks([part], where))
        elif kind == "image_url":
            blocks.append(_with_cache_control(_image(part.get("image_url"), f"{at}.image_url"), part))
        elif kind == "file":
            blocks.append(_with_cache_control(_document(part.get("file"), f"{at}.file"), part))
        elif kind == "input_audio":
            raise _unsupported(at, "Anthropic does not take audio input")
        else:
            raise _unsupported(at, f"content part type {kind!r} has no Anthropic equivalent")
    return blocks


def _with_cache_control(block: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    cache_control = part.get("cache_control")
    if isinstance(cache_control, dict):
        block["cache_control"] = cache_control
    return block


def _image(image_url: object, where: str) -> dict[str, Any]:
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str) or not url:
        raise _invalid(f"{where}.url", "expected a URL string")
    parsed = data_uri(url)
    if parsed is not None:
        media_type, data = parsed
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise _unsupported(f"{where}.url", "only base64 data URIs and http(s) URLs can be sent to Anthropic")


def _document(file: object, where: str) -> dict[str, Any]:
    data = file.get("file_data") if isinstance(file, dict) else None
    parsed = data_uri(data) if isinstance(data, str) else None
    if parsed is None or parsed[0] != "application/pdf":
        raise _unsupported(where, "only PDF files given inline as a base64 `file_data` data URI are supported")
    return {"type": "document", "source": {"type": "base64", "media_type": parsed[0], "data": parsed[1]}}


def _assistant_blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    if message.get("function_call") is not None:
        raise _unsupported(f"{where}.function_call", "use `tool_calls`")
    blocks = thinking_blocks(message, where)
    blocks += _text_blocks(message.get("content"), f"{where}.content")
    for call in function_calls(message, where, "an Anthropic backend"):
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments})
    return blocks


def _tool_result(message: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise _invalid(f"{where}.tool_call_id", "a tool message needs the id of the call it answers")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    else:
        texts = _text_blocks(content, f"{where}.content")
        if texts:
            block["content"] = texts
    return block


def convert_tools(tools: object) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _invalid("tools", "expected an array")
    out = []
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise _unsupported(where, f"only function tools can be sent to Anthropic, not {kind!r}")
        function = tool.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            raise _invalid(f"{where}.function.name", "expected a non-empty string")
        converted: dict[str, Any] = {"name": name}
        description = function.get("description")
        if isinstance(description, str) and description:
            converted["description"] = description
        parameters = function.get("parameters")
        converted["input_schema"] = parameters if isinstance(parameters, dict) else {"type": "object", "properties": {}}
        out.append(_with_cache_control(converted, tool))
    return out


def convert_tool_choice(choice: object) -> dict[str, Any]:
    if choice is None or choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name:
            return {"type": "tool", "name": name}
        raise _invalid("tool_choice.function.name", "expected a non-empty string")
    raise _unsupported("tool_choice", f"{choice!r} has no Anthropic equivalent")


# ---- response -------------------------------------------------------------------------------------------


def _tool_call(block: dict[str, Any]) -> dict[str, Any]:
    tool_input = block.get("input")
    return {
        "id": block.get("id"),
        "type": "function",
        "function": {"name": block.get("name"), "arguments": orjson.dumps(tool_input or {}).decode()},
    }


def chat_completion(message: dict[str, Any], created: int) -> dict[str, Any]:
    """An Anthropic Message as an OpenAI ``chat.completion``."""
    texts: list[str] = []
    thinking: list[str] = []
    details: list[dict[str, Any]] = []
    tool_calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            thinking.append(block["thinking"])
            details.append(reasoning_text_detail(block["thinking"], block.get("signature"), len(details)))
        elif kind == "redacted_thinking" and isinstance(block.get("data"), str):
            details.append(reasoning_encrypted_detail(block["data"], len(details)))
        elif kind == "tool_use":
            tool_calls.append(_tool_call(block))
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
    if thinking:
        reply["reasoning_content"] = "".join(thinking)
    if details:
        reply["reasoning_details"] = details
    if tool_calls:
        reply["tool_calls"] = tool_calls
    usage = message.get("usage")
    out: dict[str, Any] = {
        "id": message.get("id"),
        "object": "chat.completion",
        "created": created,
        "model": message.get("model"),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": FINISH_REASONS.get(
                    stop if isinstance(stop := message.get("stop_reason"), str) else "", "stop"
                ),
            }
        ],
    }
    if isinstance(usage, dict):
        out["usage"] = openai_usage(usage_from_anthropic(usage))
    return out


class OpenAIToAnthropic(TranslatorBase):
    """One attempt's translation; ``clock`` is injectable so chunks' ``created`` is testable."""

    wire: ClassVar[MessagesWire] = ANTHROPIC_API  # where Claude is reached; the clouds' subclasses swap it

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self._clock = clock
        self._stream = False
        self._model = ""  # the model asked for: the answer's model when the provider names none
        self._body = WholeBody()
        self._parser = self.wire.stream_reader()
        self._writer = ChatChunkWriter(self.answer)  # the client's stream
        self._raw_usage: dict[str, int] = {}
        self._tool_indices: dict[int, int] = {}  # Anthropic block index → OpenAI tool_calls index
        self._reasoning_indices: dict[int, int] = {}  # Anthropic block index → reasoning_details index
        self._tool_arguments_sent: set[int] = set()
        self._finished = False

    def translate_request(self, request: ClientRequest, backend: Backend, model: str) -> UpstreamRequest:
        body = build_request(request.body, model)
        self._stream = body.get("stream") is True
        self._model = model
        self.answer.keep = request.capture_output
        self._writer.read_request(request.body)
        wire = self.wire
        headers = {"content-type": "application/json"}
        if wire.version_header:
            headers["anthropic-version"] = ANTHROPIC_VERSION
        return UpstreamRequest(
            path=wire.path(backend, model, self._stream),
            body=orjson.dumps(wire.rebuilt_body(body, request.headers)),
            set_headers=headers,
            remove_headers=("authorization",),
        )

    def translate_response_headers(self, headers: dict[str, str]) -> HeaderChanges | None:
        if self._stream:
            if self.wire.reframes_stream:  # e.g. an AWS event stream, answered as SSE
                return HeaderChanges({"content-type": "text/event-stream"})
            return None  # still text/event-stream; the router drops content-length for streams
        return HeaderChanges(remove_headers=("content-length",))  # the body is rewritten

    def translate_response_body(self, chunk: bytes, end_of_stream: bool) -> bytes | None:
        if self._stream:
            return self._translate_stream(chunk, end_of_stream)
        raw = self._body.collect(chunk, end_of_stream)
        if raw is None:
            return b""
        message = answer_object(raw, PROVIDER)  # not Anthropic's answer: a 502, not an invented empty one
        require(message, "content", list, PROVIDER)
        self._take_message(message)
        completion = chat_completion(message, int(self._clock()))
        if self.answer.keep and isinstance(completion["choices"][0]["message"].get("content"), str):
            self.answer.add(completion["choices"][0]["message"]["content"])
        return orjson.dumps(completion)

    def translate_error(self, status: int, headers: Mapping[str, str], body: bytes) -> bytes | None:
        """Errors are rewritten into OpenAI's JSON shape, whatever the provider's body was."""
        error_type, message = self.wire.error_details(status, headers, body)
        return openai_error_body(GatewayError(status, message, error_type))

    def _take_message(self, message: dict[str, Any]) -> None:
        model = message.get("model")
        if not isinstance(model, str) or not model:
            model = message["model"] = self._model  # OpenAI's answers always name one
        if model:
            self.response_model = self._writer.model = model
        if self._writer.id is None and isinstance(message.get("id"), str):
            self._writer.id = message["id"]
        self._raw_usage = merge_usage(self._raw_usage, message.get("usage"))
        if self._raw_usage:
            self.report_usage(usage_from_anthropic(self._raw_usage))

    # -- streams --

    def _translate_stream(self, chunk: bytes, end_of_stream: bool) -> bytes:
        out: list[bytes] = []
        for item in stream_items(self._parser, chunk, end_of_stream):
            if self._finished:
                break
            if item == KEEP_ALIVE:
                out.append(KEEPALIVE)  # a keep-alive from the provider keeps the client's alive too
            elif isinstance(item, dict):
                self._stream_event(item, out)
        broken = broken_stream(self._parser)
        if broken and not self._finished:
            self._finished = True
            raise UpstreamShapeError(broken, b"".join(out))
        if end_of_stream and not self._finished:  # cut short, or not Anthropic's stream at all
            raise stream_cut(PROVIDER, "`message_stop`", b"".join(out))
        return b"".join(out)

    def _stream_event(self, event: dict[str, Any], out: list[bytes]) -> None:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message")
            self._writer.created = int(self._clock())
            if isinstance(message, dict):
                self._take_message(message)
            out.append(self._writer.chunk({"role": "assistant", "content": ""}))
        elif kind == "content_block_start":
            self._block_start(event, out)
        elif kind == "content_block_delta":
            self._block_delta(event, out)
        elif kind == "content_block_stop":
            position = self._tool_position(event)
            if position is not None and position not in self._tool_arguments_sent:
                # A tool without parameters streams no JSON at all; OpenAI clients expect "{}" to parse.
                self._tool_arguments_sent.add(position)
                out.append(self._writer.chunk({"tool_calls": [{"index": position, "function": {"arguments": "{}"}}]}))
        elif kind == "message_delta":
            self._raw_usage = merge_usage(self._raw_usage, event.get("usage"))
            if self._raw_usage:
                self.report_usage(usage_from_anthropic(self._raw_usage))
            delta = event.get("delta")
            stop_reason = delta.get("stop_reason") if isinstance(delta, dict) else None
            if isinstance(stop_reason, str):
                out.append(self._writer.chunk({}, FINISH_REASONS.get(stop_reason, "stop")))
        elif kind == "message_stop":
            self._finished = True
            out.append(self._writer.end(self.usage))
        elif kind == "error":
            self._finished = True  # Anthropic ends the stream after an error event
            error = event.get("error")
            error = error if isinstance(error, dict) else {}
            error_type = error.get("type") if isinstance(error.get("type"), str) else "api_error"
            message = error.get("message") if isinstance(error.get("message"), str) else "provider stream error"
            status = ERROR_STATUS.get(error_type, 500)
            out.append(self._writer.error(GatewayError(status, message, error_type)))
        elif kind == "ping":
            out.append(KEEPALIVE)  # Anthropic's keep-alive during long thinking: the client's read timeout resets
        # event types added later by Anthropic carry nothing for an OpenAI client

    def _block_start(self, event: dict[str, Any], out: list[bytes]) -> None:
        block = event.get("content_block")
        if not isinstance(block, dict):
            return
        kind = block.get("type")
        if kind == "text" and block.get("text"):
            out.append(self._writer.chunk({"content": block["text"]}))
        elif kind in ("thinking", "redacted_thinking"):
            position = len(self._reasoning_indices)
            index = event.get("index")
            if isinstance(index, int):
                self._reasoning_indices[index] = position
            if kind == "redacted_thinking" and isinstance(block.get("data"), str):
                out.append(
                    self._writer.chunk({"reasoning_details": [reasoning_encrypted_detail(block["data"], position)]})
                )
            elif kind == "thinking" and block.get("thinking"):
                detail = reasoning_text_detail(block["thinking"], block.get("signature"), position)
                out.append(self._writer.chunk({"reasoning_content": block["thinking"], "reasoning_details": [detail]}))
        elif kind == "tool_use":
            index = event.get("index")
            position = len(self._tool_indices)
            if isinstance(index, int):
                self._tool_indices[index] = position
            tool_input = block.get("input")
            arguments = ""
            if isinstance(tool_input, dict) and tool_input:  # Anthropic sends {} and streams the JSON after
                arguments = orjson.dumps(tool_input).decode()
                self._tool_arguments_sent.add(position)
            function = {"name": block.get("name"), "arguments": arguments}
            call = {"index": position, "id": block.get("id"), "type": "function", "function": function}
            out.append(self._writer.chunk({"tool_calls": [call]}))

    def _block_delta(self, event: dict[str, Any], out: list[bytes]) -> None:
        delta = event.get("delta")
        if not isinstance(delta, dict):
            return
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            out.append(self._writer.chunk({"content": delta["text"]}))
        elif kind == "thinking_delta" and delta.get("thinking"):
            detail = reasoning_text_detail(delta["thinking"], None, self._reasoning_position(event))
            out.append(self._writer.chunk({"reasoning_content": delta["thinking"], "reasoning_details": [detail]}))
        elif kind == "signature_delta" and delta.get("signature"):
            detail = reasoning_text_detail("", delta["signature"], self._reasoning_position(event))
            out.append(self._writer.chunk({"reasoning_details": [detail]}))
        elif kind == "input_json_delta" and delta.get("partial_json"):
            position = self._tool_position(event)
            if position is not None:
                self._tool_arguments_sent.add(position)
                call = {"index": position, "function": {"arguments": delta["partial_json"]}}
                out.append(self._writer.chunk({"tool_calls": [call]}))

    def _reasoning_position(self, event: dict[str, Any]) -> int:
        index = event.get("index")
        return self._reasoning_indices.get(index, 0) if isinstance(index, int) else 0

    def _tool_position(self, event: dict[str, Any]) -> int | None:
        """The OpenAI ``tool_calls`` index of the Anthropic content block this event is about."""
        index = event.get("index")
        return self._tool_indices.get(index) if isinstance(index, int) else None
