"""Kubernetes ``Secret`` values: literal, base64 ``data``, or a ``${env:NAME}``/``${file:/path}`` reference
read lazily when the credential is used, never at load."""

from __future__ import annotations

import re
from typing import Any

from tokenvoy.config.loader.cursor import Problems, Resource, _check_fields, _mapping, _string
from tokenvoy.config.model import (
    Secret,
)

_ENV_REFERENCE = re.compile(r"^\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)\}$")
_FILE_REFERENCE = re.compile(r"^\$\{file:(.+)\}$")


def _secret_value(resource: Resource, key: str, problems: Problems) -> Secret | None:
    origin = f"{resource.ref} key {key!r}"
    string_data = _mapping(resource, resource.raw.get("stringData"), "stringData", problems)
    data = _mapping(resource, resource.raw.get("data"), "data", problems)
    if key in string_data:
        value = str(string_data[key])
        if match := _ENV_REFERENCE.match(value):
            return Secret("env", match.group(1), origin)
        if match := _FILE_REFERENCE.match(value):
            return Secret("file", match.group(1), origin)
        return Secret("literal", value, origin)
    if key in data:
        import base64
        import binascii

        try:
            return Secret("literal", base64.b64decode(str(data[key]), validate=True).decode(), origin)
        except (binascii.Error, UnicodeDecodeError):
            problems.add(resource, f"data.{key}", "is not valid base64")
            return None
    problems.add(resource, "stringData", f"has no key {key!r} (nor has data)")
    return None


_SECRET_REF_FIELDS = {"name", "namespace", "group", "kind"}


def _secret_ref(
    resource: Resource, value: Any, path: str, secrets: dict[str, Resource], key: str, problems: Problems
) -> Secret | None:
    """The ``key`` of the Secret a ``secretRef`` names (read lazily, never here)."""
    if value is None:
        problems.add(resource, path, "required")
        return None
    if not _check_fields(resource, value, path, _SECRET_REF_FIELDS, problems):
        return None
    kind = value.get("kind", "Secret")
    if kind not in ("Secret", None, ""):
        problems.add(resource, f"{path}.kind", f"must be Secret, got {kind!r}")
        return None
    if value.get("group") not in (None, ""):
        problems.add(resource, f"{path}.group", f'must be the core group (""), got {value["group"]!r}')
        return None
    name = _string(resource, value.get("name"), f"{path}.name", problems)
    if name is None:
        return None
    secret = secrets.get(name)
    if secret is None:
        problems.add(resource, f"{path}.name", f"Secret/{name} does not exist")
        return None
    return _secret_value(secret, key, problems)


def _secret_keys(secret: Resource, problems: Problems) -> list[str]:
    """The keys of a Secret (``stringData`` and ``data``), in order: client ids for apiKeyAuth."""
    names: list[str] = []
    for section in ("stringData", "data"):
        for key in _mapping(secret, secret.raw.get(section), section, problems):
            if str(key) not in names:
                names.append(str(key))
    return names
