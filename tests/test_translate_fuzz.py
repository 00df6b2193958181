"""Every translator against hostile input: client requests and provider answers (plain and streamed, split
at random byte boundaries), mutated from the documented shapes of each API.

What a user would notice, asserted for every case:

* a client request is translated or refused with a 4xx naming the problem (a ``GatewayError``), never an
  exception that Envoy turns into a 500 with a traceback in the log;
* a provider answer is translated or refused with :class:`UpstreamShapeError` (the router's 502 / error
  event), never another exception;
* a translated plain answer is one JSON object; a translated stream is SSE whose every ``data`` is JSON
  (or ``[DONE]``), and it either ends with the client API's end of stream or the translator said it could
  not (``UpstreamShapeError``): a stream is never silently cut;
* a provider error (4xx/5xx) reaches the client as a JSON error object in the client API's shape.

Budget: the CI profile (derandomized, so CI is deterministic) runs ``CASES`` examples per test, 53.5k cases in
all (107 tests) in under a minute of CPU; ``pytest --fuzz`` (see ``tests/conftest.py``) runs 50 times as many,
randomized, for a fuzzing session.
"""

from __future__ import annotations

import base64
import json
import os
import random
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from tokenvoy.config.model import Backend, Endpoint
from tokenvoy.extproc.errors import GatewayError, UpstreamShapeError
from tokenvoy.extproc.eventstream import encode_event, encode_exception
from tokenvoy.extproc.request import read_body, read_gemini_body
from tokenvoy.extproc.sse import SSEParser
from tokenvoy.extproc.translate import TRANSLATORS
from tokenvoy.extproc.translate.base import ClientAPI, ClientRequest

