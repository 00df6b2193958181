"""``headerMutation`` / ``bodyMutation`` of a backendRef on top of its AIServiceBackend's, merged once at load.

As in Envoy AI Gateway, the route-level (backendRef) mutation wins a conflict with the backend-level one:
a header or field the route sets is no longer removed by the backend, and one the route removes is no longer
set by it. The upstream filter applies the result after translation, so it edits what the provider gets.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from tokenvoy.config.model import Backend, BackendRef, BodyMutation, HeaderMutation
from tokenvoy.extproc.jsonedit import remove_top_level, set_top_level


@dataclass(frozen=True, slots=True)
class Mutations:
    set_headers: dict[str, str]
    remove_headers: tuple[str, ...]
    set_fields: dict[str, orjson.Fragment]  # already-encoded JSON values
    remove_fields: tuple[str, ...]

    def apply_headers(self, set_headers: dict[str, str], remove: set[str]) -> None:
        """Applied last: over the translator's and the credential headers (``:path`` and ``content-length``
        are refused at load)."""
        for name in self.remove_headers:
            set_headers.pop(name, None)
            remove.add(name)
        for name, value in self.set_headers.items():
            remove.discard(name)
            set_headers[name] = value

    @property
    def edits_body(self) -> bool:
        return bool(self.set_fields or self.remove_fields)

    def apply_body(self, raw: bytes) -> bytes:
        return set_top_level(remove_top_level(raw, self.remove_fields), self.set_fields)


def _merged(
    backend: tuple[tuple[str, object], ...],
    backend_remove: tuple[str, ...],
    route: tuple[tuple[str, object], ...],
    route_remove: tuple[str, ...],
) -> tuple[dict[str, object], tuple[str, ...]]:
    route_set = dict(route)
    sets = {name: value for name, value in backend if name not in route_remove}
    sets.update(route_set)
    removes = [name for name in backend_remove if name not in route_set]
    removes.extend(name for name in route_remove if name not in removes)
    return sets, tuple(removes)


def merge(backend: Backend, ref: BackendRef) -> Mutations | None:
    """The mutations for requests sent to ``backend`` through ``ref``; None when there are none."""
    headers_b = backend.header_mutation or HeaderMutation()
    headers_r = ref.header_mutation or HeaderMutation()
    body_b = backend.body_mutation or BodyMutation()
    body_r = ref.body_mutation or BodyMutation()
    set_headers, remove_headers = _merged(headers_b.set, headers_b.remove, headers_r.set, headers_r.remove)
    set_fields, remove_fields = _merged(body_b.set, body_b.remove, body_r.set, body_r.remove)
    if not (set_headers or remove_headers or set_fields or remove_fields):
        return None
    return Mutations(
        set_headers={name: str(value) for name, value in set_headers.items()},
        remove_headers=remove_headers,
        set_fields={name: orjson.Fragment(value) for name, value in set_fields.items()},  # type: ignore[arg-type]
        remove_fields=remove_fields,
    )
