"""OpenAI Chat Completions client → Gemini on Vertex AI (``GCPVertexAI`` schema) backend.

The request is rebuilt as a ``GenerateContentRequest``. Mapping decisions:

* ``system`` and ``developer`` messages, wherever they are, become ``systemInstruction`` text parts in order.
  ``user`` → role ``user``, ``assistant`` → role ``model``; same-role neighbours are merged, so the parallel
  results of one assistant turn land in one ``user`` turn as Gemini wants (one ``functionResponse`` per
  ``functionCall``). Empty messages are dropped (Gemini refuses empty turns and empty text parts).
* ``tool`` messages → ``functionResponse`` parts named after the call they answer, found by
  ``tool_call_id`` among the earlier assistant ``tool_calls`` (none → 400). A tool result that is a JSON
  object is the ``response`` as is; any other text is ``{"output": text}`` (Vertex's key for a function's
  output).
* Tool call ids: Gemini's calls carry no id the client can use, so the gateway makes them (``call_…``).
  Gemini 2.5+/3 sign function calls (``thoughtSignature``) and Gemini 3 refuses a history whose calls lost
  their signature, so a signed call's id is ``call_…__thought__<signature>``: the client sends it back
  unchanged and the signature is restored on that ``functionCall`` part.
* Images: ``data:`` URIs → ``inlineData``; ``gs://`` and ``http(s)`` URLs → ``fileData`` with the media type
  guessed from the file name (none → 422). ``input_audio`` (wav/mp3) and ``file`` parts given inline as a
  ``file_data`` data URI (PDF, …) → ``inlineData``.
* ``tools`` → one ``functionDeclarations`` tool; parameters converted to Gemini's OpenAPI subset (see
  :mod:`gemini_common`; a tool without parameters gets none, Gemini refuses an empty object). Non-function
  tools → 422. ``tool_choice``: auto → AUTO, required → ANY, none → NONE, a named function → ANY with
  ``allowedFunctionNames: [name]``. ``parallel_tool_calls`` is dropped: Gemini has no switch for it.
* ``generationConfig``: ``max_completion_tokens`` (else ``max_tokens``) → ``maxOutputTokens`` (no default:
  Gemini's is the model's maximum); ``temperature``, ``top_p`` → ``topP``, ``top_k`` → ``topK`` (an
  extension some SDKs send), ``n`` → ``candidateCount``, ``stop`` → ``stopSequences``, ``seed``,
  ``presence_penalty``/``frequency_penalty``; ``response_format`` ``json_object`` → ``responseMimeType:
  application/json``, ``json_schema`` → the same plus ``responseSchema`` (converted like tool parameters).
* ``reasoning_effort`` → ``thinkingConfig``: none 0 (off), minimal 512, low 1024, medium 8192, high 24576
  (Google's own OpenAI-compatible budgets), xhigh 32768, with ``includeThoughts`` so thought summaries come
  back as ``message.reasoning_content`` (``delta.reasoning_content`` when streamed). Gemini counts thoughts
  inside ``maxOutputTokens``, as OpenAI counts reasoning inside the completion limit, so the limit is sent
  unchanged. Without ``reasoning_effort`` the model's default thinking applies and thoughts are not shown.
* Not expressible → 422 naming the field: ``logprobs``/``top_logprobs``, ``logit_bias``, audio output,
  ``prediction``, ``web_search_options``, the deprecated ``functions``/``function_call``, non-function
  tools and tool choices, ``file_id`` files. ``user``, ``safety_identifier``, ``store``, ``metadata``,
  ``service_tier`` and unknown fields are dropped.
* Path: the backend prefix (``/v1/projects/{project}/locations/{region}`` with GCP credentials, else empty)
  + ``/publishers/google/models/{model}:generateContent`` (``:streamGenerateContent?alt=sse`` for streams).
  The client's ``authorization`` goes through only when the backend has no credentials policy (then a client may send
  its own Google access token as its API key); with one, the gateway replaces it.
* Answers: ``chat.completion`` (chunks) whose id is Gemini's ``responseId``, ``model`` its
  ``modelVersion``, ``created`` its ``createTime``; one choice per candidate. Finish reasons per
  :func:`gemini_common.finish_reason` (STOP with function calls → ``tool_calls``; a prompt blocked by
  ``promptFeedback`` → no content, ``content_filter``). Usage per :func:`gemini_common.usage_from_gemini`
  (thoughts are completion tokens, also shown as ``completion_tokens_details.reasoning_tokens``). Streams:
  a role chunk per choice, one chunk per text/thought/function-call part (each call whole, with a stable
  ``index`` per choice), a finish chunk per choice, then, when the client asked with
  ``stream_options.include_usage``, a ``choices: []`` usage chunk, then ``data: [DONE]`` — only once the
  stream ended with every choice finished. Gemini reports usage on every chunk, so the tokens are metered
  whether or not the client asked. Provider errors, JSON or not, become OpenAI's error shape with the
  status kept; an ``{"error": …}`` event mid-stream becomes an error chunk and the stream gets no ``[DONE]``.
  Gemini sends no keep-alive: a chunk that gives the client nothing (usage only, a bare thought signature)
  and a proxy's comment line become the SSE comment ``: ping``, so long thinking does not time a client out.
"""

