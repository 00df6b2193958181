"""OpenAI Chat Completions client → AWS Bedrock Converse / ConverseStream backend (schema ``AWSBedrock``).

The request is rebuilt (the two APIs share no body layout). Mapping decisions:

* Path ``/model/{model}/converse`` (``converse-stream`` for ``stream: true``), the model id URL-encoded whole
  (inference profile ARNs hold ``:`` and ``/``); signing is the credentials layer's job.
* ``system`` and ``developer`` messages, wherever they are, become the top-level ``system`` blocks in order.
  ``tool`` messages become ``toolResult`` blocks of a user turn; same-role neighbours are merged (Bedrock
  wants user/assistant alternation), tool results first, so parallel results land in one turn.
* User content: text, images as base64 ``data:`` URIs (png, jpeg, gif, webp) → ``image`` blocks, ``s3://``
  URLs → an ``s3Location`` source; ``file`` parts given as a base64 ``file_data`` data URI (pdf, csv, doc(x),
  xls(x), html, txt, md) → ``document`` blocks named after the file. http(s) image URLs → 422 (Bedrock
  fetches nothing). ``cache_control`` on a content part or tool (the common OpenAI-SDK extension for
  Claude) → a ``cachePoint`` block after it.
* Assistant ``tool_calls`` → ``toolUse`` blocks (arguments parsed: they must be a JSON object).
* ``tools`` → ``toolConfig.tools[].toolSpec`` (``parameters`` → ``inputSchema.json``). ``tool_choice``:
  ``auto`` → ``auto`` (Bedrock's default, not sent), ``required`` → ``any``, a named function → ``tool``;
  ``none`` → the tools are not sent, and a history with tool calls makes it a 422 (Bedrock has no ``none``
  and reads tool history only with the tools declared). ``parallel_tool_calls`` is dropped (Converse
  has no switch for it).
* ``max_completion_tokens`` (else ``max_tokens``) → ``inferenceConfig.maxTokens`` (none sent when the
  client sets none: Bedrock applies the model's default); ``temperature``, ``top_p`` and ``stop`` →
  ``inferenceConfig``; ``top_k`` → ``additionalModelRequestFields.top_k``.
* ``reasoning_effort`` → Claude's ``additionalModelRequestFields.thinking`` with the same budgets and
  limits as the Anthropic backend (see ``openai_to_anthropic``); a client ``thinking`` object wins. Other
  model families refuse the field with Bedrock's own 400. Reasoning comes back as
  ``message.reasoning_content`` (``delta.reasoning_content`` when streamed) and, signature and redacted
  reasoning included, as OpenRouter-style ``reasoning_details`` (see ``openai_to_anthropic``); an assistant
  message sent back with them gets its ``reasoningContent`` blocks first, so thinking + tool use replays.
* ``response_format`` ``json_schema`` → ``outputConfig.textFormat`` (structured output); ``json_object`` →
  422 (Bedrock takes only a schema).
* Not expressible → 422 naming the field: ``n`` > 1, ``logprobs``/``top_logprobs``, penalties,
  ``logit_bias``, audio, ``prediction``, ``web_search_options``, the deprecated ``functions`` and
  ``function`` role, non-function tools. ``seed``, ``store``, ``metadata``, ``user``, ``service_tier``
  and unknown fields are dropped.
* Answers: ``chat.completion`` (chunks) with ``chatcmpl-`` + Bedrock's request id and the model id sent
  (Converse names none); stop reasons per :data:`FINISH_REASONS`; usage normalised with cache
  reads as ``cached_tokens``. Streams are translated event by event: the role chunk at ``messageStart``,
  text, reasoning and tool-call deltas (tool calls numbered 0, 1, … in order of appearance), the finish
  reason at ``messageStop``, then the usage chunk (when ``stream_options.include_usage``) and
  ``data: [DONE]`` after ``metadata``. Errors keep their status and Bedrock's type (``ThrottlingException``)
  in OpenAI's error shape; a mid-stream ``exception`` or a cut stream becomes an error chunk (no
  ``[DONE]``). Converse sends no keep-alive: an event that gives the client nothing (an empty delta, an event
  type added later; not a block's end) becomes the SSE comment ``: ping``, so long thinking keeps the client.
"""

from __future__ import annotations

from typing import Any

import orjson