FUZZ = os.environ.get("TOKENVOY_FUZZ") == "1"  # set by `pytest --fuzz`
CASES = 500  # per test in CI: 107 tests, 53.5k cases, about 40 s of CPU
settings.register_profile(
    "translator-ci",
    max_examples=CASES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.register_profile(
    "translator-fuzz",
    max_examples=CASES * 50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
PROFILE = settings.get_profile("translator-fuzz" if FUZZ else "translator-ci")

# ---- documented shapes, the seeds every case is mutated from ----------------------------------------------

TOOL_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": ["string", "null"], "enum": ["Paris", "Rome"]}, "n": {"type": "integer"}},
    "required": ["city"],
}
OPENAI_CHAT_REQUEST = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hi"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"city":"Rome"}'}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ],
    "tools": [{"type": "function", "function": {"name": "f", "description": "d", "parameters": TOOL_SCHEMA}}],
    "tool_choice": "auto",
    "max_tokens": 100,
    "temperature": 0.5,
    "stop": ["x"],
    "reasoning_effort": "low",
    "stream_options": {"include_usage": True},
}
OPENAI_JSON_REQUEST = {
    "model": "m",
    "messages": [{"role": "user", "content": "hi"}],
    "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": TOOL_SCHEMA}},
    "max_completion_tokens": 50,
}
ANTHROPIC_REQUEST = {
    "model": "m",
    "max_tokens": 2048,
    "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hi"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "tool_use", "id": "t1", "name": "f", "input": {"city": "Rome"}},
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]},
    ],
    "tools": [{"name": "f", "description": "d", "input_schema": TOOL_SCHEMA}],
    "tool_choice": {"type": "auto"},
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "stop_sequences": ["x"],
    "temperature": 1,
}
ANTHROPIC_PLAIN_REQUEST = {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
EMBEDDINGS_REQUEST = {"model": "m", "input": ["a", "b"], "encoding_format": "float", "dimensions": 8}
COMPLETIONS_REQUEST = {"model": "m", "prompt": "hi", "max_tokens": 5}
RESPONSES_REQUEST = {
    "model": "m",
    "instructions": "be brief",
    "input": [
        {"role": "developer", "content": "be kind"},
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "hi"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"},
            ],
        },
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "hmm"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"city":"Rome"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
    ],
    "tools": [{"type": "function", "name": "f", "description": "d", "parameters": TOOL_SCHEMA, "strict": False}],
    "tool_choice": "auto",
    "max_output_tokens": 100,
    "temperature": 0.5,
    "reasoning": {"effort": "low", "summary": "auto"},
    "store": False,
}
RESPONSES_JSON_REQUEST = {
    "model": "m",
    "input": "hi",
    "text": {"format": {"type": "json_schema", "name": "r", "schema": TOOL_SCHEMA, "strict": True}},
    "tool_choice": {"type": "function", "name": "f"},
    "tools": [{"type": "function", "name": "f", "parameters": TOOL_SCHEMA}],
}
RESPONSES_PLAIN_REQUEST = {"model": "m", "input": "hi"}
GEMINI_CONTENTS = [
    {
        "role": "user",
        "parts": [{"text": "hi"}, {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}],
    },
    {
        "role": "model",
        "parts": [
            {"text": "hmm", "thought": True, "thoughtSignature": "c2ln"},
            {"functionCall": {"id": "c1", "name": "f", "args": {"city": "Rome"}}},
        ],
    },
    {"role": "user", "parts": [{"functionResponse": {"id": "c1", "name": "f", "response": {"output": "sunny"}}}]},
]
GEMINI_REQUEST = {
    "contents": GEMINI_CONTENTS,
    "systemInstruction": {"parts": [{"text": "be brief"}]},
    "tools": [{"functionDeclarations": [{"name": "f", "description": "d", "parameters": TOOL_SCHEMA}]}],
    "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}},
    "generationConfig": {
        "maxOutputTokens": 100,
        "temperature": 0.5,
        "topP": 0.9,
        "stopSequences": ["x"],
        "candidateCount": 1,
        "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": True},
    },
}
GEMINI_JSON_REQUEST = {
    "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
    "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": TOOL_SCHEMA},
}
GEMINI_PLAIN_REQUEST = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
GEMINI_COUNT_REQUEST = {"contents": GEMINI_CONTENTS}
GEMINI_WRAPPED_COUNT_REQUEST = {"generateContentRequest": {"model": "models/m", **GEMINI_REQUEST}}
# What the answer tests send: a request every backend accepts, so the answer is what varies.
SIMPLE_REQUESTS = {
    ClientAPI.OPENAI_CHAT: {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream_options": {"include_usage": True},
    },
    ClientAPI.ANTHROPIC_MESSAGES: ANTHROPIC_PLAIN_REQUEST,
    ClientAPI.OPENAI_EMBEDDINGS: {"model": "m", "input": "a"},
    ClientAPI.OPENAI_COMPLETIONS: COMPLETIONS_REQUEST,
    ClientAPI.OPENAI_RESPONSES: RESPONSES_PLAIN_REQUEST,
    ClientAPI.OPENAI_RESPONSES_INPUT_TOKENS: RESPONSES_PLAIN_REQUEST,
    ClientAPI.GEMINI_GENERATE: GEMINI_PLAIN_REQUEST,
    ClientAPI.GEMINI_COUNT_TOKENS: GEMINI_PLAIN_REQUEST,
    ClientAPI.ANTHROPIC_COUNT_TOKENS: {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
}
REQUESTS = {
    ClientAPI.OPENAI_CHAT: (OPENAI_CHAT_REQUEST, OPENAI_JSON_REQUEST),
    ClientAPI.ANTHROPIC_MESSAGES: (ANTHROPIC_REQUEST, ANTHROPIC_PLAIN_REQUEST),
    ClientAPI.OPENAI_EMBEDDINGS: (EMBEDDINGS_REQUEST,),
    ClientAPI.OPENAI_COMPLETIONS: (COMPLETIONS_REQUEST,),
    ClientAPI.OPENAI_RESPONSES: (RESPONSES_REQUEST, RESPONSES_JSON_REQUEST, RESPONSES_PLAIN_REQUEST),
    ClientAPI.OPENAI_RESPONSES_INPUT_TOKENS: (RESPONSES_REQUEST, RESPONSES_PLAIN_REQUEST),
    ClientAPI.GEMINI_GENERATE: (GEMINI_REQUEST, GEMINI_JSON_REQUEST),
    ClientAPI.GEMINI_COUNT_TOKENS: (GEMINI_COUNT_REQUEST, GEMINI_WRAPPED_COUNT_REQUEST),
    ClientAPI.ANTHROPIC_COUNT_TOKENS: (
        {key: value for key, value in ANTHROPIC_REQUEST.items() if key != "max_tokens"},
        ANTHROPIC_PLAIN_REQUEST,
    ),
}

OPENAI_USAGE = {
    "prompt_tokens": 5,
    "completion_tokens": 2,
    "total_tokens": 7,
    "prompt_tokens_details": {"cached_tokens": 1},
}
OPENAI_CHAT_ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Hi",
                "reasoning_content": "hmm",
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}],
            },
            "finish_reason": "tool_calls",
            "logprobs": None,
        }
    ],
    "usage": OPENAI_USAGE,
}


