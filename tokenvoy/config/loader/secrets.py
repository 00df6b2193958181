"""Kubernetes ``Secret`` values: literal, base64 ``data``, or a ``${env:NAME}``/``${file:/path}`` reference
read lazily when the credential is used, never at load."""

from __future__ import annotations

import re

from tokenvoy.config.loader.cursor import Cursor, Problems, Resource
from tokenvoy.config.model import (
    Secret,
)

_ENV_REFERENCE = re.compile(r"^\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)\}$")
FILE_REFERENCE = re.compile(r"^\$\{file:(.+)\}$")


def secret_value(secret: Resource, key: str, problems: Problems) -> Secret | None:
    """The ``key`` of a Secret: a literal (``stringData`` or base64 ``data``) or where to read it from."""
    origin = f"{secret.ref} key {key!r}"
    root = Cursor.root(secret, problems)
    string_data = root["stringData"].mapping()
    data = root["data"].mapping()
    if key in string_data:
        value = str(string_data[key])
        if match := _ENV_REFERENCE.match(value):
            return Secret("env", match.group(1), origin)
        if match := FILE_REFERENCE.match(value):
            return Secret("file", match.group(1), origin)
        return Secret("literal", value, origin)
    if key in data:
        import base64
        import binascii

        try:
            return Secret("literal", base64.b64decode(str(data[key]), validate=True).decode(), origin)
        except (binascii.Error, UnicodeDecodeError):
            root["data"][key].report("is not valid base64")
            return None
    root["stringData"].report(f"has no key {key!r} (nor has data)")
    return None


SECRET_REF_FIELDS = {"name", "namespace", "group", "kind"}


def secret_ref(cursor: Cursor, secrets: dict[str, Resource], key: str) -> Secret | None:
    """The ``key`` of the Secret a ``secretRef`` names (read lazily, never here)."""
    if not cursor.present:
        cursor.report("required")
        return None
    if not cursor.fields(SECRET_REF_FIELDS):
        return None
    kind = cursor.get("kind", "Secret")
    if kind not in ("Secret", None, ""):
        cursor["kind"].report(f"must be Secret, got {kind!r}")
        return None
    if cursor.get("group") not in (None, ""):
        cursor["group"].report(f'must be the core group (""), got {cursor.get("group")!r}')
        return None
    name = cursor["name"].string()
    if name is None:
        return None
    secret = secrets.get(name)
    if secret is None:
        cursor["name"].report(f"Secret/{name} does not exist")
        return None
    return secret_value(secret, key, cursor.problems)


def secret_keys(secret: Resource, problems: Problems) -> list[str]:
    """The keys of a Secret (``stringData`` and ``data``), in order: client ids for apiKeyAuth."""
    names: list[str] = []
    root = Cursor.root(secret, problems)
    for section in ("stringData", "data"):
        for key in root[section].mapping():
            if str(key) not in names:
                names.append(str(key))
    return names
