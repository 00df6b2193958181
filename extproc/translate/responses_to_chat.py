"""OpenAI Responses API ⇄ OpenAI Chat Completions: the pure mapping, both ways, streams included.

Used by :mod:`responses_via_chat` to reach every backend that has a Chat Completions translator (an
OpenAI-compatible server without the Responses API, Anthropic, Bedrock, Gemini...). Stateless: nothing is
stored, so what only a stateful server can do is refused rather than silently lost.

Request (Responses → chat):

* ``instructions`` → a leading ``system`` message. ``input`` as a string → one ``user`` message. Input items:
  messages (``user``/``system``/``developer``/``assistant``; ``input_text``/``output_text`` → text parts,
  ``input_image`` with an ``image_url`` (a URL or ``data:`` URI) → ``image_url`` with its ``detail``,
  ``input_file`` with ``file_data`` → a ``file`` part, ``refusal`` → text); consecutive ``function_call``
  items → one ``assistant`` message with ``tool_calls`` (joined to the assistant message just before them);
  ``function_call_output`` → a ``tool`` message (text parts joined). ``reasoning`` items are dropped: Chat
  Completions history has no place for them. ``item_reference`` and the items of built-in tools
  (``web_search_call``, ``local_shell_call``, ``custom_tool_call``…) → 422 naming the item.
* ``tools``: function tools → chat function tools (``strict`` kept); any other type (``web_search``,
  ``file_search``, ``code_interpreter``, ``namespace``, ``custom``…) runs only on OpenAI's Responses API → 422
  naming every such tool. ``tool_choice``: ``auto``/``none``/``required`` as they are, ``{type: function,
  name}`` → ``{type: function, function: {name}}``, others → 422. ``parallel_tool_calls`` as is.
* ``reasoning.effort`` → ``reasoning_effort`` (``reasoning.summary`` is dropped); ``max_output_tokens`` →
  ``max_completion_tokens``; ``temperature``, ``top_p``, ``user``, ``safety_identifier`` as they are;
  ``text.format`` ``json_schema`` → ``response_format: {type: json_schema, json_schema: {name, schema, strict,
  description}}``, ``json_object`` as is, ``text`` → nothing.
* ``previous_response_id`` and ``conversation`` → 400 (the history lives only on a stateful server: send it in
  ``input``); ``background: true``, ``prompt`` templates → 422. ``store``, ``include``, ``metadata``,
  ``prompt_cache_key``, ``service_tier``, ``truncation``, ``top_logprobs``, ``stream_options`` and unknown
  fields are dropped (the answer is never stored).
* ``stream: true`` → ``stream: true`` with ``stream_options.include_usage`` (``response.completed`` must carry it).

Answer (chat → Responses): a ``response`` object (``resp_`` + the completion's id) whose ``output`` holds a
``reasoning`` item (from ``reasoning_content``, as a summary), a ``message`` item (``output_text``, or
``refusal``) and one ``function_call`` item per tool call; ``finish_reason`` ``length`` → status ``incomplete``
(reason ``max_output_tokens``), ``content_filter`` → ``incomplete`` (``content_filter``); the usage in the
Responses shape. Streams: ``response.created``, ``response.in_progress``, then per output item
``response.output_item.added``, its deltas (``response.output_text.delta`` inside ``response.content_part.added``
/ ``.done``, ``response.reasoning_summary_text.delta``, ``response.function_call_arguments.delta`` / ``.done``)
and ``response.output_item.done``, and at the end ``response.completed`` (or ``response.incomplete``) with the
usage; every event numbered (``sequence_number``). An error chunk, or a stream that ends before its finish
reason, ends with an ``error`` event and ``response.failed``.
"""

from __future__ import annotations

from typing import Any

from tokenvoy.extproc.errors import GatewayError, invalid_field, untranslatable_field
from tokenvoy.extproc.sse import KEEPALIVE, SSEParser
from tokenvoy.extproc.translate.bodies import DONE_EVENT, KEEP_ALIVE, stream_items
from tokenvoy.extproc.translate.responses_common import sse_event, usage_object
from tokenvoy.extproc.usage import TokenUsage

