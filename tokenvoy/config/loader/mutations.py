"""Header and body mutations (Envoy AI Gateway's ``headerMutation``/``bodyMutation``), on an
AIServiceBackend or on one backendRef of a route rule."""

from __future__ import annotations

import json
from collections.abc import Callable, Container
from typing import Any

from tokenvoy.config.loader.cursor import _check_fields, _list, _Problems, _Resource
from tokenvoy.config.loader.values import _HEADER_NAME
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


def _mutation_list(resource: _Resource, value: Any, path: str, problems: _Problems) -> list[Any]:
    items = _list(resource, value, path, problems)
    if len(items) > _MAX_MUTATIONS:
        problems.add(resource, path, f"at most {_MAX_MUTATIONS} entries, got {len(items)}")
    return items


def _header_mutation(resource: _Resource, value: Any, path: str, problems: _Problems) -> HeaderMutation | None:
    if value is None or not _check_fields(resource, value, path, _MUTATION_FIELDS, problems):
        return None
    set_headers: dict[str, str] = {}
    for index, entry in enumerate(_mutation_list(resource, value.get("set"), f"{path}.set", problems)):
        entry_path = f"{path}.set[{index}]"
        if not _check_fields(resource, entry, entry_path, _HEADER_FIELDS, problems):
            continue
        name = _header_name(resource, entry.get("name"), f"{entry_path}.name", problems)
        header_value = entry.get("value")
        if not isinstance(header_value, str) or "\n" in header_value or "\r" in header_value:
            problems.add(resource, f"{entry_path}.value", f"must be a single-line string, got {header_value!r}")
            continue
        if name is None:
            continue
        if name in set_headers:
            problems.add(resource, f"{entry_path}.name", f"{name!r} is set twice")
            continue
        set_headers[name] = header_value
    removed = _removals(resource, value, path, problems, _header_name, set_headers)
    return HeaderMutation(tuple(set_headers.items()), removed)


def _removals(
    resource: _Resource,
    value: dict[str, Any],
    path: str,
    problems: _Problems,
    parse_name: Callable[[_Resource, Any, str, _Problems], str | None],
    set_names: Container[str],
) -> tuple[str, ...]:
    """A mutation's ``remove`` list: valid names, once each, none of them also set."""
    removed: list[str] = []
    for index, entry in enumerate(_mutation_list(resource, value.get("remove"), f"{path}.remove", problems)):
        name = parse_name(resource, entry, f"{path}.remove[{index}]", problems)
        if name is None:
            continue
        if name in set_names:
            problems.add(resource, f"{path}.remove[{index}]", f"{name!r} is both set and removed")
        elif name not in removed:
            removed.append(name)
    return tuple(removed)


def _header_name(resource: _Resource, value: Any, path: str, problems: _Problems) -> str | None:
    if not isinstance(value, str) or not _HEADER_NAME.match(value):
        problems.add(resource, path, f"must be an HTTP header name, got {value!r}")
        return None
    name = value.lower()
    if name in _GATEWAY_OWNED_HEADERS:
        problems.add(resource, path, f"{name!r} cannot be changed: the gateway sets it")
        return None
    return name


def _body_mutation(resource: _Resource, value: Any, path: str, problems: _Problems) -> BodyMutation | None:
    if value is None or not _check_fields(resource, value, path, _MUTATION_FIELDS, problems):
        return None
    set_fields: dict[str, bytes] = {}
    for index, entry in enumerate(_mutation_list(resource, value.get("set"), f"{path}.set", problems)):
        entry_path = f"{path}.set[{index}]"
        if not _check_fields(resource, entry, entry_path, _BODY_FIELD_FIELDS, problems):
            continue
        field_name = _body_field(resource, entry.get("path"), f"{entry_path}.path", problems)
        raw = entry.get("value")
        if not isinstance(raw, str):
            problems.add(resource, f"{entry_path}.value", f"must be a string holding a JSON value, got {raw!r}")
            continue
        # As in Envoy AI Gateway: a JSON literal (`"scale"`, `42`, `true`, `{...}`) is inserted as is, any
        # other text as a JSON string. Text that looks like JSON but does not parse is an error, not a string.
        try:
            parsed = json.loads(raw)
        except ValueError:
            if raw.strip()[:1] in ('"', "{", "[") or raw.strip() in ("true", "false", "null"):
                problems.add(resource, f"{entry_path}.value", f"is not valid JSON: {raw!r}")
                continue
            parsed = raw
        if field_name is None:
            continue
        if field_name in set_fields:
            problems.add(resource, f"{entry_path}.path", f"{field_name!r} is set twice")
            continue
        set_fields[field_name] = json.dumps(parsed, separators=(",", ":"), ensure_ascii=False).encode()
    removed = _removals(resource, value, path, problems, _body_field, set_fields)
    return BodyMutation(tuple(set_fields.items()), removed)


def _body_field(resource: _Resource, value: Any, path: str, problems: _Problems) -> str | None:
    if not isinstance(value, str) or not value:
        problems.add(resource, path, f"must be a non-empty top-level field name, got {value!r}")
        return None
    if "." in value:
        problems.add(resource, path, f"only top-level fields can be changed, got the path {value!r}")
        return None
    if value in _GATEWAY_OWNED_FIELDS:
        problems.add(resource, path, f"{value!r} cannot be changed: {_GATEWAY_OWNED_FIELDS[value]}")
        return None
    return value