def _openai_chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "choices": [choice]}


OPENAI_CHAT_EVENTS = [
    _openai_chunk({"role": "assistant", "content": ""}),
    _openai_chunk({"reasoning_content": "hmm"}),
    _openai_chunk({"content": "Hi"}),
    _openai_chunk({"tool_calls": [{"index": 0, "id": "c1", "type": "function", "function": {"name": "f"}}]}),
    _openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":1}'}}]}),
    _openai_chunk({}, "tool_calls"),
    {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
        "choices": [],
        "usage": OPENAI_USAGE,
    },
    "[DONE]",
]
OPENAI_COMPLETION_ANSWER = {
    "id": "cmpl-1",
    "object": "text_completion",
    "created": 1,
    "model": "gpt-3.5-turbo-instruct",
    "choices": [{"text": "hi", "index": 0, "logprobs": None, "finish_reason": "stop"}],
    "usage": OPENAI_USAGE,
}
OPENAI_COMPLETION_EVENTS = [
    {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m", "choices": [{"text": "hi", "index": 0}]},
    {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m", "choices": [], "usage": OPENAI_USAGE},
    "[DONE]",
]
OPENAI_EMBEDDINGS_ANSWER = {
    "object": "list",
    "data": [
        {"object": "embedding", "index": 0, "embedding": [0.1, 0.2]},
        {"object": "embedding", "index": 1, "embedding": [0.3, 0.4]},
    ],
    "model": "text-embedding-3-small",
    "usage": {"prompt_tokens": 2, "total_tokens": 2},
}
ANTHROPIC_USAGE = {
    "input_tokens": 5,
    "output_tokens": 2,
    "cache_read_input_tokens": 1,
    "cache_creation_input_tokens": 0,
}
ANTHROPIC_ANSWER = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude",
    "content": [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "text", "text": "Hi"},
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": ANTHROPIC_USAGE,
}
ANTHROPIC_EVENTS = [
    {"type": "message_start", "message": {**ANTHROPIC_ANSWER, "content": [], "stop_reason": None}},
    {"type": "ping"},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi"}},
    {"type": "content_block_stop", "index": 1},
    {
        "type": "content_block_start",
        "index": 2,
        "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}},
    },
    {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"a":1}'}},
    {"type": "content_block_stop", "index": 2},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 2},
    },
    {"type": "message_stop"},
]
CONVERSE_USAGE = {"inputTokens": 5, "outputTokens": 2, "totalTokens": 7, "cacheReadInputTokens": 1}
CONVERSE_ANSWER = {
    "output": {
        "message": {
            "role": "assistant",
            "content": [
                {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "sig"}}},
                {"text": "Hi"},
                {"toolUse": {"toolUseId": "t1", "name": "f", "input": {"a": 1}}},
            ],
        }
    },
    "stopReason": "tool_use",
    "usage": CONVERSE_USAGE,
    "metrics": {"latencyMs": 10},
}
CONVERSE_EVENTS = [
    ("messageStart", {"role": "assistant"}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "hmm"}}}),
    ("contentBlockStop", {"contentBlockIndex": 0}),
    ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"text": "Hi"}}),
    ("contentBlockStop", {"contentBlockIndex": 1}),
    ("contentBlockStart", {"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "t1", "name": "f"}}}),
    ("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": '{"a":1}'}}}),
    ("contentBlockStop", {"contentBlockIndex": 2}),
    ("messageStop", {"stopReason": "tool_use"}),
    ("metadata", {"usage": CONVERSE_USAGE, "metrics": {"latencyMs": 10}}),
]
GEMINI_ANSWER = {
    "candidates": [
        {
            "content": {
                "role": "model",
                "parts": [
                    {"text": "hmm", "thought": True},
                    {"text": "Hi"},
                    {"functionCall": {"name": "f", "args": {"a": 1}}},
                ],
            },
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2, "totalTokenCount": 7, "thoughtsTokenCount": 1},
    "modelVersion": "gemini-2.5-flash",
    "createTime": "2025-01-01T00:00:00.000000Z",
    "responseId": "r1",
}
GEMINI_EVENTS = [
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]}, "index": 0}], "modelVersion": "g"},
    {"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]}}]},
    GEMINI_ANSWER,
]
VERTEX_EMBEDDINGS_ANSWER = {
    "predictions": [
        {"embeddings": {"values": [0.1, 0.2], "statistics": {"token_count": 1, "truncated": False}}},
        {"embeddings": {"values": [0.3, 0.4], "statistics": {"token_count": 1, "truncated": False}}},
    ]
}
TITAN_ANSWER = {"embedding": [0.1, 0.2], "inputTextTokenCount": 2}
RESPONSES_USAGE = {
    "input_tokens": 5,
    "input_tokens_details": {"cached_tokens": 1},
    "output_tokens": 2,
    "output_tokens_details": {"reasoning_tokens": 1},
    "total_tokens": 7,
}
RESPONSES_MESSAGE = {
    "type": "message",
    "id": "msg_1",
    "status": "completed",
    "role": "assistant",
    "content": [{"type": "output_text", "text": "Hi", "annotations": []}],
}
RESPONSES_CALL = {
    "type": "function_call",
    "id": "fc_1",
    "call_id": "c1",
    "name": "f",
    "arguments": '{"a":1}',
    "status": "completed",
}
RESPONSES_ANSWER = {
    "id": "resp_1",
    "object": "response",
    "created_at": 1,
    "status": "completed",
    "model": "gpt-4o",
    "output": [
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "hmm"}]},
        RESPONSES_MESSAGE,
        RESPONSES_CALL,
    ],
    "usage": RESPONSES_USAGE,
    "error": None,
    "incomplete_details": None,
}
_IN_PROGRESS = {**RESPONSES_ANSWER, "status": "in_progress", "output": [], "usage": None}
RESPONSES_EVENTS = [
    {"type": "response.created", "sequence_number": 0, "response": _IN_PROGRESS},
    {"type": "response.in_progress", "sequence_number": 1, "response": _IN_PROGRESS},
    {
        "type": "response.output_item.added",
        "sequence_number": 2,
        "output_index": 0,
        "item": {**RESPONSES_MESSAGE, "status": "in_progress", "content": []},
    },
    {
        "type": "response.content_part.added",
        "sequence_number": 3,
        "item_id": "msg_1",
        "output_index": 0,
        "content_index": 0,
        "part": {"type": "output_text", "text": "", "annotations": []},
    },
    {
        "type": "response.output_text.delta",
        "sequence_number": 4,
        "item_id": "msg_1",
        "output_index": 0,
        "content_index": 0,
        "delta": "Hi",
    },
    {
        "type": "response.output_text.done",
        "sequence_number": 5,
        "item_id": "msg_1",
        "output_index": 0,
        "content_index": 0,
        "text": "Hi",
    },
    {"type": "response.output_item.done", "sequence_number": 6, "output_index": 0, "item": RESPONSES_MESSAGE},
    {
        "type": "response.function_call_arguments.delta",
        "sequence_number": 7,
        "item_id": "fc_1",
        "output_index": 1,
        "delta": '{"a":1}',
    },
    {"type": "response.output_item.done", "sequence_number": 8, "output_index": 1, "item": RESPONSES_CALL},
    {"type": "response.completed", "sequence_number": 9, "response": RESPONSES_ANSWER},
]
RESPONSES_INPUT_TOKENS_ANSWER = {"object": "response.input_tokens", "input_tokens": 12}
GEMINI_COUNT_ANSWER = {
    "totalTokens": 12,
    "cachedContentTokenCount": 0,
    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 12}],
}
ANTHROPIC_COUNT_ANSWER = {"input_tokens": 12}
BEDROCK_COUNT_ANSWER = {"inputTokens": 12}