# Input item types that only a Responses server with built-in tools can read back.
_BUILT_IN_ITEMS = frozenset(
    {
        "custom_tool_call",
        "custom_tool_call_output",
        "local_shell_call",
        "local_shell_call_output",
        "shell_call",
        "shell_call_output",
        "apply_patch_call",
        "apply_patch_call_output",
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
_ROLES = ("user", "system", "developer", "assistant")
_PASSED = ("temperature", "top_p", "user", "safety_identifier", "parallel_tool_calls")


def _unsupported(field: str, target: str, why: str) -> GatewayError:
    return untranslatable_field(field, target, why)


# ---- request --------------------------------------------------------------------------------------------


def chat_request(body: dict[str, Any], target: str) -> dict[str, Any]:
    """The Chat Completions body for a Responses body (``target`` names the backend in 4xx messages, e.g.
    "backend 'local' (schema OpenAI, Responses translated to Chat Completions)"); raises GatewayError."""
    for key in ("previous_response_id", "conversation"):
        if body.get(key) is not None:
            raise GatewayError(
                400,
                f"`{key}` cannot be resolved by {target}: tokenvoy translates the Responses API to it statelessly, "
                "so no earlier response is stored; send the whole conversation in `input` instead",
            )
    if body.get("background") is True:
        raise _unsupported("background", target, "background responses need a stateful Responses API server")
    if body.get("prompt") is not None:
        raise _unsupported("prompt", target, "prompt templates are stored by OpenAI; send `instructions` and `input`")
    out: dict[str, Any] = {"model": body.get("model")}
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise invalid_field("instructions", "expected a string")
        if instructions:
            messages.append({"role": "system", "content": instructions})
    messages.extend(chat_messages(body.get("input"), target))
    if not messages:
        raise invalid_field("input", "expected a string or a non-empty array of input items")
    out["messages"] = messages
    for key in _PASSED:
        if body.get(key) is not None:
            out[key] = body[key]
    limit = body.get("max_output_tokens")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise invalid_field("max_output_tokens", "expected a positive integer")
        out["max_completion_tokens"] = limit
    reasoning = body.get("reasoning")
    if reasoning is not None:
        if not isinstance(reasoning, dict):
            raise invalid_field("reasoning", "expected an object")
        effort = reasoning.get("effort")
        if effort is not None:
            if not isinstance(effort, str):
                raise invalid_field("reasoning.effort", "expected a string")
            out["reasoning_effort"] = effort
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        out["response_format"] = response_format
    tools = body.get("tools")
    if tools:
        out["tools"] = chat_tools(tools, target)
    choice = body.get("tool_choice")
    if choice is not None:
        out["tool_choice"] = chat_tool_choice(choice, target)
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _response_format(text: object) -> dict[str, Any] | None:
    if text is None:
        return None
    if not isinstance(text, dict):
        raise invalid_field("text", "expected an object")
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        name, schema = fmt.get("name"), fmt.get("schema")
        if not isinstance(name, str) or not name or not isinstance(schema, dict):
            raise invalid_field("text.format", "a json_schema format needs a `name` and a `schema` object")
        spec: dict[str, Any] = {"name": name, "schema": schema}
        for key in ("strict", "description"):
            if fmt.get(key) is not None:
                spec[key] = fmt[key]
        return {"type": "json_schema", "json_schema": spec}
    raise invalid_field("text.format.type", f"{kind!r} is not one of text, json_schema, json_object")


def chat_messages(value: object, target: str) -> list[dict[str, Any]]:
    """The chat messages for a Responses ``input`` (a string, or an array of input items)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise invalid_field("input", "expected a string or an array of input items")
    out: list[dict[str, Any]] = []
    for index, item in enumerate(value):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise invalid_field(where, "expected an object")
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            message = _message(item, where)
            if message["role"] == "assistant" and out and _open_assistant(out[-1]) and "tool_calls" not in out[-1]:
                out[-1]["content"] = (out[-1].get("content") or "") + (message.get("content") or "")
            else:
                out.append(message)
        elif kind == "function_call":
            call = _function_call(item, where)
            if out and _open_assistant(out[-1]):
                out[-1].setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            out.append(_function_output(item, where))
        elif kind == "reasoning":
            continue  # no place for it in Chat Completions history
        elif kind == "item_reference":
            raise GatewayError(
                400, f"`{where}` (an item_reference) cannot be resolved by {target}: send the item itself"
            )
        elif isinstance(kind, str) and kind in _BUILT_IN_ITEMS:
            raise _unsupported(where, target, f"{kind!r} items belong to OpenAI's built-in tools")
        else:
            raise invalid_field(f"{where}.type", f"unknown input item type {kind!r}")
    return out


def _open_assistant(message: dict[str, Any]) -> bool:
    """An assistant message that later function calls (or text) of the same turn join."""
    return message.get("role") == "assistant"


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in _ROLES:
        raise invalid_field(f"{where}.role", f"expected one of {', '.join(_ROLES)}, not {role!r}")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise invalid_field(f"{where}.content", "expected a string or an array of content parts")
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        at = f"{where}.content[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text"):
            text = part.get("text")
            if not isinstance(text, str):
                raise invalid_field(f"{at}.text", "expected a string")
            parts.append({"type": "text", "text": text})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str(part.get("refusal") or "")})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                why = "only images given by `image_url` (a URL or a data: URI) can be sent; a `file_id` is OpenAI's"
                raise _unsupported(at, "a Chat Completions backend", why)
            image: dict[str, Any] = {"url": url}
            if isinstance(part.get("detail"), str):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_file":
            data = part.get("file_data")
            if not isinstance(data, str) or not data:
                why = "only files given inline by `file_data` can be sent; a `file_id` or `file_url` is OpenAI's"
                raise _unsupported(at, "a Chat Completions backend", why)
            file: dict[str, Any] = {"file_data": data}
            if isinstance(part.get("filename"), str):
                file["filename"] = part["filename"]
            parts.append({"type": "file", "file": file})
        else:
            raise invalid_field(f"{at}.type", f"unknown content part type {kind!r}")
    if role == "assistant" or all(part["type"] == "text" for part in parts):
        if role == "assistant" and any(part["type"] != "text" for part in parts):
            raise invalid_field(f"{where}.content", "an assistant message holds only text")
        return {"role": role, "content": "".join(part["text"] for part in parts)}
    return {"role": role, "content": parts}


def _function_call(item: dict[str, Any], where: str) -> dict[str, Any]:
    call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments", "")
    if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
        raise invalid_field(where, "a function_call item needs `call_id` and `name` strings")
    if not isinstance(arguments, str):
        raise invalid_field(f"{where}.arguments", "expected a JSON string")
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments or "{}"}}


def _function_output(item: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise invalid_field(f"{where}.call_id", "expected the call_id of the function_call this output answers")
    output = item.get("output")
    if isinstance(output, str):
        text = output
    elif isinstance(output, list):
        texts = []
        for index, part in enumerate(output):
            if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text"):
                raise _unsupported(
                    f"{where}.output[{index}]", "a Chat Completions backend", "tool results hold only text"
                )
            texts.append(str(part.get("text") or ""))
        text = "\n".join(texts)
    else:
        raise invalid_field(f"{where}.output", "expected a string or an array of text parts")
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def chat_tools(tools: object, target: str) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise invalid_field("tools", "expected an array")
    out: list[dict[str, Any]] = []
    built_in: list[str] = []
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise invalid_field(where, "expected an object")
        kind = tool.get("type")
        if kind != "function":
            label = tool.get("name") if kind in ("namespace", "custom") and isinstance(tool.get("name"), str) else None
            built_in.append(f"{where} ({kind!r}{f' {label!r}' if label else ''})")
            continue
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise invalid_field(f"{where}.name", "expected a non-empty string")
        function: dict[str, Any] = {"name": name}
        if isinstance(tool.get("description"), str) and tool["description"]:
            function["description"] = tool["description"]
        parameters = tool.get("parameters")
        function["parameters"] = parameters if isinstance(parameters, dict) else {"type": "object", "properties": {}}
        if isinstance(tool.get("strict"), bool):
            function["strict"] = tool["strict"]
        out.append({"type": "function", "function": function})
    if built_in:
        raise GatewayError(
            422,
            f"{', '.join(built_in)} cannot be sent to {target}: only function tools can be translated; "
            "built-in tools run only on OpenAI's Responses API",
        )
    return out


def chat_tool_choice(choice: object, target: str) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise invalid_field("tool_choice.name", "expected a non-empty string")
        return {"type": "function", "function": {"name": name}}
    kind = choice.get("type") if isinstance(choice, dict) else choice
    raise _unsupported("tool_choice", target, f"{kind!r}: only auto, none, required and a function can be sent")


# ---- answers --------------------------------------------------------------------------------------------


def response_id(chat_id: object) -> str:
    text = chat_id if isinstance(chat_id, str) and chat_id else "gateway"
    return text if text.startswith("resp_") else f"resp_{text}"


def _status(finish_reason: object) -> tuple[str, dict[str, str] | None]:
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def response_skeleton(request: dict[str, Any], rid: str, model: str, created: int) -> dict[str, Any]:
    """The Response object before any output, echoing the request's settings as OpenAI does."""
    reasoning = request.get("reasoning") if isinstance(request.get("reasoning"), dict) else {}
    text = request.get("text") if isinstance(request.get("text"), dict) else {}
    return {
        "id": rid,
        "object": "response",
        "created_at": created,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": model,
        "output": [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "store": False,
        "temperature": request.get("temperature"),
        "text": {"format": text.get("format") or {"type": "text"}},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": request.get("tools") or [],
        "top_p": request.get("top_p"),
        "truncation": "disabled",
        "usage": None,
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


def _message_item(item_id: str, text: str, refusal: str | None, status: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if text or refusal is None:
        content.append({"type": "output_text", "text": text, "annotations": []})
    if refusal:
        content.append({"type": "refusal", "refusal": refusal})
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def _reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {"id": item_id, "type": "reasoning", "summary": [{"type": "summary_text", "text": text}]}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def response_from_chat(
    completion: dict[str, Any], request: dict[str, Any], fallback_model: str, usage: TokenUsage | None
) -> dict[str, Any]:
    """A chat ``chat.completion`` as a Responses ``response`` (``usage``: the translator's normalised usage)."""
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    reply = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    rid = response_id(completion.get("id"))
    serial = rid.removeprefix("resp_")
    status, incomplete = _status(choice.get("finish_reason"))
    output: list[dict[str, Any]] = []
    reasoning = reply.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        output.append(_reasoning_item(f"rs_{serial}", reasoning))
    text = reply.get("content") if isinstance(reply.get("content"), str) else ""
    refusal = reply.get("refusal") if isinstance(reply.get("refusal"), str) else None
    calls = [c for c in reply.get("tool_calls") or () if isinstance(c, dict) and isinstance(c.get("function"), dict)]
    if text or refusal or not calls:
        output.append(_message_item(f"msg_{serial}", text, refusal, status))
    for index, call in enumerate(calls):
        function = call["function"]
        arguments = function.get("arguments") if isinstance(function.get("arguments"), str) else "{}"
        call_id = call.get("id") if isinstance(call.get("id"), str) else f"call_{serial}_{index}"
        output.append(
            _call_item(f"fc_{serial}_{index}", call_id, str(function.get("name") or ""), arguments, "completed")
        )
    model = completion.get("model")
    created = completion.get("created")
    response = response_skeleton(
        request,
        rid,
        model if isinstance(model, str) and model else fallback_model,
        created if isinstance(created, int) else 0,
    )
    response.update(status=status, incomplete_details=incomplete, output=output)
    response["usage"] = usage_object(usage or TokenUsage())
    return response


class ChatStreamToResponses:
    """Chat Completions stream bytes (any split) in, Responses stream events out; see the module docstring."""

    def __init__(self, request: dict[str, Any], model: str, created: int) -> None:
        self._request = request
        self._model = model
        self._created = created
        self._parser = SSEParser()
        self._sequence = 0
        self._rid: str | None = None
        self._started = False
        self.finished = False
        self._finish: object = None
        self._output: list[dict[str, Any]] = []  # items done, in order
        self._open: dict[str, Any] | None = None  # the item being streamed
        self._open_index = -1
        self._text: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}  # chat tool_calls index → its output item
        self.response_model: str | None = None

    # -- input --

    def feed(self, chunk: bytes, end_of_stream: bool, usage: TokenUsage | None) -> bytes:
        out: list[bytes] = []
        for item in stream_items(self._parser, chunk, end_of_stream):
            if self.finished:
                break
            if item == KEEP_ALIVE:
                out.append(KEEPALIVE)  # the chat side's keep-alive keeps the Responses client's alive too
            elif item == DONE_EVENT:
                self._complete(out, usage)
            elif isinstance(item, dict):
                self._chunk(item, out)
        if end_of_stream and not self.finished:
            if self._finish is not None:
                self._complete(out, usage)  # some servers end without [DONE]
            else:
                self._fail("server_error", "the provider's stream ended before the answer was complete", out)
        return b"".join(out)

    def _emit(self, out: list[bytes], payload: dict[str, Any]) -> None:
        payload["sequence_number"] = self._sequence
        self._sequence += 1
        out.append(sse_event(payload))

    def _skeleton(self) -> dict[str, Any]:
        model = self.response_model or self._model
        return response_skeleton(self._request, self._rid or response_id(None), model, self._created)

    def _start(self, out: list[bytes]) -> None:
        if self._started:
            return
        self._started = True
        skeleton = self._skeleton()
        self._emit(out, {"type": "response.created", "response": skeleton})
        self._emit(out, {"type": "response.in_progress", "response": skeleton})

    def _chunk(self, payload: dict[str, Any], out: list[bytes]) -> None:
        error = payload.get("error")
        if error is not None:
            message = error.get("message") if isinstance(error, dict) else error
            code = error.get("type") if isinstance(error, dict) else None
            self._fail(str(code or "server_error"), message if isinstance(message, str) else "provider error", out)
            return
        if self._rid is None and isinstance(payload.get("id"), str) and payload["id"]:
            self._rid = response_id(payload["id"])
        model = payload.get("model")
        if isinstance(model, str) and model:
            self.response_model = model
        if isinstance(payload.get("created"), int) and payload["created"]:
            self._created = payload["created"]
        choices = payload.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return  # the usage chunk, or Azure's opening prompt-filter chunk
        choice = choices[0]
        self._start(out)
        delta = choice.get("delta")
        if isinstance(delta, dict):
            reasoning = delta.get("reasoning_content")
            if isinstance(reasoning, str) and reasoning:
                self._reasoning_delta(reasoning, out)
            content = delta.get("content")
            if isinstance(content, str) and content:
                self._text_delta(content, out)
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                self._text_delta(refusal, out)
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    self._call_delta(call, out)
        finish = choice.get("finish_reason")
        if isinstance(finish, str) and finish:
            self._finish = finish
            self._close(out)

    # -- items --

    def _serial(self) -> str:
        return (self._rid or "resp_gateway").removeprefix("resp_")

    def _open_item(self, item: dict[str, Any], out: list[bytes]) -> None:
        self._close(out)
        self._open = item
        self._open_index = len(self._output)
        self._text = []
        self._emit(out, {"type": "response.output_item.added", "output_index": self._open_index, "item": dict(item)})

    def _reasoning_delta(self, text: str, out: list[bytes]) -> None:
        if self._open is None or self._open["type"] != "reasoning":
            item = {"id": f"rs_{self._serial()}_{len(self._output)}", "type": "reasoning", "summary": []}
            self._open_item(item, out)
            part = {"type": "summary_text", "text": ""}
            self._emit(
                out,
                {"type": "response.reasoning_summary_part.added", **self._where(), "summary_index": 0, "part": part},
            )
        self._text.append(text)
        self._emit(
            out, {"type": "response.reasoning_summary_text.delta", **self._where(), "summary_index": 0, "delta": text}
        )

    def _text_delta(self, text: str, out: list[bytes]) -> None:
        if self._open is None or self._open["type"] != "message":
            item = {
                "id": f"msg_{self._serial()}_{len(self._output)}",
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
            self._open_item(item, out)
            part = {"type": "output_text", "text": "", "annotations": []}
            self._emit(out, {"type": "response.content_part.added", **self._where(), "content_index": 0, "part": part})
        self._text.append(text)
        self._emit(
            out,
            {"type": "response.output_text.delta", **self._where(), "content_index": 0, "delta": text, "logprobs": []},
        )

    def _call_delta(self, call: dict[str, Any], out: list[bytes]) -> None:
        position = call.get("index") if isinstance(call.get("index"), int) else len(self._calls)
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        item = self._calls.get(position)
        if item is None:
            serial = f"{self._serial()}_{len(self._output)}"
            call_id = call.get("id") if isinstance(call.get("id"), str) and call["id"] else f"call_{serial}"
            item = _call_item(f"fc_{serial}", call_id, str(function.get("name") or ""), "", "in_progress")
            self._calls[position] = item
            self._open_item(item, out)
        elif item is not self._open:
            return  # a call whose item is closed already (servers stream calls one after another)
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            self._text.append(arguments)
            self._emit(out, {"type": "response.function_call_arguments.delta", **self._where(), "delta": arguments})

    def _where(self) -> dict[str, Any]:
        assert self._open is not None
        return {"item_id": self._open["id"], "output_index": self._open_index}

    def _close(self, out: list[bytes]) -> None:
        item = self._open
        if item is None:
            return
        text = "".join(self._text)
        where = self._where()
        kind = item["type"]
        if kind == "message":
            status, _ = _status(self._finish)
            part = {"type": "output_text", "text": text, "annotations": []}
            self._emit(
                out, {"type": "response.output_text.done", **where, "content_index": 0, "text": text, "logprobs": []}
            )
            self._emit(out, {"type": "response.content_part.done", **where, "content_index": 0, "part": part})
            done = _message_item(item["id"], text, None, status)
        elif kind == "reasoning":
            part = {"type": "summary_text", "text": text}
            self._emit(out, {"type": "response.reasoning_summary_text.done", **where, "summary_index": 0, "text": text})
            self._emit(out, {"type": "response.reasoning_summary_part.done", **where, "summary_index": 0, "part": part})
            done = _reasoning_item(item["id"], text)
        else:
            arguments = text or "{}"
            self._emit(
                out,
                {
                    "type": "response.function_call_arguments.done",
                    **where,
                    "name": item["name"],
                    "arguments": arguments,
                },
            )
            done = _call_item(item["id"], item["call_id"], item["name"], arguments, "completed")
        self._emit(out, {"type": "response.output_item.done", "output_index": self._open_index, "item": done})
        self._output.append(done)
        self._open = None

    # -- the end --

    def _complete(self, out: list[bytes], usage: TokenUsage | None) -> None:
        self._start(out)
        self._close(out)
        self.finished = True
        status, incomplete = _status(self._finish)
        response = self._skeleton()
        response.update(status=status, incomplete_details=incomplete, output=self._output)
        response["usage"] = usage_object(usage or TokenUsage())
        kind = "response.incomplete" if status == "incomplete" else "response.completed"
        self._emit(out, {"type": kind, "response": response})

    def _fail(self, code: str, message: str, out: list[bytes]) -> None:
        self._start(out)
        self.finished = True
        self._emit(out, {"type": "error", "code": code, "message": message, "param": None})
        response = self._skeleton()
        response.update(status="failed", error={"code": code, "message": message}, output=self._output)
        self._emit(out, {"type": "response.failed", "response": response})
