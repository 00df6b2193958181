"""Shape checks for provider answers: a 2xx that is not the provider's API answer is a 502, never a success.

Translators read answers defensively (a field of the wrong type is skipped), but an answer that is not
an answer at all (HTML, ``[]``, ``null``, an empty or binary body, an object without the field every
answer of that API has) must not become an invented empty reply. These helpers raise
:class:`~tokenvoy.extproc.errors.UpstreamShapeError`, which the router answers as a 502 in the client API's
error shape (an error event when the stream is already under way). Pure: bytes and dicts in, no I/O.
"""

from __future__ import annotations

from typing import Any

import orjson

from tokenvoy.extproc.errors import UpstreamShapeError

_EXCERPT = 120  # bytes of a bad answer quoted in the message: enough to recognise an HTML page


def excerpt(raw: bytes) -> str:
    """The start of a body, printable, for an error message (binary bytes become ``\\xNN``)."""
    if not raw:
        return "an empty body"
    head = raw[:_EXCERPT]
    text = head.decode("utf-8", errors="backslashreplace")
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    return repr(text + ("…" if len(raw) > _EXCERPT else ""))


def answer_object(raw: bytes, provider: str) -> dict[str, Any]:
    """``raw`` parsed as the JSON object every provider answers with; otherwise an UpstreamShapeError."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamShapeError(f"{provider} answered 200 with a body that is not JSON: {excerpt(raw)}") from None
    if not isinstance(parsed, dict):
        kind = _json_kind(parsed)
        raise UpstreamShapeError(f"{provider} answered 200 with JSON {kind}, not an object: {excerpt(raw)}")
    return parsed


def require(answer: dict[str, Any], key: str, kind: type | tuple[type, ...], provider: str) -> Any:
    """``answer[key]`` when it has the type ``kind``; a missing or mistyped key is an UpstreamShapeError."""
    value = answer.get(key)
    if isinstance(value, kind) and not isinstance(value, bool):
        return value
    names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
    found = "missing" if key not in answer else f"JSON {_json_kind(value)}"
    raise UpstreamShapeError(
        f"{provider}'s answer has no valid `{key}` (expected {_JSON_NAMES.get(names, names)}, got {found})"
    )


def stream_cut(provider: str, what: str, emitted: bytes = b"") -> UpstreamShapeError:
    """The stream ended (or proved unreadable) before ``what``: the error the client's stream ends with."""
    return UpstreamShapeError(f"{provider}'s stream ended before {what}: the answer is incomplete", emitted)


_JSON_NAMES = {"dict": "an object", "list": "an array", "str": "a string", "int": "an integer"}


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    return "number"
