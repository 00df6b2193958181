"""The loader's shared vocabulary: a parsed resource, the problems collected about it, and the field
readers every kind uses (a value of the wrong type is reported with its path, never raised)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class ConfigError(Exception):
    """Raised with every problem found, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass
class _Resource:
    kind: str
    name: str
    spec: dict[str, Any]
    metadata: dict[str, Any]
    source: str
    raw: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass
class _Problems:
    items: list[str] = field(default_factory=list)

    def add(self, resource: _Resource | None, path: str, message: str) -> None:
        where = f"{resource.source}: {resource.ref}" if resource else ""
        self.items.append(f"{where}: {path}: {message}" if path else f"{where}: {message}")


def _check_fields(resource: _Resource, value: Any, path: str, allowed: set[str], problems: _Problems) -> bool:
    if not isinstance(value, dict):
        problems.add(resource, path, f"must be a mapping, got {type(value).__name__}")
        return False
    for key in value:
        if key not in allowed:
            problems.add(resource, f"{path}.{key}", f"unknown field (known: {', '.join(sorted(allowed))})")
    return True


def _mapping(resource: _Resource, value: Any, path: str, problems: _Problems) -> dict[str, Any]:
    """``value`` when it is a mapping (absent = empty); anything else is reported, by type only."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.add(resource, path, f"must be a mapping, got {type(value).__name__}")
        return {}
    return value


def _list(resource: _Resource, value: Any, path: str, problems: _Problems) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        problems.add(resource, path, f"must be a list, got {type(value).__name__}")
        return []
    return value


def _unsupported(resource: _Resource, value: dict[str, Any], path: str, fields: dict[str, str], problems: _Problems):
    """Valid Envoy Gateway fields that tokenvoy cannot honour and must not silently drop."""
    for key, why in fields.items():
        if value.get(key) not in (None, False, [], {}):
            problems.add(resource, f"{path}.{key}", f"not supported by tokenvoy: {why}")


def _string(resource: _Resource, value: Any, path: str, problems: _Problems, required: bool = True) -> str | None:
    if value is None:
        if required:
            problems.add(resource, path, "required")
        return None
    if not isinstance(value, str) or not value:
        problems.add(resource, path, f"must be a non-empty string, got {value!r}")
        return None
    return value


def _integer(resource: _Resource, value: Any, path: str, problems: _Problems, default: int, minimum: int = 0) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        problems.add(resource, path, f"must be an integer >= {minimum}, got {value!r}")
        return default
    return value


def _reference_kind(
    resource: _Resource, ref: dict[str, Any], path: str, kind: str, group: str, problems: _Problems
) -> None:
    """A reference's ``kind`` and ``group``: absent, or the one kind tokenvoy resolves there."""
    for key, expected in (("kind", kind), ("group", group)):
        if ref.get(key) not in (None, expected):
            problems.add(resource, f"{path}.{key}", f"must be {expected}, got {ref.get(key)!r}")