from __future__ import annotations

import mimetypes
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from tokenvoy.config.model import Backend
from tokenvoy.extproc.errors import GatewayError, UpstreamShapeError, openai_error_body, untranslatable_field
from tokenvoy.extproc.errors import invalid_field as _invalid
from tokenvoy.extproc.sse import KEEPALIVE, SSEParser
from tokenvoy.extproc.translate.base import (
    ClientRequest,
    HeaderChanges,
    TranslatorBase,
    UpstreamRequest,
    rewritten_answer_headers,
)
from tokenvoy.extproc.translate.bodies import KEEP_ALIVE, WholeBody, stream_items
from tokenvoy.extproc.translate.gemini_common import (
    created_at,
    error_details,
    finish_reason,
    gemini_schema,
    model_path,
    prompt_blocked,
    stream_error,
    usage_from_gemini,
)
from tokenvoy.extproc.translate.openai_common import (
    ChatChunkWriter,
    data_uri,
    function_calls,
    openai_usage,
    refuse_non_defaults,
)
from tokenvoy.extproc.translate.shapes import answer_object, stream_cut

REASONING_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768}
SIGNATURE_SEPARATOR = "__thought__"
"""Between a tool call id and the Gemini ``thoughtSignature`` it carries (see the module docstring)."""
TARGET = "a Gemini backend"
PROVIDER = "the Gemini provider"
_AUDIO_TYPES = {"wav": "audio/wav", "mp3": "audio/mp3"}
# Why each chat field is refused unless it has its default value (openai_common.DEFAULT_VALUES).
_DEFAULT_ONLY = {
    "logprobs": "the gateway does not translate Gemini's log probabilities",
    "top_logprobs": "the gateway does not translate Gemini's log probabilities",
    "logit_bias": "Gemini has no logit bias",
    "audio": "Gemini's audio output is not translated",
    "modalities": "only text answers are translated",
    "prediction": "Gemini has no predicted outputs",
    "web_search_options": "use Gemini's grounding on the backend instead",
    "functions": "use `tools`",
    "function_call": "use `tool_choice`",
}


def _unsupported(field: str, why: str) -> GatewayError:
    return untranslatable_field(field, TARGET, why)


# ---- request --------------------------------------------------------------------------------------------