def _dumps(value: Any) -> bytes:
    """JSON as any client or provider may send it (integers beyond 64 bits included, which orjson refuses)."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", errors="surrogatepass")


# ---- wires: how each backend schema frames a streamed answer ------------------------------------------------


def _sse(events: list[Any]) -> list[bytes]:
    return [b"data: " + (e.encode() if isinstance(e, str) else _dumps(e)) + b"\n\n" for e in events]


def _typed_sse(events: list[Any]) -> list[bytes]:
    out = []
    for event in events:
        name = event.get("type") if isinstance(event, dict) else None
        head = b"event: " + name.encode() + b"\n" if isinstance(name, str) and "\n" not in name else b""
        out.append(head + b"data: " + _dumps(event) + b"\n\n")
    return out


def _gemini_sse(events: list[Any]) -> list[bytes]:
    return [b"data: " + _dumps(e) + b"\r\n\r\n" for e in events]


def _converse_frames(events: list[Any]) -> list[bytes]:
    out = []
    for event in events:
        if isinstance(event, list) and len(event) == 2 and isinstance(event[0], str):
            out.append(encode_event(event[0] or "x", _dumps(event[1])))
        else:
            out.append(encode_event("contentBlockDelta", _dumps(event)))
    return out


def _invoke_frames(events: list[Any]) -> list[bytes]:
    return [encode_event("chunk", orjson.dumps({"bytes": base64.b64encode(_dumps(e)).decode()})) for e in events]


@dataclass(frozen=True)
class Family:
    """A backend schema's answers: the plain answer, the stream's events and how they are framed."""

    answer: dict[str, Any]
    events: list[Any] | None
    frame: Any = None
    exception: bytes | None = None  # a mid-stream error as this wire sends it


ANTHROPIC_FAMILY = Family(ANTHROPIC_ANSWER, ANTHROPIC_EVENTS, _typed_sse)
FAMILIES: dict[tuple[ClientAPI, str], Family] = {}
# Each pair gets the answers its backend really sends: the Responses API for the Responses pass-through, counts
# for the count endpoints, and the backend's chat family for every translation through chat.
for _api, _schema in TRANSLATORS:
    if _api is ClientAPI.OPENAI_RESPONSES and _schema in ("OpenAI", "AzureOpenAI"):  # the Responses API itself
        FAMILIES[_api, _schema] = Family(RESPONSES_ANSWER, RESPONSES_EVENTS, _typed_sse)
    elif _api is ClientAPI.OPENAI_RESPONSES_INPUT_TOKENS:
        FAMILIES[_api, _schema] = Family(RESPONSES_INPUT_TOKENS_ANSWER, None)
    elif _api is ClientAPI.GEMINI_COUNT_TOKENS:
        FAMILIES[_api, _schema] = Family(GEMINI_COUNT_ANSWER, None)
    elif _api is ClientAPI.ANTHROPIC_COUNT_TOKENS:
        bedrock = _schema in ("AWSAnthropic", "AWSBedrock")
        FAMILIES[_api, _schema] = Family(BEDROCK_COUNT_ANSWER if bedrock else ANTHROPIC_COUNT_ANSWER, None)
    elif _api is ClientAPI.OPENAI_EMBEDDINGS:
        FAMILIES[_api, _schema] = Family(
            {"GCPVertexAI": VERTEX_EMBEDDINGS_ANSWER, "AWSBedrock": TITAN_ANSWER}.get(
                _schema, OPENAI_EMBEDDINGS_ANSWER
            ),
            None,
        )
    elif _api is ClientAPI.OPENAI_COMPLETIONS:
        FAMILIES[_api, _schema] = Family(OPENAI_COMPLETION_ANSWER, OPENAI_COMPLETION_EVENTS, _sse)
    elif _schema in ("OpenAI", "AzureOpenAI"):
        FAMILIES[_api, _schema] = Family(OPENAI_CHAT_ANSWER, OPENAI_CHAT_EVENTS, _sse)
    elif _schema in ("Anthropic", "GCPAnthropic"):
        FAMILIES[_api, _schema] = ANTHROPIC_FAMILY
    elif _schema == "AWSAnthropic":
        FAMILIES[_api, _schema] = Family(
            ANTHROPIC_ANSWER,
            ANTHROPIC_EVENTS,
            _invoke_frames,
            encode_exception("throttlingException", b'{"message":"slow down"}'),
        )
    elif _schema == "AWSBedrock":
        events = [list(e) for e in CONVERSE_EVENTS]
        FAMILIES[_api, _schema] = Family(
            CONVERSE_ANSWER,
            events,
            _converse_frames,
            encode_exception("throttlingException", b'{"message":"slow down"}'),
        )
    elif _schema == "GCPVertexAI":
        FAMILIES[_api, _schema] = Family(GEMINI_ANSWER, GEMINI_EVENTS, _gemini_sse)
    else:  # a translator added without seeds here fails loudly rather than going unfuzzed
        raise AssertionError(f"no fuzz seeds for {(_api, _schema)}")

BACKENDS = {
    schema: Backend(
        name=schema.lower(),
        schema=schema,
        schema_version=None,
        path_prefix="/v1",
        endpoint=Endpoint("provider.example", 443, tls=True),
    )
    for _, schema in TRANSLATORS
}
PASS_THROUGH = {
    (ClientAPI.OPENAI_CHAT, "OpenAI"),
    (ClientAPI.OPENAI_CHAT, "AzureOpenAI"),
    (ClientAPI.OPENAI_COMPLETIONS, "OpenAI"),
    (ClientAPI.OPENAI_EMBEDDINGS, "OpenAI"),
    (ClientAPI.OPENAI_EMBEDDINGS, "AzureOpenAI"),
    (ClientAPI.ANTHROPIC_MESSAGES, "Anthropic"),
    (ClientAPI.ANTHROPIC_MESSAGES, "GCPAnthropic"),
    (ClientAPI.OPENAI_RESPONSES, "OpenAI"),
    (ClientAPI.OPENAI_RESPONSES, "AzureOpenAI"),
    (ClientAPI.OPENAI_RESPONSES_INPUT_TOKENS, "OpenAI"),
    (ClientAPI.GEMINI_GENERATE, "GCPVertexAI"),
    (ClientAPI.GEMINI_COUNT_TOKENS, "GCPVertexAI"),
    (ClientAPI.ANTHROPIC_COUNT_TOKENS, "Anthropic"),
    (ClientAPI.ANTHROPIC_COUNT_TOKENS, "GCPAnthropic"),
}
KEYS = sorted(FAMILIES, key=lambda key: (key[0].value, key[1]))
STREAMING = [key for key in KEYS if FAMILIES[key].events is not None]
IDS = [f"{api.value}->{schema}" for api, schema in KEYS]

# ---- generators ---------------------------------------------------------------------------------------------
# Cases are built with a ``random.Random`` seeded by Hypothesis (one draw per case): far cheaper per case than
# drawing every node from Hypothesis, so the CI budget covers 50k cases in under a minute. Derandomized,
# the seeds (and so the cases) are the same on every run; a failing case is shown with ``note``.

_WORDS = ["text", "tool_use", "function", "message_stop", "STOP", "end_turn", "object", "", "[DONE]", "type"]


def _scalar(rng: random.Random) -> Any:
    kind = rng.randrange(8)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([0, -1, 1, 7, 2**63, 2**64 - 1, -(2**63) - 1, 2**70])
    if kind == 3:
        return rng.choice([0.5, -1e308, 1e-9, 1.2e21, 5.0])
    if kind == 4:
        return "".join(rng.choice('ab\u00e9\n\x00"{') for _ in range(rng.randrange(5)))
    return rng.choice(_WORDS)


def random_json(rng: random.Random, depth: int = 2) -> Any:
    """Any JSON value (a few levels deep): what a hostile peer may put where a field belongs."""
    kind = rng.randrange(6) if depth > 0 else 0
    if kind == 4:
        return [random_json(rng, depth - 1) for _ in range(rng.randrange(3))]
    if kind == 5:
        return {rng.choice(_WORDS): random_json(rng, depth - 1) for _ in range(rng.randrange(3))}
    return _scalar(rng)


def mutated(rng: random.Random, value: Any, rate: float = 0.08) -> Any:
    """``value`` with a few of its nodes replaced by arbitrary JSON, keys dropped, items dropped."""
    if rng.random() < rate:
        return random_json(rng)
    if isinstance(value, dict):
        return {key: mutated(rng, child, rate) for key, child in value.items() if rng.random() >= rate / 2}
    if isinstance(value, list):
        return [mutated(rng, item, rate) for item in value if rng.random() >= rate / 2]
    return value


HOSTILE_BODIES = [
    b"",
    b"null",
    b"[]",
    b"{}",
    b"42",
    b'"x"',
    b"<html><body>502 Bad Gateway</body></html>",
    b"\x00\xff\xfe\x89PNG",
    b'{"choices": null}',
    b'{"content": "x"}',
    b"data: [DONE]\n\n",
    b'{"type":"message"',
]


def split(rng: random.Random, body: bytes) -> list[bytes]:
    """``body`` cut at random places (Envoy delivers a stream in any split, empty chunks included)."""
    if not body:
        return [b""]
    cuts = sorted(rng.randrange(len(body) + 1) for _ in range(rng.randrange(7)))
    return [body[start:end] for start, end in zip([0, *cuts], [*cuts, len(body)], strict=True)]


def plain_answer(rng: random.Random, family: Family) -> bytes:
    choice = rng.randrange(10)
    if choice == 0:
        return rng.choice(HOSTILE_BODIES)
    if choice == 1:
        return _dumps(random_json(rng))
    if choice == 2:
        return rng.randbytes(rng.randrange(40))
    return _dumps(mutated(rng, family.answer))


def streamed_answer(rng: random.Random, family: Family) -> bytes:
    assert family.events is not None
    choice = rng.randrange(12)
    if choice == 0:
        return rng.choice(HOSTILE_BODIES)
    if choice == 1:
        return rng.randbytes(rng.randrange(60))
    if choice == 2:  # a plain JSON answer where a stream was asked for
        return _dumps(mutated(rng, family.answer))
    frames = family.frame([mutated(rng, event, 0.05) for event in family.events])
    if rng.randrange(4) == 0:  # cut short
        frames = frames[: rng.randrange(len(frames) + 1)]
    if rng.randrange(6) == 0:
        frames.insert(rng.randrange(len(frames) + 1), rng.randbytes(rng.randrange(20)))
    if family.exception is not None and rng.randrange(8) == 0:
        frames.insert(rng.randrange(len(frames) + 1), family.exception)
    body = b"".join(frames)
    if rng.randrange(8) == 0:  # cut mid-frame
        body = body[: rng.randrange(len(body) + 1)]
    return body


SEEDS = st.integers(min_value=0, max_value=2**64 - 1)


# ---- harness ------------------------------------------------------------------------------------------------


GEMINI_APIS = (ClientAPI.GEMINI_GENERATE, ClientAPI.GEMINI_COUNT_TOKENS)
UNSTREAMED_APIS = (ClientAPI.OPENAI_EMBEDDINGS, ClientAPI.OPENAI_RESPONSES_INPUT_TOKENS, *GEMINI_APIS)


def _request(api: ClientAPI, body: dict[str, Any], stream: bool) -> ClientRequest | None:
    """The client's request as the router hands it to translators, or None when the router refuses it.

    A Gemini API client names the model and the streaming in the path, not the body (``gemini_paths.py``):
    the router reads those from ``/v1beta/models/m:streamGenerateContent?alt=sse`` and the body apart."""
    body = {**body, "stream": stream} if api not in UNSTREAMED_APIS else body
    raw = _dumps(body)
    try:
        if api in GEMINI_APIS:
            method = "countTokens" if api is ClientAPI.GEMINI_COUNT_TOKENS else "generateContent"
            stream = stream and api is ClientAPI.GEMINI_GENERATE
            method = "streamGenerateContent" if stream else method
            path = f"/v1beta/models/m:{method}" + ("?alt=sse" if stream else "")
            read = read_gemini_body(raw, "m", stream)
        else:
            path = "/"
            read = read_body(raw, api)
    except GatewayError as error:
        assert 400 <= error.status < 500
        return None
    return ClientRequest(api, path, raw, read.body, read.model, read.stream, needs_usage=True, capture_output=True)


def _translator(key: tuple[ClientAPI, str], stream: bool) -> Any:
    api, schema = key
    request = _request(api, SIMPLE_REQUESTS[api], stream)
    assert request is not None
    translator = TRANSLATORS[key]()
    translator.translate_request(request, BACKENDS[schema], "m")
    return translator


def _feed(translator: Any, status: int, pieces: list[bytes]) -> tuple[bytes, UpstreamShapeError | None]:
    """What the client gets for ``pieces``: the translator's bytes (the provider's where it returns None). As
    the router calls it: a 2xx chunk by chunk, an error whole through ``translate_error``."""
    headers = {":status": str(status), "content-type": "application/json"}
    if not 200 <= status < 300:
        body = b"".join(pieces)
        replaced = translator.translate_error(status, headers, body)
        return (body if replaced is None else replaced), None
    translator.translate_response_headers(headers)
    out = []
    for position, piece in enumerate(pieces):
        try:
            replaced = translator.translate_response_body(piece, position == len(pieces) - 1)
        except UpstreamShapeError as error:
            assert error.status == 502 and error.message
            assert 200 <= status < 300, "provider errors are translated, not refused"
            out.append(error.emitted)
            return b"".join(out), error
        out.append(piece if replaced is None else replaced)
    return b"".join(out), None


def _events(body: bytes) -> list[Any]:
    """The client's stream read as its SDK reads it: every ``data`` must be JSON or ``[DONE]``."""
    parser = SSEParser()
    events = [*parser.feed(body), *parser.flush()]
    out = []
    for event in events:
        if not event.data:
            continue
        out.append("[DONE]" if event.data == "[DONE]" else orjson.loads(event.data))
    return out


