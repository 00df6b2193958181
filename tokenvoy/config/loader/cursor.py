"""The loader's shared vocabulary: a parsed resource, the problems collected about it, and the ``Cursor``
every kind reads its fields through.

A cursor is one value of one resource together with its path (``spec.rules[0].backendRefs[1].weight``).
Its readers report what is wrong with the value at that path and return a neutral result (``None``, an
empty mapping, the default), so a kind module never builds a path string nor passes the problem list on,
and one bad field never hides the next.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


class ConfigError(Exception):
    """Raised with every problem found, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass
class Resource:
    """One document of the config: ``spec`` is the document's (absent: empty), ``raw`` the whole document."""

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
class Problems:
    """Every problem found, as ``<file>: <kind>/<name>: <path>: <message>``."""

    items: list[str] = field(default_factory=list)

    def add(self, resource: Resource | None, path: str, message: str) -> None:
        where = f"{resource.source}: {resource.ref}" if resource else ""
        self.items.append(f"{where}: {path}: {message}" if path else f"{where}: {message}")


class Cursor:
    """A value of ``resource`` at ``path``; reading it reports what is wrong there (see the module docstring)."""

    __slots__ = ("path", "problems", "resource", "value")

    def __init__(self, resource: Resource, value: Any, path: str, problems: Problems) -> None:
        self.resource = resource
        self.value = value
        self.path = path
        self.problems = problems

    @classmethod
    def root(cls, resource: Resource, problems: Problems) -> Cursor:
        """The whole document, its ``spec`` as loaded (absent: an empty mapping)."""
        return cls(resource, {**resource.raw, "spec": resource.spec}, "", problems)

    @classmethod
    def spec(cls, resource: Resource, problems: Problems) -> Cursor:
        return cls(resource, resource.spec, "spec", problems)

    def __getitem__(self, key: str) -> Cursor:
        """The field ``key`` of this mapping (absent, or this is no mapping: a cursor on None)."""
        value = self.value.get(key) if isinstance(self.value, dict) else None
        return Cursor(self.resource, value, f"{self.path}.{key}" if self.path else key, self.problems)

    def get(self, key: str, default: Any = None) -> Any:
        """The raw value of the field ``key`` (``default`` when absent or this is no mapping)."""
        return self.value.get(key, default) if isinstance(self.value, dict) else default

    @property
    def present(self) -> bool:
        return self.value is not None

    def report(self, message: str) -> None:
        self.problems.add(self.resource, self.path, message)

    def fields(self, allowed: Collection[str]) -> bool:
        """True when the value is a mapping; its fields outside ``allowed`` are reported (absent: not a mapping)."""
        if not isinstance(self.value, dict):
            self.report(f"must be a mapping, got {type(self.value).__name__}")
            return False
        for key in self.value:
            if key not in allowed:
                self[key].report(f"unknown field (known: {', '.join(sorted(allowed))})")
        return True

    def mapping(self, allowed: Collection[str] | None = None) -> dict[str, Any]:
        """The value when it is a mapping (absent = empty); anything else is reported, by type only. With
        ``allowed``, its fields outside them are reported too."""
        if self.value is None:
            return {}
        if not isinstance(self.value, dict):
            self.report(f"must be a mapping, got {type(self.value).__name__}")
            return {}
        if allowed is not None:
            self.fields(allowed)
        return self.value

    def items(self) -> list[Cursor]:
        """A cursor on each element of the list (absent = none); anything else is reported, by type only."""
        if self.value is None:
            return []
        if not isinstance(self.value, list):
            self.report(f"must be a list, got {type(self.value).__name__}")
            return []
        return [
            Cursor(self.resource, item, f"{self.path}[{index}]", self.problems) for index, item in enumerate(self.value)
        ]

    def entries(self) -> Iterator[tuple[Any, Cursor]]:
        """(key, cursor) for each entry of the mapping (absent = none)."""
        for key in self.mapping():
            yield key, self[key]

    def unsupported(self, why: Mapping[str, str]) -> None:
        """Valid Envoy Gateway fields that tokenvoy cannot honour and must not silently drop."""
        for key, reason in why.items():
            if self.get(key) not in (None, False, [], {}):
                self[key].report(f"not supported by tokenvoy: {reason}")

    def string(self, required: bool = True) -> str | None:
        if self.value is None:
            if required:
                self.report("required")
            return None
        if not isinstance(self.value, str) or not self.value:
            self.report(f"must be a non-empty string, got {self.value!r}")
            return None
        return self.value

    def integer(self, default: int, minimum: int = 0) -> int:
        value = self.value
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.report(f"must be an integer >= {minimum}, got {value!r}")
            return default
        return value

    def boolean(self, default: bool = False) -> bool:
        if self.value is None:
            return default
        if not isinstance(self.value, bool):
            self.report(f"must be true or false, got {self.value!r}")
            return default
        return self.value

    def reference_kind(self, kind: str, group: str) -> None:
        """A reference's ``kind`` and ``group``: absent, or the one kind tokenvoy resolves there."""
        for key, expected in (("kind", kind), ("group", group)):
            if self.get(key) not in (None, expected):
                self[key].report(f"must be {expected}, got {self.get(key)!r}")