def build_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The Gemini ``GenerateContentRequest`` body for an OpenAI chat completion body (raises GatewayError).
    ``model`` is part of the path, not of the body."""
    refuse_non_defaults(body, _DEFAULT_ONLY, TARGET)
    system, contents = convert_messages(body.get("messages"))
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    tools = body.get("tools")
    if tools:
        declarations = convert_tools(tools)
        out["tools"] = [{"functionDeclarations": declarations}]
        config = convert_tool_choice(body.get("tool_choice"), {d["name"] for d in declarations})
        if config is not None:
            out["toolConfig"] = {"functionCallingConfig": config}
    elif tools is not None and not isinstance(tools, list):
        raise _invalid("tools", "expected an array")
    generation = generation_config(body)
    if generation:
        out["generationConfig"] = generation
    return out


def generation_config(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    limit = _positive_int(body, "max_completion_tokens") or _positive_int(body, "max_tokens")
    if limit is not None:
        out["maxOutputTokens"] = limit
    for key, name in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _invalid(key, "expected a number")
        out[name] = value
    n = _positive_int(body, "n")
    if n is not None and n > 1:
        out["candidateCount"] = n
    seed = body.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise _invalid("seed", "expected an integer")
        out["seed"] = seed
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stopSequences"] = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        if stop:
            out["stopSequences"] = stop
    elif stop is not None:
        raise _invalid("stop", "expected a string or an array of strings")
    out.update(_response_format(body.get("response_format")))
    effort = body.get("reasoning_effort")
    if effort is not None:
        budget = REASONING_BUDGETS.get(effort) if isinstance(effort, str) else None
        if budget is None:
            raise _invalid("reasoning_effort", f"{effort!r} is not one of {', '.join(REASONING_BUDGETS)}")
        out["thinkingConfig"] = {"thinkingBudget": budget, "includeThoughts": budget > 0}
    return out


def _positive_int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _invalid(key, "expected a positive integer")
    return value


def _response_format(response_format: object) -> dict[str, Any]:
    if response_format is None:
        return {}
    if not isinstance(response_format, dict):
        raise _invalid("response_format", "expected an object")
    kind = response_format.get("type")
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"responseMimeType": "application/json"}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        out: dict[str, Any] = {"responseMimeType": "application/json"}
        if schema is not None:
            out["responseSchema"] = gemini_schema(schema, "response_format.json_schema.schema", TARGET)
        return out
    raise _invalid("response_format", f"type {kind!r} is not one of text, json_object, json_schema")


def convert_messages(messages: object) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(systemInstruction parts, contents)``; same-role neighbours merged."""
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages", "expected a non-empty array of messages")
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}  # tool_call id → function name, from the assistant turns so far
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _invalid(where, "expected an object")
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend({"text": text} for text in _texts(message.get("content"), f"{where}.content"))
            continue
        if role == "user":
            parts = _user_parts(message.get("content"), f"{where}.content")
            gemini_role = "user"
        elif role == "assistant":
            parts = _model_parts(message, where, call_names)
            gemini_role = "model"
        elif role == "tool":
            parts = [_function_response(message, where, call_names)]
            gemini_role = "user"
        elif role == "function":
            raise _unsupported(f"{where}.role", "the deprecated `function` role has no tool_call_id; use `tool`")
        else:
            raise _invalid(f"{where}.role", f"unknown role {role!r}")
        if not parts:
            continue
        if contents and contents[-1]["role"] == gemini_role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": gemini_role, "parts": parts})
    if not contents:
        raise _unsupported("messages", "Gemini needs at least one user or assistant message besides the system ones")
    return system, contents