def _has_end(api: ClientAPI, body: bytes) -> bool:
    """Whether a passed-through stream (the provider's own bytes) holds the end of its API's stream."""
    parser = SSEParser()
    for event in (*parser.feed(body), *parser.flush()):
        if not event.data:
            continue
        if event.data == "[DONE]":
            data: Any = "[DONE]"
        else:
            try:
                data = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                continue
        if _ended(api, [data]):
            return True
    return False


RESPONSES_ENDS = ("response.completed", "response.incomplete", "response.failed", "error")


def _finished(chunk: dict[str, Any]) -> bool:
    """A Gemini chunk that ends the answer: a candidate's ``finishReason``, or a prompt refused outright."""
    feedback = chunk.get("promptFeedback")
    if isinstance(feedback, dict) and feedback.get("blockReason"):
        return True
    candidates = chunk.get("candidates")
    return isinstance(candidates, list) and any(isinstance(c, dict) and c.get("finishReason") for c in candidates)


def _ended(api: ClientAPI, events: list[Any]) -> bool:
    if not events:
        return False
    last = events[-1]
    if api is ClientAPI.ANTHROPIC_MESSAGES:
        return isinstance(last, dict) and last.get("type") in ("message_stop", "error")
    if api is ClientAPI.OPENAI_RESPONSES:
        return isinstance(last, dict) and last.get("type") in RESPONSES_ENDS
    if api is ClientAPI.GEMINI_GENERATE:  # a chunk with a finishReason or a blocked prompt, or an error
        return isinstance(last, dict) and ("error" in last or _finished(last))
    return last == "[DONE]" or (isinstance(last, dict) and "error" in last)


