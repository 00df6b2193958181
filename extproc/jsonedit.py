"""Edit top-level keys of a JSON object in place, without re-encoding the rest of the body.

Requests carry long histories and images; replacing ``model`` or adding ``stream_options`` must not cost
a full decode/encode of megabytes. A C-speed regex skips over strings; only brackets are walked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import orjson

_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[{}\[\]:,]')


def top_level_spans(raw: bytes) -> dict[str, tuple[int, int]]:
    """Map each top-level key to the byte span of its value. Expects a valid JSON object."""
    spans: dict[str, tuple[int, int]] = {}
    depth = 0
    key: str | None = None
    value_start = -1
    expecting_key = False
    for match in _TOKEN.finditer(raw):
        token = match.group()
        first = token[:1]
        if first in (b"{", b"["):
            depth += 1
            if depth == 1:
                expecting_key = True
            continue
        if first in (b"}", b"]"):
            if depth == 1 and key is not None:
                spans[key] = (value_start, _rstrip(raw, match.start()))
                key = None
            depth -= 1
            continue
        if depth != 1:
            continue
        if first == b'"' and expecting_key:
            key = orjson.loads(token)
            expecting_key = False
        elif first == b":":
            value_start = _lstrip(raw, match.end())
        elif first == b",":
            if key is not None:
                spans[key] = (value_start, _rstrip(raw, match.start()))
                key = None
            expecting_key = True
    return spans


def _lstrip(raw: bytes, index: int) -> int:
    while index < len(raw) and raw[index] in b" \t\r\n":
        index += 1
    return index


def _rstrip(raw: bytes, index: int) -> int:
    while index > 0 and raw[index - 1] in b" \t\r\n":
        index -= 1
    return index


def set_top_level(raw: bytes, updates: dict[str, object]) -> bytes:
    """Return ``raw`` with each key of ``updates`` replaced (or added first) with its JSON encoding."""
    if not updates:
        return raw
    spans = top_level_spans(raw)
    edits = []
    added = []
    for key, value in updates.items():
        encoded = orjson.dumps(value)
        if key in spans:
            edits.append((spans[key], encoded))
        else:
            added.append(orjson.dumps(key) + b":" + encoded)
    out = raw
    for (start, end), encoded in sorted(edits, reverse=True):
        out = out[:start] + encoded + out[end:]
    if added:
        opening = out.index(b"{") + 1
        empty = out[opening:].strip().startswith(b"}")
        insert = b",".join(added) + (b"" if empty else b",")
        out = out[:opening] + insert + out[opening:]
    return out


def remove_top_level(raw: bytes, keys: Iterable[str]) -> bytes:
    """Return ``raw`` without the top-level ``keys`` (every occurrence); the other members keep their bytes."""
    wanted = set(keys)
    if not wanted:
        return raw
    members: list[tuple[str, int, int]] = []  # (key, start of the key, end of the value)
    depth = 0
    key: str | None = None
    start = opening = closing = -1
    expecting_key = False
    for match in _TOKEN.finditer(raw):
        token = match.group()
        first = token[:1]
        if first in (b"{", b"["):
            depth += 1
            if depth == 1:
                opening = match.start()
                expecting_key = True
            continue
        if first in (b"}", b"]"):
            if depth == 1:
                if key is not None:
                    members.append((key, start, _rstrip(raw, match.start())))
                closing = match.start()
                break
            depth -= 1
            continue
        if depth != 1:
            continue
        if first == b'"' and expecting_key:
            key = orjson.loads(token)
            start = match.start()
            expecting_key = False
        elif first == b",":
            if key is not None:
                members.append((key, start, _rstrip(raw, match.start())))
                key = None
            expecting_key = True
    if closing < 0 or not any(name in wanted for name, _, _ in members):
        return raw
    kept = b",".join(raw[begin:end] for name, begin, end in members if name not in wanted)
    return raw[: opening + 1] + kept + raw[closing:]