def _texts(content: object, where: str) -> list[str]:
    """The non-empty texts of a string or of text (and refusal) parts."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content] if content else []
    if not isinstance(content, list):
        raise _invalid(where, "expected a string or an array of content parts")
    texts = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in ("text", "refusal"):
            raise _unsupported(f"{where}[{index}]", "only text parts are allowed here")
        text = part.get(kind)
        if not isinstance(text, str):
            raise _invalid(f"{where}[{index}].{kind}", "expected a string")
        if text:
            texts.append(text)
    return texts


def _user_parts(content: object, where: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return [{"text": text} for text in _texts(content, where)]
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        at = f"{where}[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.extend({"text": text} for text in _texts([part], where))
        elif kind == "image_url":
            parts.append(_image(part.get("image_url"), f"{at}.image_url"))
        elif kind == "input_audio":
            parts.append(_audio(part.get("input_audio"), f"{at}.input_audio"))
        elif kind == "file":
            parts.append(_file(part.get("file"), f"{at}.file"))
        else:
            raise _unsupported(at, f"content part type {kind!r} has no Gemini equivalent")
    return parts


def _image(image_url: object, where: str) -> dict[str, Any]:
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str) or not url:
        raise _invalid(f"{where}.url", "expected a URL string")
    parsed = data_uri(url)
    if parsed is not None:
        return {"inlineData": {"mimeType": parsed[0], "data": parsed[1]}}
    if url.startswith(("gs://", "https://", "http://")):
        media_type, _ = mimetypes.guess_type(url.split("?", 1)[0])
        if media_type is None:
            raise _unsupported(f"{where}.url", "Gemini needs the media type of a file URL: end it with .png, .jpg, …")
        return {"fileData": {"mimeType": media_type, "fileUri": url}}
    raise _unsupported(f"{where}.url", "only base64 data URIs, gs:// and http(s) URLs can be sent to Gemini")


def _audio(audio: object, where: str) -> dict[str, Any]:
    data = audio.get("data") if isinstance(audio, dict) else None
    fmt = audio.get("format") if isinstance(audio, dict) else None
    if not isinstance(data, str) or not data:
        raise _invalid(f"{where}.data", "expected base64 audio")
    if fmt not in _AUDIO_TYPES:
        raise _invalid(f"{where}.format", f"expected one of {', '.join(_AUDIO_TYPES)}")
    return {"inlineData": {"mimeType": _AUDIO_TYPES[fmt], "data": data}}


def _file(file: object, where: str) -> dict[str, Any]:
    data = file.get("file_data") if isinstance(file, dict) else None
    parsed = data_uri(data) if isinstance(data, str) else None
    if parsed is None:
        raise _unsupported(where, "only files given inline as a base64 `file_data` data URI can be sent to Gemini")
    return {"inlineData": {"mimeType": parsed[0], "data": parsed[1]}}


def _model_parts(message: dict[str, Any], where: str, call_names: dict[str, str]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"text": text} for text in _texts(message.get("content"), f"{where}.content")]
    for call in function_calls(message, where, TARGET):
        part: dict[str, Any] = {"functionCall": {"name": call.name, "args": call.arguments}}
        _, separator, signature = call.id.partition(SIGNATURE_SEPARATOR)
        if separator and signature:
            part["thoughtSignature"] = signature
        parts.append(part)
        call_names[call.id] = call.name
    return parts


def _function_response(message: dict[str, Any], where: str, call_names: dict[str, str]) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise _invalid(f"{where}.tool_call_id", "a tool message needs the id of the call it answers")
    name = call_names.get(call_id)
    if name is None:
        raise _invalid(f"{where}.tool_call_id", f"{call_id!r} is not the id of a tool call earlier in `messages`")
    text = "".join(_texts(message.get("content"), f"{where}.content"))
    response: object = None
    if text.startswith("{"):
        try:
            response = orjson.loads(text)
        except orjson.JSONDecodeError:
            response = None
    if not isinstance(response, dict):
        response = {"output": text}
    return {"functionResponse": {"name": name, "response": response}}


def convert_tools(tools: object) -> list[dict[str, Any]]:
    """OpenAI function tools as Gemini ``functionDeclarations``."""
    if not isinstance(tools, list):
        raise _invalid("tools", "expected an array")
    declarations = []
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise _unsupported(where, f"only function tools can be sent to Gemini, not {kind!r}")
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise _invalid(f"{where}.function.name", "expected a non-empty string")
        declaration: dict[str, Any] = {"name": function["name"]}
        description = function.get("description")
        if isinstance(description, str) and description:
            declaration["description"] = description
        parameters = function.get("parameters")
        if parameters is not None:
            schema = gemini_schema(parameters, f"{where}.function.parameters", TARGET)
            if schema.get("properties"):  # Gemini refuses an OBJECT without properties: no parameters then
                declaration["parameters"] = schema
        declarations.append(declaration)
    return declarations


def convert_tool_choice(choice: object, names: set[str]) -> dict[str, Any] | None:
    """``functionCallingConfig`` for an OpenAI ``tool_choice`` (None: Gemini's default, AUTO)."""
    if choice is None or choice == "auto":
        return None
    if choice == "required":
        return {"mode": "ANY"}
    if choice == "none":
        return {"mode": "NONE"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            raise _invalid("tool_choice.function.name", "expected a non-empty string")
        if name not in names:
            raise _invalid("tool_choice.function.name", f"{name!r} is not one of the `tools`")
        return {"mode": "ANY", "allowedFunctionNames": [name]}
    raise _unsupported("tool_choice", f"{choice!r} has no Gemini equivalent")


# ---- response -------------------------------------------------------------------------------------------


def new_id() -> str:
    return uuid.uuid4().hex[:24]


def tool_call(part: dict[str, Any], call_id: str) -> dict[str, Any]:
    """A ``functionCall`` part as an OpenAI tool call; its ``thoughtSignature`` rides in the id."""
    call = part["functionCall"]
    signature = part.get("thoughtSignature")
    if isinstance(signature, str) and signature:
        call_id = f"{call_id}{SIGNATURE_SEPARATOR}{signature}"
    arguments = call.get("args")
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": call.get("name"), "arguments": orjson.dumps(arguments or {}).decode()},
    }


def _parts(candidate: dict[str, Any]) -> list[dict[str, Any]]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []


def _candidates(response: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """``(choice index, candidate)`` pairs; Gemini numbers candidates with ``index`` (absent = 0)."""
    candidates = response.get("candidates")
    if not isinstance(candidates, list):
        return []
    out = []
    for position, candidate in enumerate(candidates):
        if isinstance(candidate, dict):
            index = candidate.get("index")
            out.append((index if isinstance(index, int) and not isinstance(index, bool) else position, candidate))
    return out


def chat_completion(
    response: dict[str, Any], completion_id: str, created: int, call_id: Callable[[], str] = new_id
) -> dict[str, Any]:
    """A Gemini ``GenerateContentResponse`` as an OpenAI ``chat.completion``."""
    choices = []
    for index, candidate in _candidates(response):
        texts: list[str] = []
        thoughts: list[str] = []
        tool_calls: list[dict[str, Any]] = []
        for part in _parts(candidate):
            if isinstance(part.get("functionCall"), dict):
                tool_calls.append(tool_call(part, f"call_{call_id()}"))
            elif isinstance(part.get("text"), str):
                (thoughts if part.get("thought") is True else texts).append(part["text"])
        message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None, "refusal": None}
        if thoughts:
            message["reasoning_content"] = "".join(thoughts)
        if tool_calls:
            message["tool_calls"] = tool_calls
        reason = candidate.get("finishReason")
        choices.append(
            {
                "index": index,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(reason if isinstance(reason, str) else "STOP", bool(tool_calls)),
            }
        )
    if not choices and prompt_blocked(response):
        message = {"role": "assistant", "content": None, "refusal": None}
        choices.append({"index": 0, "message": message, "logprobs": None, "finish_reason": "content_filter"})
    out: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": response.get("modelVersion"),
        "choices": choices,
    }
    metadata = response.get("usageMetadata")
    if isinstance(metadata, dict):
        out["usage"] = openai_usage(usage_from_gemini(metadata), reasoning=True)
    return out


