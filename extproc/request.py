"""Reading the client's request body: the fields tokenvoy routes, streams and budgets on, checked once.

Pure (bytes in, values or a ``GatewayError`` out), so every refusal is unit-tested; the router calls
``read_body`` on the one body message Envoy sends. Each refusal is a 400 worded as the client API's own
server words it (OpenAI's ``Invalid type for 'stream'…``, Anthropic's ``max_tokens: Field required``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from tokenvoy.apis.client_apis import ClientAPI, Family
from tokenvoy.extproc.errors import GatewayError

if TYPE_CHECKING:
    from tokenvoy.pb.envoy.config.core.v3.base_pb2 import HeaderValue

# A model name becomes the `x-ai-eg-model` request header (routing, budgets, the access log): it must be a
# valid HTTP header value, and short. Provider model ids are far shorter (the longest are Bedrock inference
# profile ARNs and Vertex endpoint paths, ~100-150 characters); Envoy's whole header block is limited to 60 KiB.
MAX_MODEL_LENGTH = 256
# Top-level fields tokenvoy reads and may forward as the client sent them: a second copy would make the
# gateway route (or budget, or stream) on one value while the provider reads the other.
READ_KEYS = ("model", "stream", "stream_options", "max_tokens", "max_completion_tokens")
_QUOTED_KEYS = tuple((key, f'"{key}"'.encode()) for key in READ_KEYS)
# `\u0061`…`\u007a`: an ASCII letter written as an escape, which no JSON encoder does on its own; a key
# spelled so (`"\u006dodel"`) is the same key to every parser, and invisible to a byte search.
_ASCII_ESCAPES = (b"\\u006", b"\\u007")


@dataclass(frozen=True, slots=True)
class RequestBody:
    body: dict[str, Any]
    model: str
    stream: bool


def read_body(raw: bytes, api: ClientAPI) -> RequestBody:
    """The parsed body, its model and whether the client asked for a stream; raises ``GatewayError`` (400)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise GatewayError(400, "the request body must be a JSON object")
    if (duplicate := duplicate_key(raw, body)) is not None:
        raise GatewayError(400, f"the request body has the field `{duplicate}` more than once: send each field once")
    spec = api.spec
    anthropic = spec.family is Family.ANTHROPIC
    model = body.get("model")
    if anthropic and not isinstance(model, str):
        raise GatewayError(400, "model: Field required" if model is None else "model: Input should be a valid string")
    if not isinstance(model, str) or not model:
        raise GatewayError(400, "missing required field `model` (a non-empty string)")
    check_model(model)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool) and spec.streams:
        if anthropic:
            raise GatewayError(400, "stream: Input should be a valid boolean")
        raise GatewayError(400, f"Invalid type for 'stream': expected a boolean, but got {_type_name(stream)} instead.")
    if api is ClientAPI.ANTHROPIC_MESSAGES:
        _check_max_tokens(body.get("max_tokens", _ABSENT))
    return RequestBody(
        body, model, stream is True and api is not ClientAPI.ANTHROPIC_COUNT_TOKENS
    )  # counts never stream


def read_gemini_body(raw: bytes, model: str, stream: bool) -> RequestBody:
    """A Gemini API body (the model and the streaming come from the path); raises ``GatewayError`` (400)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(400, f"Invalid JSON payload received. {exc}") from None
    if not isinstance(body, dict):
        raise GatewayError(400, "Invalid JSON payload received. The request body must be a JSON object.")
    check_model(model)
    return RequestBody(body, model, stream)


def check_model(model: str) -> None:
    """A model name Envoy can carry in a header: no control characters (NUL, CR, LF…), at most 256 characters."""
    if len(model) > MAX_MODEL_LENGTH:
        raise GatewayError(
            400, f"invalid `model`: {len(model)} characters, longer than the {MAX_MODEL_LENGTH} a model name may have"
        )
    if not model.isprintable():  # fast path: printable names (every real one) need no scan
        for char in model:
            if ord(char) < 0x20 or ord(char) == 0x7F:
                why = f"it contains the control character U+{ord(char):04X}, which an HTTP header cannot carry"
                raise GatewayError(400, f"invalid `model`: {why}")


def duplicate_key(raw: bytes, body: dict[str, Any]) -> str | None:
    """The first of ``READ_KEYS`` the body's top-level object has twice (orjson keeps only the last copy).

    A byte count finds the candidates: a key absent from the parsed object, or quoted once in the bytes,
    has no second copy, so a second parse (which sees every copy) runs only when some key is quoted twice
    (the key, or the same word as a string value) or when an ASCII letter is escaped. About 2-4 byte scans
    of the body, each about the cost of orjson's parse."""
    present = [(key, quoted) for key, quoted in _QUOTED_KEYS if key in body]  # an absent key has no copy
    if not present:
        return None
    suspects = [key for key, quoted in present if raw.count(quoted) > 1]
    if not suspects:
        if raw.find(b"\\") == -1 or not any(escape in raw for escape in _ASCII_ESCAPES):  # memchr first
            return None
        suspects = [key for key, _ in present]
    top: list[tuple[str, Any]] = []

    def keep(pairs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        nonlocal top
        top = pairs  # objects close inside out: the last one is the top level
        return pairs

    try:
        json.loads(raw, object_pairs_hook=keep)
    except ValueError:  # what orjson parsed, json should too; if not, orjson's reading stands
        return None
    keys = [key for key, _ in top]
    for key in suspects:
        if keys.count(key) > 1:
            return key
    return None


_ABSENT = object()


def _check_max_tokens(value: object) -> None:
    """Anthropic's Messages API requires ``max_tokens`` (an integer >= 1), whichever backend serves the call."""
    if value is _ABSENT:
        raise GatewayError(400, "max_tokens: Field required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise GatewayError(400, "max_tokens: Input should be a valid integer")
    if value < 1:
        raise GatewayError(400, "max_tokens: Input should be greater than or equal to 1")


def _type_name(value: object) -> str:
    """As OpenAI names JSON types in its errors."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def check_identity_headers(headers: Iterable[HeaderValue], identity: Mapping[str, bool]) -> None:
    """Refuse a request whose budget identity is ambiguous: a header a budget selects on (``identity``: name →
    whether a budget counts per value of it) sent more than once, or sent empty where budgets count per value.

    Envoy's rate-limit descriptor takes the first copy while other filters see another; an empty value would
    put every such client into one shared counter (docs/budgets.md)."""
    seen: dict[str, int] = {}
    for header in headers:
        name = header.key
        if name not in identity:
            continue
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            raise GatewayError(
                400, f"the header `{name}` is sent more than once: a token budget counts one value, send it once"
            )
        value = header.raw_value if header.raw_value else header.value.encode()
        if identity[name] and not value.strip(b" \t"):
            raise GatewayError(
                400, f"the header `{name}` is empty: token budgets count per value of it; send a value or leave it out"
            )
