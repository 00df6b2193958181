"""Values that satisfy a JSON schema: the arguments every fake provider puts in the tool call it answers."""

from __future__ import annotations

from typing import Any

__all__ = ["sample_value"]


def sample_value(schema: object) -> Any:
    """A value valid for a JSON schema, deterministic: const, enum's first, default, else by type (every
    required property of an object, ``minItems`` items of an array, minimums honoured)."""
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return sample_value(options[0])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        required = schema.get("required") if isinstance(schema.get("required"), list) else []
        return {name: sample_value(properties.get(name, {})) for name in required if isinstance(name, str)}
    if kind == "array":
        count = schema.get("minItems") if isinstance(schema.get("minItems"), int) else 0
        return [sample_value(schema.get("items", {})) for _ in range(count)]
    if kind in ("integer", "number"):
        minimum = schema.get("minimum", schema.get("exclusiveMinimum"))
        value = minimum if isinstance(minimum, int | float) and minimum > 0 else 0
        if "exclusiveMinimum" in schema and value == schema["exclusiveMinimum"]:
            value += 1
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    length = schema.get("minLength") if isinstance(schema.get("minLength"), int) else 0
    return ("fox" * (length // 3 + 1))[: max(length, 3)]