from tokenvoy.extproc.errors import GatewayError, openai_error_body
from tokenvoy.extproc.errors import invalid_field as _invalid
from tokenvoy.extproc.sse import KEEPALIVE
from tokenvoy.extproc.translate.base import ClientRequest
from tokenvoy.extproc.translate.bedrock_common import (
    PROVIDER,
    TARGET,
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
)
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
from tokenvoy.extproc.translate.openai_to_anthropic import DEFAULT_MAX_TOKENS, MIN_THINKING_BUDGET, REASONING_BUDGETS
from tokenvoy.extproc.translate.shapes import stream_cut

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
# Why each chat field is refused unless it has its default value (openai_common.DEFAULT_VALUES).
_DEFAULT_ONLY = {
    "n": "Bedrock returns one choice per request",
    "logprobs": "Converse does not return log probabilities",
    "top_logprobs": "Converse does not return log probabilities",
    "frequency_penalty": "Converse has no frequency penalty",
    "presence_penalty": "Converse has no presence penalty",
    "logit_bias": "Converse has no logit bias",
    "audio": "Converse does not produce audio",
    "modalities": "Converse only produces text here",
    "prediction": "Converse has no predicted outputs",
    "web_search_options": "Bedrock has no web search option",
    "functions": "use `tools`",
    "function_call": "use `tool_choice`",
}


# ---- request --------------------------------------------------------------------------------------------


def build_request(body: dict[str, Any]) -> dict[str, Any]:
    """The Converse body for an OpenAI chat completion body (raises GatewayError); the model goes in the
    path, not the body."""
    refuse_non_defaults(body, _DEFAULT_ONLY, TARGET)
    system, messages = convert_messages(body.get("messages"))
    out: dict[str, Any] = {"messages": messages}
    if system:
        out["system"] = system

    limit = _limit(body)
    max_tokens = limit
    additional: dict[str, Any] = {}
    thinking = body.get("thinking")
    if isinstance(thinking, dict):
        additional["thinking"] = thinking
    elif (effort := body.get("reasoning_effort")) is not None and effort != "none":
        budget = REASONING_BUDGETS.get(effort) if isinstance(effort, str) else None
        if budget is None:
            raise _invalid("reasoning_effort", f"{effort!r} is not one of none, {', '.join(REASONING_BUDGETS)}")
        if limit is None:
            max_tokens = budget + DEFAULT_MAX_TOKENS
        else:
            budget = min(budget, limit - 1)
            if budget < MIN_THINKING_BUDGET:
                raise unsupported(
                    "reasoning_effort",
                    f"Claude's thinking needs at least {MIN_THINKING_BUDGET} tokens under the completion limit, "
                    f"and max_completion_tokens is {limit}",
                )
        additional["thinking"] = {"type": "enabled", "budget_tokens": budget}
    top_k = body.get("top_k")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise _invalid("top_k", "expected a non-negative integer")
        additional["top_k"] = top_k

    config = inference_config(max_tokens, body.get("temperature"), body.get("top_p"), _stop(body.get("stop")))
    if config:
        out["inferenceConfig"] = config
    tools = body.get("tools")
    if tools is not None or body.get("tool_choice") is not None or has_tool_blocks(messages):
        specs = convert_tools(tools) if tools else []
        toolconfig = tool_config(specs, convert_tool_choice(body.get("tool_choice")), messages, "tool_choice")
        if toolconfig is not None:
            out["toolConfig"] = toolconfig
    if additional:
        out["additionalModelRequestFields"] = additional
    output = _output_config(body.get("response_format"))
    if output is not None:
        out["outputConfig"] = output
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


def _stop(stop: object) -> list[str] | None:
    if stop is None:
        return None
    sequences = [stop] if isinstance(stop, str) else stop
    if not isinstance(sequences, list) or not all(isinstance(s, str) for s in sequences):
        raise _invalid("stop", "expected a string or an array of strings")
    if any(not s for s in sequences):
        raise _invalid("stop", "stop sequences must be non-empty strings")
    return sequences