@dataclass(slots=True)
class _Choice:
    """One streamed choice: whether its role chunk went out, how many calls it made, whether it finished."""

    started: bool = False
    tool_calls: int = 0
    finished: bool = False


class OpenAIToGemini(TranslatorBase):
    """One attempt's translation; ``clock`` and ``new_id`` are injectable so ids and ``created`` are testable."""

    def __init__(self, clock: Callable[[], float] = time.time, new_id: Callable[[], str] = new_id) -> None:
        super().__init__()
        self._clock = clock
        self._new_id = new_id
        self._stream = False
        self._writer = ChatChunkWriter(self.answer)  # the client's stream
        self._body = WholeBody()
        self._parser = SSEParser()
        self._id: str | None = None
        self._created: int | None = None
        self._choices: dict[int, _Choice] = {}
        self._ended = False  # an error event arrived, or the stream was closed: nothing more is written

    def translate_request(self, request: ClientRequest, backend: Backend, model: str) -> UpstreamRequest:
        body = build_request(request.body, model)
        self._stream = request.stream
        self.answer.keep = request.capture_output
        self._writer.read_request(request.body)
        return UpstreamRequest(
            path=model_path(backend.path_prefix, model, self._stream),
            body=orjson.dumps(body),
            set_headers={"content-type": "application/json"},
        )

    def translate_response_headers(self, headers: dict[str, str]) -> HeaderChanges | None:
        return rewritten_answer_headers(self._stream)

    def translate_response_body(self, chunk: bytes, end_of_stream: bool) -> bytes | None:
        if self._stream:
            return self._translate_stream(chunk, end_of_stream)
        raw = self._body.collect(chunk, end_of_stream)
        if raw is None:
            return b""
        response = answer_object(raw, PROVIDER)  # not Gemini's answer: a 502, not an invented empty one
        if not isinstance(response.get("candidates"), list) and not prompt_blocked(response):
            raise UpstreamShapeError(f"{PROVIDER}'s answer has no `candidates` array (and no `promptFeedback`)")
        self._take(response)
        completion = chat_completion(response, self._id or "", self._created or 0, self._new_id)
        if self.answer.keep and completion["choices"]:
            content = completion["choices"][0]["message"].get("content")
            if isinstance(content, str):
                self.answer.add(content)
        return orjson.dumps(completion)

    def translate_error(self, status: int, headers: Mapping[str, str], body: bytes) -> bytes | None:
        return openai_error_body(GatewayError(status, error_details(status, body)))

    def _take(self, response: dict[str, Any]) -> None:
        """The response-wide fields every chunk repeats: first id and time win, last usage wins."""
        self.read_answer(response, usage_from_gemini, "modelVersion", "usageMetadata")
        if self._id is None:
            response_id = response.get("responseId")
            self._id = response_id if isinstance(response_id, str) and response_id else f"chatcmpl-{self._new_id()}"
        if self._created is None:
            self._created = created_at(response) or int(self._clock())
        self._writer.id, self._writer.created, self._writer.model = self._id, self._created, self.response_model

    # -- streams --

    def _translate_stream(self, chunk: bytes, end_of_stream: bool) -> bytes:
        out: list[bytes] = []
        for item in stream_items(self._parser, chunk, end_of_stream):
            if self._ended:
                break
            if item == KEEP_ALIVE:
                out.append(KEEPALIVE)
            elif isinstance(item, dict):
                sent = len(out)
                self._stream_response(item, out)
                if len(out) == sent:
                    # Gemini sends no keep-alive of its own; a chunk with nothing to show (usage only, a bare
                    # thought signature) still proves the model is alive, so the client hears of it.
                    out.append(KEEPALIVE)
        if end_of_stream and not self._ended:
            self._ended = True
            if self._choices and all(choice.finished for choice in self._choices.values()):
                out.append(self._writer.end(self.usage, reasoning=True))
            else:  # Gemini's stream has no end event: without a finishReason for every candidate, it was cut
                raise stream_cut(PROVIDER, "a `finishReason`", b"".join(out))
        return b"".join(out)

    def _chunk(self, index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return self._writer.chunk(delta, finish, index)

    def _choice(self, index: int, out: list[bytes]) -> _Choice:
        choice = self._choices.get(index)
        if choice is None:
            choice = self._choices[index] = _Choice()
        if not choice.started:
            choice.started = True
            out.append(self._chunk(index, {"role": "assistant", "content": ""}))
        return choice

    def _stream_response(self, response: dict[str, Any], out: list[bytes]) -> None:
        if "error" in response:
            self._ended = True
            out.append(self._writer.error(stream_error(response["error"])))
            return
        self._take(response)
        candidates = _candidates(response)
        if not candidates and prompt_blocked(response):
            choice = self._choice(0, out)
            if not choice.finished:
                choice.finished = True
                out.append(self._chunk(0, {}, "content_filter"))
            return
        for index, candidate in candidates:
            choice = self._choice(index, out)
            if choice.finished:
                continue
            for part in _parts(candidate):
                if isinstance(part.get("functionCall"), dict):
                    call = {"index": choice.tool_calls, **tool_call(part, f"call_{self._new_id()}")}
                    choice.tool_calls += 1
                    out.append(self._chunk(index, {"tool_calls": [call]}))
                elif isinstance(part.get("text"), str) and part["text"]:
                    key = "reasoning_content" if part.get("thought") is True else "content"
                    out.append(self._chunk(index, {key: part["text"]}))
            reason = candidate.get("finishReason")
            if isinstance(reason, str) and reason:
                choice.finished = True
                out.append(self._chunk(index, {}, finish_reason(reason, choice.tool_calls > 0)))
