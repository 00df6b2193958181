"""Header and body mutations (Envoy AI Gateway's ``headerMutation``/``bodyMutation``), on an
AIServiceBackend or on one backendRef of a route rule."""

from __future__ import annotations

import json
from collections.abc import Callable, Container

from tokenvoy.config.loader.cursor import Cursor
from tokenvoy.config.loader.values import HEADER_NAME
from tokenvoy.config.model import (
    BodyMutation,
    HeaderMutation,
)

_MUTATION_FIELDS = {"set", "remove"}
_HEADER_FIELDS = {"name", "value"}
_BODY_FIELD_FIELDS = {"path", "value"}

# The gateway computes these itself; an edit would corrupt the request.
_GATEWAY_OWNED_HEADERS = {"content-length", "host", "transfer-encoding"}
_GATEWAY_OWNED_FIELDS = {"stream": "the gateway reads the client's `stream` to handle the response"}
_MAX_MUTATIONS = 16  # per list, as in the CRD


def _mutation_list(cursor: Cursor) -> list[Cursor]:
    items = cursor.items()
    if len(items) > _MAX_MUTATIONS:
        cursor.report(f"at most {_MAX_MUTATIONS} entries, got {len(items)}")
    return items


def header_mutation(cursor: Cursor) -> HeaderMutation | None:
    if not cursor.present or not cursor.fields(_MUTATION_FIELDS):
        return None
    set_headers: dict[str, str] = {}
    for entry in _mutation_list(cursor["set"]):
        if not entry.fields(_HEADER_FIELDS):
            continue
        name = _header_name(entry["name"])
        header_value = entry.get("value")
        if not isinstance(header_value, str) or "\n" in header_value or "\r" in header_value:
            entry["value"].report(f"must be a single-line string, got {header_value!r}")
            continue
        if name is None:
            continue
        if name in set_headers:
            entry["name"].report(f"{name!r} is set twice")
            continue
        set_headers[name] = header_value
    removed = _removals(cursor["remove"], _header_name, set_headers)
    return HeaderMutation(tuple(set_headers.items()), removed)


def _removals(cursor: Cursor, parse_name: Callable[[Cursor], str | None], set_names: Container[str]) -> tuple[str, ...]:
    """A mutation's ``remove`` list: valid names, once each, none of them also set."""
    removed: list[str] = []
    for entry in _mutation_list(cursor):
        name = parse_name(entry)
        if name is None:
            continue
        if name in set_names:
            entry.report(f"{name!r} is both set and removed")
        elif name not in removed:
            removed.append(name)
    return tuple(removed)


def _header_name(cursor: Cursor) -> str | None:
    value = cursor.value
    if not isinstance(value, str) or not HEADER_NAME.fullmatch(value):
        cursor.report(f"must be an HTTP header name, got {value!r}")
        return None
    name = value.lower()
    if name in _GATEWAY_OWNED_HEADERS:
        cursor.report(f"{name!r} cannot be changed: the gateway sets it")
        return None
    return name


def body_mutation(cursor: Cursor) -> BodyMutation | None:
    if not cursor.present or not cursor.fields(_MUTATION_FIELDS):
        return None
    set_fields: dict[str, bytes] = {}
    for entry in _mutation_list(cursor["set"]):
        if not entry.fields(_BODY_FIELD_FIELDS):
            continue
        field_name = _body_field(entry["path"])
        raw = entry.get("value")
        if not isinstance(raw, str):
            entry["value"].report(f"must be a string holding a JSON value, got {raw!r}")
            continue
        # As in Envoy AI Gateway: a JSON literal (`"scale"`, `42`, `true`, `{...}`) is inserted as is, any
        # other text as a JSON string. Text that looks like JSON but does not parse is an error, not a string.
        try:
            parsed = json.loads(raw)
        except ValueError:
            if raw.strip()[:1] in ('"', "{", "[") or raw.strip() in ("true", "false", "null"):
                entry["value"].report(f"is not valid JSON: {raw!r}")
                continue
            parsed = raw
        if field_name is None:
            continue
        if field_name in set_fields:
            entry["path"].report(f"{field_name!r} is set twice")
            continue
        set_fields[field_name] = json.dumps(parsed, separators=(",", ":"), ensure_ascii=False).encode()
    removed = _removals(cursor["remove"], _body_field, set_fields)
    return BodyMutation(tuple(set_fields.items()), removed)


def _body_field(cursor: Cursor) -> str | None:
    value = cursor.value
    if not isinstance(value, str) or not value:
        cursor.report(f"must be a non-empty top-level field name, got {value!r}")
        return None
    if "." in value:
        cursor.report(f"only top-level fields can be changed, got the path {value!r}")
        return None
    if value in _GATEWAY_OWNED_FIELDS:
        cursor.report(f"{value!r} cannot be changed: {_GATEWAY_OWNED_FIELDS[value]}")
        return None
    return value