def _output_config(response_format: object) -> dict[str, Any] | None:
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise _invalid("response_format.json_schema", "expected an object with a `schema`")
        return json_schema_output(
            spec.get("schema"), spec.get("name"), spec.get("description"), "response_format.json_schema.schema"
        )
    if kind == "json_object":
        raise unsupported("response_format", "Bedrock's structured output needs a JSON schema: use `json_schema`")
    raise _invalid("response_format.type", f"{kind!r} is not one of text, json_schema, json_object")


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
        elif role == "user":
            append_turn(out, "user", _user_blocks(content, f"{where}.content"))
        elif role == "assistant":
            append_turn(out, "assistant", _assistant_blocks(message, where))
        elif role == "tool":
            append_turn(out, "user", [_tool_result(message, where)])
        elif role == "function":
            raise unsupported(f"{where}.role", "the deprecated `function` role has no tool_call_id; use `tool`")
        else:
            raise _invalid(f"{where}.role", f"unknown role {role!r}")
    return system, out


def _marked(block: dict[str, Any], part: dict[str, Any]) -> list[dict[str, Any]]:
    """The block, followed by a cache point when the part carries ``cache_control``."""
    point = cache_point(part.get("cache_control"))
    return [block, point] if point is not None else [block]


def _text_blocks(content: object, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise _invalid(where, "expected a string or an array of content parts")
    blocks: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
            raise unsupported(f"{where}[{index}]", "only text parts are allowed here")
        key = "text" if part["type"] == "text" else "refusal"
        text = part.get(key)
        if not isinstance(text, str):
            raise _invalid(f"{where}[{index}].{key}", "expected a string")
        if text:
            blocks.extend(_marked({"text": text}, part))
    return blocks


def _user_blocks(content: object, where: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return _text_blocks(content, where)
    blocks: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        at = f"{where}[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.extend(_text_blocks([part], where))
        elif kind == "image_url":
            blocks.extend(_marked(_image(part.get("image_url"), f"{at}.image_url"), part))
        elif kind == "file":
            blocks.extend(_marked(_document(part.get("file"), f"{at}.file"), part))
        elif kind == "input_audio":
            raise unsupported(at, "Converse does not take audio input")
        else:
            raise unsupported(at, f"content part type {kind!r} has no Bedrock equivalent")
    return blocks


def _image(image_url: object, where: str) -> dict[str, Any]:
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str) or not url:
        raise _invalid(f"{where}.url", "expected a URL string")
    parsed = data_uri(url)
    if parsed is not None:
        return image_block(parsed[0], parsed[1], f"{where}.url")
    if url.startswith("s3://"):
        extension = url.rsplit(".", 1)[-1].lower()
        image_format = {"jpg": "jpeg"}.get(extension, extension)
        if image_format not in ("png", "jpeg", "gif", "webp"):
            raise unsupported(f"{where}.url", "an S3 image needs a .png, .jpg, .jpeg, .gif or .webp name")
        return {"image": {"format": image_format, "source": {"s3Location": {"uri": url}}}}
    raise unsupported(f"{where}.url", "Bedrock fetches no URLs: send the image as a base64 data URI (or s3://)")


def _document(file: object, where: str) -> dict[str, Any]:
    data = file.get("file_data") if isinstance(file, dict) else None
    parsed = data_uri(data) if isinstance(data, str) else None
    if parsed is None:
        raise unsupported(where, "only files given inline as a base64 `file_data` data URI can be sent to Bedrock")
    name = file.get("filename") if isinstance(file, dict) else None
    return document_block(parsed[0], parsed[1], name if isinstance(name, str) else None, where)


def _assistant_blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    if message.get("function_call") is not None:
        raise unsupported(f"{where}.function_call", "use `tool_calls`")
    blocks = [_reasoning_block(block) for block in thinking_blocks(message, where)]
    blocks += _text_blocks(message.get("content"), f"{where}.content")
    for call in function_calls(message, where, TARGET):
        blocks.append({"toolUse": {"toolUseId": call.id, "name": call.name, "input": call.arguments}})
    return blocks


def _reasoning_block(block: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic thinking block (from ``reasoning_details``) as Converse's ``reasoningContent``."""
    if block["type"] == "redacted_thinking":
        return {"reasoningContent": {"redactedContent": block["data"]}}
    return {"reasoningContent": {"reasoningText": {"text": block["thinking"], "signature": block["signature"]}}}


def _tool_result(message: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise _invalid(f"{where}.tool_call_id", "a tool message needs the id of the call it answers")
    content = message.get("content")
    if isinstance(content, str):
        parts = [{"text": content}] if content else []
    else:
        parts = [b for b in _text_blocks(content, f"{where}.content") if "text" in b]
    return {"toolResult": {"toolUseId": call_id, "content": parts}}


def convert_tools(tools: object) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _invalid("tools", "expected an array")
    out: list[dict[str, Any]] = []
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise unsupported(where, f"only function tools can be sent to Bedrock, not {kind!r}")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise _invalid(f"{where}.function", "expected an object")
        spec = tool_spec(function.get("name"), function.get("description"), function.get("parameters"), where)
        out.extend(_marked(spec, tool))
    return out


def convert_tool_choice(choice: object) -> dict[str, Any] | None:
    """Bedrock's ``toolChoice``; None for ``none`` (no tool may be called)."""
    if choice is None or choice == "auto":
        return {"auto": {}}
    if choice == "required":
        return {"any": {}}
    if choice == "none":
        return None
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name:
            return {"tool": {"name": name}}
        raise _invalid("tool_choice.function.name", "expected a non-empty string")
    raise unsupported("tool_choice", f"{choice!r} has no Bedrock equivalent")


# ---- response -------------------------------------------------------------------------------------------


def chat_completion(response: dict[str, Any], completion_id: str, model: str, created: int) -> dict[str, Any]:
    """A Converse answer as an OpenAI ``chat.completion``."""
    output = response.get("output")
    message = output.get("message") if isinstance(output, dict) else None
    texts: list[str] = []
    reasoning: list[str] = []
    details: list[dict[str, Any]] = []
    tool_calls: list[dict[str, Any]] = []
    for block in (message.get("content") if isinstance(message, dict) else None) or ():
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif isinstance(block.get("reasoningContent"), dict):
            text = block["reasoningContent"].get("reasoningText")
            redacted = block["reasoningContent"].get("redactedContent")
            if isinstance(text, dict) and isinstance(text.get("text"), str):
                reasoning.append(text["text"])
                details.append(reasoning_text_detail(text["text"], text.get("signature"), len(details)))
            elif isinstance(redacted, str) and redacted:
                details.append(reasoning_encrypted_detail(redacted, len(details)))
        elif isinstance(block.get("toolUse"), dict):
            use = block["toolUse"]
            arguments = orjson.dumps(use.get("input") if use.get("input") is not None else {}).decode()
            function = {"name": use.get("name"), "arguments": arguments}
            tool_calls.append({"id": use.get("toolUseId"), "type": "function", "function": function})
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
    if reasoning:
        reply["reasoning_content"] = "".join(reasoning)
    if details:
        reply["reasoning_details"] = details
    if tool_calls:
        reply["tool_calls"] = tool_calls
    stop_reason = response.get("stopReason")
    out: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": FINISH_REASONS.get(stop_reason if isinstance(stop_reason, str) else "", "stop"),
            }
        ],
    }
    return out


