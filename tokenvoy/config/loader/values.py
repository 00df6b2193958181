"""Value formats several kinds share: Gateway API durations, RFC 3339 timestamps, HTTP header names, and
the RE2 check of regular expressions Envoy will compile."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from tokenvoy.config.loader.cursor import Cursor


def is_ip_address(name: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


# Gateway API Duration (GEP-2257), as the published CRDs validate it.
_DURATION = re.compile(r"^(?:[0-9]{1,5}(?:h|m|s|ms)){1,4}$")
_DURATION_PART = re.compile(r"([0-9]{1,5})(ms|h|m|s)")
_DURATION_MS = {"h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}
# An RFC 9110 field name (token); used with fullmatch, so a trailing newline is refused too.
HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")


def duration_ms(cursor: Cursor) -> int | None:
    """A Gateway API duration (``30s``, ``500ms``, ``1h2m``) in milliseconds; None if absent or invalid."""
    value = cursor.value
    if value is None:
        return None
    if not isinstance(value, str) or not _DURATION.match(value):
        cursor.report(f"must be a Gateway API duration such as 30s, 500ms or 1h2m, got {value!r}")
        return None
    return sum(int(number) * _DURATION_MS[unit] for number, unit in _DURATION_PART.findall(value))


def rfc3339_seconds(cursor: Cursor) -> int | None:
    """Unix seconds of an RFC 3339 timestamp (YAML may already have parsed it into a datetime)."""
    import datetime as dt

    value = parsed = cursor.value
    if value is None:
        return None
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            parsed = None
    if not isinstance(parsed, dt.datetime) or parsed.tzinfo is None:
        cursor.report(f"must be an RFC 3339 timestamp with a time zone such as 2024-05-21T10:00:00Z, got {value!r}")
        return None
    return int(parsed.timestamp())


def regex_problem(pattern: str) -> str | None:
    """Envoy matches with RE2: Perl-only syntax that Python accepts would stop Envoy from starting."""
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"invalid regular expression: {exc}"
    try:
        # The parse tree `re` itself compiles from.
        from re import _constants as sre
        from re import _parser as sre_parse

        parsed = sre_parse.parse(pattern)
    except (ImportError, AttributeError, re.error):  # pragma: no cover - other Python versions
        return None
    unsupported = {
        sre.ASSERT: "lookaround assertions",
        sre.ASSERT_NOT: "lookaround assertions",
        sre.GROUPREF: "backreferences",
        sre.GROUPREF_EXISTS: "conditional groups",
        sre.ATOMIC_GROUP: "atomic groups",
        sre.POSSESSIVE_REPEAT: "possessive quantifiers",
    }
    if parsed.state.flags & re.VERBOSE:
        return "the (?x) flag is not supported by Envoy's RE2 regular expressions"
    for op, argument in _regex_nodes(parsed, sre_parse.SubPattern):
        if op in unsupported:
            return f"{unsupported[op]} are not supported by Envoy's RE2 regular expressions"
        if op == sre.AT and argument == sre.AT_END_STRING:
            return r"\Z is not supported by Envoy's RE2 regular expressions; use $"
        if op == sre.SUBPATTERN and argument[1] & re.VERBOSE:
            return "the (?x) flag is not supported by Envoy's RE2 regular expressions"
    return None


def _regex_nodes(value: Any, subpattern: type) -> Iterable[tuple[Any, Any]]:
    if isinstance(value, subpattern):
        for op, argument in value.data:
            yield op, argument
            yield from _regex_nodes(argument, subpattern)
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _regex_nodes(item, subpattern)