@pytest.mark.parametrize("key", KEYS, ids=IDS)
@PROFILE
@given(seed=SEEDS)
def test_client_requests_are_translated_or_refused_with_a_4xx(key: tuple[ClientAPI, str], seed: int) -> None:
    api, schema = key
    rng = random.Random(seed)
    body = mutated(rng, rng.choice(REQUESTS[api]))
    if not isinstance(body, dict):
        body = {"model": "m", "messages": body}
    note(f"request body: {body!r}")
    request = _request(api, body, rng.random() < 0.5)
    if request is None:
        return
    translator = TRANSLATORS[key]()
    try:
        upstream = translator.translate_request(request, BACKENDS[schema], rng.choice(["m", "other"]))
    except GatewayError as error:
        assert 400 <= error.status < 500, error.message
        assert error.message
        return
    assert upstream.path.startswith("/")
    if upstream.body is not None:
        assert isinstance(orjson.loads(upstream.body), dict)


@pytest.mark.parametrize("key", KEYS, ids=IDS)
@PROFILE
@given(seed=SEEDS)
def test_plain_answers_are_translated_or_a_502(key: tuple[ClientAPI, str], seed: int) -> None:
    rng = random.Random(seed)
    status = rng.choice([200, 200, 200, 200, 400, 429, 500, 529])
    pieces = split(rng, plain_answer(rng, FAMILIES[key]))
    note(f"status {status}, answer in pieces: {pieces!r}")
    translator = _translator(key, stream=False)
    out, error = _feed(translator, status, pieces)
    if error is not None:
        return
    if status != 200 and key in PASS_THROUGH:
        return  # the provider's error is already in the client's shape and goes through unchanged
    answer = orjson.loads(out)  # a JSON object, never the provider's junk as a success
    assert isinstance(answer, dict)
    if status != 200:
        assert answer.get("type") == "error" or isinstance(answer.get("error"), dict)


@pytest.mark.parametrize("key", STREAMING, ids=[f"{a.value}->{s}" for a, s in STREAMING])
@PROFILE
@given(seed=SEEDS)
def test_streamed_answers_end_properly_or_with_an_error(key: tuple[ClientAPI, str], seed: int) -> None:
    rng = random.Random(seed)
    pieces = split(rng, streamed_answer(rng, FAMILIES[key]))
    note(f"stream in pieces: {pieces!r}")
    translator = _translator(key, stream=True)
    out, error = _feed(translator, 200, pieces)
    if key in PASS_THROUGH:
        if error is None:  # the bytes went through as they came: only a stream whose end came may
            assert _has_end(key[0], out), out[-200:]
        return
    events = _events(out)
    assert error is not None or _ended(key[0], events), out[-200:]