class OpenAIToBedrock(BedrockTranslator):
    """One attempt's translation; stream state lives here (see the module docstring for the mapping)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._writer = ChatChunkWriter(self.answer)  # the client's stream
        self._started = False
        self._stop_seen = False
        self._tool_positions: dict[int, int] = {}  # Bedrock contentBlockIndex → OpenAI tool_calls index
        self._reasoning_positions: dict[int, int] = {}  # Bedrock contentBlockIndex → reasoning_details index
        self._arguments_sent: set[int] = set()

    def build(self, request: ClientRequest, model: str) -> dict[str, Any]:
        self._writer.read_request(request.body)
        return build_request(request.body)

    def error_body(self, status: int, error_type: str, message: str) -> bytes:
        return openai_error_body(GatewayError(status, message, error_type))

    @property
    def _id(self) -> str:
        return f"chatcmpl-{self.answer_id}"

    def whole(self, response: dict[str, Any]) -> bytes:
        completion = chat_completion(response, self._id, self._model, int(self._clock()))
        self.read_usage(response.get("usage"))
        if self.usage is not None:
            completion["usage"] = openai_usage(self.usage)
        content = completion["choices"][0]["message"]["content"]
        if isinstance(content, str):
            self.answer.add(content)
        return orjson.dumps(completion)

    # -- streams --

    def _start(self, out: list[bytes]) -> None:
        if not self._started:
            self._started = True
            writer = self._writer
            writer.id, writer.created, writer.model = self._id, int(self._clock()), self._model
            out.append(self._writer.chunk({"role": "assistant", "content": ""}))

    def on_event(self, kind: str, payload: dict[str, Any], out: list[bytes]) -> None:
        sent = len(out)
        self._on_event(kind, payload, out)
        if len(out) == sent and self._started and not self._finished and kind != "contentBlockStop":
            # Converse sends no keep-alive of its own; an event with nothing to show (an empty delta, an event
            # type added later) still proves the model is alive, so the client hears of it. A block's end
            # follows its last delta at once, so it needs none.
            out.append(KEEPALIVE)

    def _on_event(self, kind: str, payload: dict[str, Any], out: list[bytes]) -> None:
        if kind == "messageStart":
            self._start(out)
        elif kind == "contentBlockStart":
            self._start(out)
            start = payload.get("start")
            use = start.get("toolUse") if isinstance(start, dict) else None
            index = payload.get("contentBlockIndex")
            if isinstance(use, dict) and isinstance(index, int):
                position = self._tool_positions.setdefault(index, len(self._tool_positions))
                function = {"name": use.get("name"), "arguments": ""}
                call = {"index": position, "id": use.get("toolUseId"), "type": "function", "function": function}
                out.append(self._writer.chunk({"tool_calls": [call]}))
        elif kind == "contentBlockDelta":
            self._start(out)
            self._delta(payload, out)
        elif kind == "contentBlockStop":
            position = self._position(payload)
            if position is not None and position not in self._arguments_sent:
                # A tool without parameters may stream no JSON at all; OpenAI clients expect "{}" to parse.
                self._arguments_sent.add(position)
                out.append(self._writer.chunk({"tool_calls": [{"index": position, "function": {"arguments": "{}"}}]}))
        elif kind == "messageStop":
            self._start(out)
            self._stop_seen = True
            reason = payload.get("stopReason")
            out.append(self._writer.chunk({}, FINISH_REASONS.get(reason if isinstance(reason, str) else "", "stop")))
        elif kind == "metadata":
            self.read_usage(payload.get("usage"))
            if self._stop_seen:
                self._finish(out)
        # events added later by Bedrock carry nothing an OpenAI client can read

    def _delta(self, payload: dict[str, Any], out: list[bytes]) -> None:
        delta = payload.get("delta")
        if not isinstance(delta, dict):
            return
        text = delta.get("text")
        if isinstance(text, str):
            if text:
                out.append(self._writer.chunk({"content": text}))
            return
        reasoning = delta.get("reasoningContent")
        if isinstance(reasoning, dict):
            index = payload.get("contentBlockIndex")
            key = index if isinstance(index, int) else -1
            position = self._reasoning_positions.setdefault(key, len(self._reasoning_positions))
            thought, signature, redacted = (
                reasoning.get("text"),
                reasoning.get("signature"),
                reasoning.get("redactedContent"),
            )
            if isinstance(thought, str) and thought:
                detail = reasoning_text_detail(thought, None, position)
                out.append(self._writer.chunk({"reasoning_content": thought, "reasoning_details": [detail]}))
            elif isinstance(signature, str) and signature:
                out.append(self._writer.chunk({"reasoning_details": [reasoning_text_detail("", signature, position)]}))
            elif isinstance(redacted, str) and redacted:
                out.append(self._writer.chunk({"reasoning_details": [reasoning_encrypted_detail(redacted, position)]}))
            return
        use = delta.get("toolUse")
        position = self._position(payload)
        if isinstance(use, dict) and position is not None:
            arguments = use.get("input")
            if isinstance(arguments, str) and arguments:
                self._arguments_sent.add(position)
                out.append(
                    self._writer.chunk({"tool_calls": [{"index": position, "function": {"arguments": arguments}}]})
                )

    def _position(self, payload: dict[str, Any]) -> int | None:
        index = payload.get("contentBlockIndex")
        return self._tool_positions.get(index) if isinstance(index, int) else None

    def _finish(self, out: list[bytes]) -> None:
        self._finished = True
        out.append(self._writer.end(self.usage))

    def on_error(self, status: int, error_type: str, message: str, out: list[bytes]) -> None:
        out.append(self._writer.error(GatewayError(status, message, error_type)))

    def on_end(self, out: list[bytes]) -> None:
        if self._stop_seen:
            self._finish(out)  # no metadata event: the answer is complete, its usage unknown
        else:  # cut short: the events so far, then the router's error event
            raise stream_cut(PROVIDER, "`messageStop`", b"".join(out))
