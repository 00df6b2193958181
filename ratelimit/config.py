"""Rate limit configuration: the envoyproxy/ratelimit YAML format, parsed into an immutable lookup tree.

The file format is the one of https://github.com/envoyproxy/ratelimit so users can bring their existing
configuration::

    domain: ai
    descriptors:
      - key: x-user-id                 # no value: every user gets a counter of their own
        rate_limit: {unit: hour, requests_per_unit: 100000}
      - key: model
        value: gpt-*                   # trailing "*": value prefix match
        rate_limit: {unit: minute, requests_per_unit: 600, name: gpt}
        shadow_mode: true              # count, report, but never reject

This module is pure (no file or network I/O): callers hand it ``(source_name, yaml_text)`` pairs and get a
:class:`RateLimitConfig` whose :meth:`RateLimitConfig.get_limit` walks the tree with dict lookups only.

Deliberate differences from upstream, all of them stricter:

- keys are validated per level (upstream accepts any known key anywhere) and unknown keys are errors;
- ``requests_per_unit``/``unit`` are required unless ``unlimited: true`` (upstream silently uses 0);
- ``replaces`` must name a limit defined in the same domain, and ``shadow_mode`` needs a ``rate_limit``
  on the same descriptor (neither would ever have an effect otherwise), except on a descriptor whose
  every limit below is in shadow mode too (what Envoy Gateway generates: it changes nothing);
- ``quota_mode``, ``value_to_metric``, ``share_threshold`` and ``metadata`` are accepted only when off or
  empty (tokenvoy does not implement them; Envoy Gateway writes them out as ``false``);
- ``value`` must be a string or an integer (``1.10`` or ``true`` would not survive YAML round-tripping);
- duplicate mapping keys in the YAML are errors instead of "last one wins".
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import yaml

__all__ = [
    "MAX_UINT32",
    "DescriptorNode",
    "DomainConfig",
    "RateLimit",
    "RateLimitConfig",
    "RateLimitConfigError",
    "Unit",
    "load_config",
    "parse_domain",
    "parse_domain_document",
    "tree_document",
]

MAX_UINT32 = 2**32 - 1


class RateLimitConfigError(ValueError):
    """A rate limit configuration cannot be loaded; the message names the source and descriptor path."""


class Unit(enum.IntEnum):
    """Window length of a limit.

    Values are the wire numbers shared by ``envoy.type.v3.RateLimitUnit`` and
    ``RateLimitResponse.RateLimit.Unit`` so the gRPC adapter can pass them through unchanged.
    """

    SECOND = 1
    MINUTE = 2
    HOUR = 3
    DAY = 4
    MONTH = 5
    YEAR = 6
    WEEK = 7

    @property
    def seconds(self) -> int:
        """Window length in seconds; month and year are fixed 30 and 365 days, as in envoyproxy/ratelimit."""
        return _UNIT_SECONDS[self]

    @classmethod
    def parse(cls, text: str) -> Unit | None:
        """Case-insensitive lookup by name (``"Hour"`` -> HOUR), ``None`` if unknown."""
        return _UNIT_BY_NAME.get(text.lower())


_UNIT_SECONDS: dict[Unit, int] = {
    Unit.SECOND: 1,
    Unit.MINUTE: 60,
    Unit.HOUR: 3600,
    Unit.DAY: 86400,
    Unit.WEEK: 7 * 86400,
    Unit.MONTH: 30 * 86400,
    Unit.YEAR: 365 * 86400,
}
_UNIT_BY_NAME: dict[str, Unit] = {u.name.lower(): u for u in Unit}
_UNIT_NAMES = "second, minute, hour, day, week, month, year"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """One configured (or request-supplied) limit.

    ``full_key`` is the upstream statistics key (``domain.key_value.key``) and identifies the rule, not a
    counter: counters are per descriptor values and window (see ``limiter.counter_key``).
    """

    requests_per_unit: int
    unit: Unit
    name: str = ""
    replaces: tuple[str, ...] = ()
    unlimited: bool = False
    shadow_mode: bool = False
    detailed_metric: bool = False
    full_key: str = ""


@dataclass(frozen=True, slots=True, eq=False)
class DescriptorNode:
    """One level of the descriptor tree, indexed for the three kinds of match.

    ``exact`` is keyed by ``(key, value)``, ``wildcards`` by key with ``(value_prefix, node)`` pairs in
    config order (the first matching prefix wins, as upstream), ``by_key`` holds value-less entries.
    """

    limit: RateLimit | None = None
    exact: Mapping[tuple[str, str], DescriptorNode] = field(default_factory=lambda: MappingProxyType({}))
    wildcards: Mapping[str, tuple[tuple[str, DescriptorNode], ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    by_key: Mapping[str, DescriptorNode] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def has_children(self) -> bool:
        """Whether a longer request descriptor can continue below this node."""
        return bool(self.exact or self.wildcards or self.by_key)

    def child(self, key: str, value: str) -> DescriptorNode | None:
        """Most specific child for one request entry: exact value, then wildcard prefix, then key-only."""
        node = self.exact.get((key, value))
        if node is not None:
            return node
        candidates = self.wildcards.get(key)
        if candidates is not None:
            for prefix, candidate in candidates:
                if value.startswith(prefix):
                    return candidate
        return self.by_key.get(key)


@dataclass(frozen=True, slots=True, eq=False)
class DomainConfig:
    """A loaded domain: its name, the source it came from, and the root of its descriptor tree."""

    name: str
    source: str
    root: DescriptorNode
    limit_count: int


_MAX_REMEMBERED_MATCHES = 4096


class RateLimitConfig:
    """All loaded domains. Immutable after construction; share it freely between requests.

    :meth:`get_limit` remembers its answers per (domain, entries), at most ``_MAX_REMEMBERED_MATCHES`` of
    them (the memo is emptied when full): a reload builds a new config, so a remembered match never
    outlives the rules it came from.
    """

    __slots__ = ("_matches", "_roots", "domains")

    def __init__(self, domains: Iterable[DomainConfig]) -> None:
        by_name: dict[str, DomainConfig] = {}
        for domain in domains:
            if domain.name in by_name:
                raise RateLimitConfigError(
                    f'{domain.source}: duplicate domain "{domain.name}" '
                    f"(already defined in {by_name[domain.name].source})"
                )
            by_name[domain.name] = domain
        self.domains: Mapping[str, DomainConfig] = MappingProxyType(by_name)
        self._roots: dict[str, DescriptorNode] = {name: d.root for name, d in by_name.items()}
        self._matches: dict[tuple[str, tuple[tuple[str, str], ...]], RateLimit | None] = {}

    def get_limit(self, domain: str, entries: Sequence[tuple[str, str]]) -> RateLimit | None:
        """Configured limit for one request descriptor, or ``None`` when nothing applies (see :meth:`match`)."""
        key = (domain, tuple(entries))
        matches = self._matches
        if key in matches:
            return matches[key]
        found = self.match(domain, entries)
        if len(matches) >= _MAX_REMEMBERED_MATCHES:
            matches.clear()
        matches[key] = found
        return found

    def match(self, domain: str, entries: Sequence[tuple[str, str]]) -> RateLimit | None:
        """Configured limit for one request descriptor, or ``None`` when nothing applies.

        Walks one tree level per entry, taking the most specific child at each level. As in
        envoyproxy/ratelimit the limit is the one at the node reached by the *last* entry: a limit on an
        intermediate node does not apply to a longer descriptor, and there is no backtracking to a less
        specific sibling when the walk dead-ends.
        """
        node = self._roots.get(domain)
        if node is None or not entries:
            return None
        last = len(entries) - 1
        for i, (key, value) in enumerate(entries):
            child = node.child(key, value)
            if child is None:
                return None
            if i == last:
                return child.limit
            node = child
        return None  # pragma: no cover - the loop always returns


# --------------------------------------------------------------------------------------------------------
# Parsing


# ``name`` is the config's name in Envoy Gateway's dumps (its xDS resource name); it is not used.
_ROOT_KEYS = ("domain", "descriptors", "name")
_UNSUPPORTED_FLAGS = ("quota_mode", "value_to_metric", "share_threshold")
_DESCRIPTOR_KEYS = ("key", "value", "rate_limit", "descriptors", "shadow_mode", "detailed_metric", *_UNSUPPORTED_FLAGS)
_DESCRIPTOR_KEYS_WITH_METADATA = (*_DESCRIPTOR_KEYS, "metadata")
_RATE_LIMIT_KEYS = ("unit", "requests_per_unit", "unlimited", "name", "replaces")
_REPLACES_KEYS = ("name",)


class _UniqueKeyLoader(yaml.CSafeLoader):
    """Safe YAML loader (libyaml scanner) that rejects duplicate mapping keys instead of keeping the last."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: *anchor" may legitimately be overridden by the mapping's own keys
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # unhashable key: the base constructor reports it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


class _YamlInt(int):
    """An int that remembers how it was written, so ``value: 010`` matches "010", not "8"."""

    source_text: str


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    result = _YamlInt(loader.construct_yaml_int(node))
    result.source_text = node.value
    return result


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


class _Ctx:
    """Where we are while parsing, so every error can say file, domain and descriptor path."""

    __slots__ = ("domain", "names", "path", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.domain: str | None = None
        self.path: list[str] = []
        self.names: set[str] = set()

    def error(self, message: str) -> RateLimitConfigError:
        where = [f"{self.source}:"]
        if self.domain is not None:
            where.append(f'domain "{self.domain}"')
        if self.path:
            where.append("descriptor " + " > ".join(self.path))
        prefix = " ".join(where)
        if len(where) > 1:
            prefix += ":"
        return RateLimitConfigError(f"{prefix} {message}")


def _check_keys(ctx: _Ctx, mapping: Mapping[Any, Any], allowed: Sequence[str], what: str) -> None:
    for key in mapping:
        if key not in allowed:
            hint = ""
            if isinstance(key, str):
                close = difflib.get_close_matches(key, allowed, n=1)
                if close:
                    hint = f', did you mean "{close[0]}"?'
            raise ctx.error(f"{what}unknown key {key!r}{hint} (allowed: {', '.join(allowed)})")


def _expect_bool(ctx: _Ctx, mapping: Mapping[str, Any], key: str, what: str = "") -> bool:
    value = mapping.get(key, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ctx.error(f"{what}{key} must be true or false, got {value!r}")
    return value


def _scalar_text(ctx: _Ctx, value: Any, what: str) -> str:
    """Key and value texts: strings, or integers written without quotes (``value: 500``)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ctx.error(f"{what} must be a string, got {value!r} (quote it)")
    text = value if isinstance(value, str) else getattr(value, "source_text", str(value))
    if not text:
        raise ctx.error(f"{what} must not be empty")
    return text


def _describe_yaml_error(exc: yaml.YAMLError) -> str:
    """One-line YAML error with a 1-based position (PyYAML's own text spans lines and says "<unicode string>")."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return f"invalid YAML{where}: {exc.problem}"
    return f"invalid YAML: {exc}"


def parse_domain(text: str, source: str) -> DomainConfig:
    """Parse one YAML document (one domain). ``source`` is only used in error messages."""
    try:
        doc = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise _Ctx(source).error(_describe_yaml_error(exc)) from None
    return parse_domain_document(doc, source)


def parse_domain_document(doc: Any, source: str) -> DomainConfig:
    """Validate one already-decoded domain document (the YAML's data model: dicts, lists, str, int, bool).

    The ADS config client builds this from a ``RateLimitConfig`` proto, so files and xDS share one validator.
    """
    ctx = _Ctx(source)
    if doc is None:
        raise ctx.error("empty file, expected a mapping with 'domain' and 'descriptors'")
    if not isinstance(doc, dict):
        raise ctx.error(f"expected a mapping with 'domain' and 'descriptors', got {type(doc).__name__}")
    _check_keys(ctx, doc, _ROOT_KEYS, "")
    if doc.get("name") is not None and not isinstance(doc["name"], str):
        raise ctx.error(f"name must be a string, got {doc['name']!r}")
    domain = doc.get("domain")
    if domain is None:
        raise ctx.error("domain is required")
    ctx.domain = _scalar_text(ctx, domain, "domain")

    pending_replaces: list[tuple[list[str], str]] = []
    limits: list[RateLimit] = []
    root = _parse_level(ctx, doc.get("descriptors"), ctx.domain, pending_replaces, limits)
    for path, name in pending_replaces:
        if name not in ctx.names:
            ctx.path = path
            raise ctx.error(f'rate_limit: replaces names "{name}", but no rate_limit in this domain has it')
    return DomainConfig(name=ctx.domain, source=source, root=root, limit_count=len(limits))


def _parse_level(
    ctx: _Ctx,
    descriptors: Any,
    parent_key: str,
    pending_replaces: list[tuple[list[str], str]],
    limits: list[RateLimit],
) -> DescriptorNode:
    if descriptors is None:
        descriptors = []
    if not isinstance(descriptors, list):
        raise ctx.error(f"descriptors must be a list, got {type(descriptors).__name__}")
    exact: dict[tuple[str, str], DescriptorNode] = {}
    wildcards: dict[str, list[tuple[str, DescriptorNode]]] = {}
    by_key: dict[str, DescriptorNode] = {}
    seen: set[tuple[str, str | None]] = set()

    for index, item in enumerate(descriptors, start=1):
        ctx.path.append(f"#{index}")
        if not isinstance(item, dict):
            raise ctx.error(f"each descriptor must be a mapping, got {item!r}")
        if item.get("key") is None:
            _check_keys(ctx, item, _DESCRIPTOR_KEYS, "")
            raise ctx.error("key is required")
        key = _scalar_text(ctx, item["key"], "key")
        # `value: ""` is "no value", as upstream reads it (Envoy Gateway writes it for key-only descriptors)
        value = None if item.get("value") in (None, "") else _scalar_text(ctx, item["value"], "value")
        ctx.path[-1] = key if value is None else f"{key}={value}"
        _check_keys(ctx, item, _DESCRIPTOR_KEYS_WITH_METADATA, "")
        _check_unsupported(ctx, item)
        if (key, value) in seen:
            raise ctx.error("duplicate descriptor (same key and value at this level)")
        seen.add((key, value))

        full_key = f"{parent_key}.{key}" if value is None else f"{parent_key}.{key}_{value}"
        limit = _parse_rate_limit(ctx, item, full_key, pending_replaces)
        first_below = len(limits)  # the limits the children add start here
        if limit is not None:
            limits.append(limit)
        node = DescriptorNode(
            limit=limit,
            **_children(_parse_level(ctx, item.get("descriptors"), full_key, pending_replaces, limits)),
        )
        if limit is None and _expect_bool(ctx, item, "shadow_mode"):
            below = limits[first_below:]
            if not below or not all(child_limit.shadow_mode for child_limit in below):
                raise ctx.error(
                    "shadow_mode needs a rate_limit on the same descriptor (it is not inherited: "
                    "set it on each rate_limit below)"
                )
        if value is None:
            by_key[key] = node
        elif value.endswith("*"):
            wildcards.setdefault(key, []).append((value[:-1], node))
        else:
            exact[(key, value)] = node
        ctx.path.pop()

    return DescriptorNode(
        limit=None,
        exact=MappingProxyType(exact),
        wildcards=MappingProxyType({k: tuple(v) for k, v in wildcards.items()}),
        by_key=MappingProxyType(by_key),
    )


def _check_unsupported(ctx: _Ctx, item: Mapping[str, Any]) -> None:
    """envoyproxy/ratelimit features tokenvoy does not implement: refused when on, so nothing is silently lost."""
    for flag in _UNSUPPORTED_FLAGS:
        if _expect_bool(ctx, item, flag):
            raise ctx.error(f"{flag} is not supported by tokenvoy's ratelimit (remove it or set it to false)")
    metadata = item.get("metadata")
    if metadata not in (None, {}):
        raise ctx.error("metadata is not supported by tokenvoy's ratelimit (it is not returned to Envoy)")


def _children(level: DescriptorNode) -> dict[str, Any]:
    return {"exact": level.exact, "wildcards": level.wildcards, "by_key": level.by_key}


def _parse_rate_limit(
    ctx: _Ctx, item: Mapping[str, Any], full_key: str, pending_replaces: list[tuple[list[str], str]]
) -> RateLimit | None:
    shadow_mode = _expect_bool(ctx, item, "shadow_mode")
    detailed_metric = _expect_bool(ctx, item, "detailed_metric")
    raw = item.get("rate_limit")
    if raw is None:
        return None  # a shadow_mode here is checked against the limits below by the caller
    if not isinstance(raw, dict):
        raise ctx.error(f"rate_limit must be a mapping, got {raw!r}")
    _check_keys(ctx, raw, _RATE_LIMIT_KEYS, "rate_limit: ")

    unlimited = _expect_bool(ctx, raw, "unlimited", "rate_limit: ")
    # Envoy Gateway writes `name: ""` for an unnamed limit.
    name = "" if raw.get("name") in (None, "") else _scalar_text(ctx, raw["name"], "rate_limit: name")
    replaces = _parse_replaces(ctx, raw.get("replaces"), name)

    if unlimited:
        for forbidden in ("unit", "requests_per_unit"):
            if raw.get(forbidden) is not None:
                raise ctx.error(f"rate_limit: {forbidden} must not be set when unlimited is true")
        unit = Unit.SECOND  # never used: unlimited limits are not counted
        requests_per_unit = 0
    else:
        unit_text = raw.get("unit")
        if unit_text is None:
            raise ctx.error(f"rate_limit: unit is required (one of {_UNIT_NAMES})")
        parsed_unit = Unit.parse(unit_text) if isinstance(unit_text, str) else None
        if parsed_unit is None:
            raise ctx.error(f"rate_limit: unit {unit_text!r} is not one of {_UNIT_NAMES}")
        unit = parsed_unit
        rpu = raw.get("requests_per_unit")
        if rpu is None:
            raise ctx.error("rate_limit: requests_per_unit is required")
        if isinstance(rpu, bool) or not isinstance(rpu, int) or not 0 <= rpu <= MAX_UINT32:
            raise ctx.error(f"rate_limit: requests_per_unit must be an integer from 0 to {MAX_UINT32}, got {rpu!r}")
        requests_per_unit = int(rpu)

    if name:
        ctx.names.add(name)
    pending_replaces.extend((list(ctx.path), r) for r in replaces)
    return RateLimit(
        requests_per_unit=requests_per_unit,
        unit=unit,
        name=name,
        replaces=replaces,
        unlimited=unlimited,
        shadow_mode=shadow_mode,
        detailed_metric=detailed_metric,
        full_key=full_key,
    )


def _parse_replaces(ctx: _Ctx, raw: Any, own_name: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ctx.error("rate_limit: replaces must be a list of {name: ...} mappings")
    names: list[str] = []
    for entry in raw:
        if not isinstance(entry, dict):
            raise ctx.error(f"rate_limit: replaces entries must be mappings like {{name: other}}, got {entry!r}")
        _check_keys(ctx, entry, _REPLACES_KEYS, "rate_limit: replaces: ")
        if entry.get("name") is None:
            raise ctx.error("rate_limit: replaces entries need a name")
        target = _scalar_text(ctx, entry["name"], "rate_limit: replaces name")
        if target == own_name:
            raise ctx.error(f'rate_limit: replaces must not name the limit itself ("{target}")')
        names.append(target)
    return tuple(names)


def load_config(sources: Iterable[tuple[str, str]]) -> RateLimitConfig:
    """Build the configuration from ``(source_name, yaml_text)`` pairs, one domain each.

    A domain defined twice is an error (upstream's default; it has an opt-in merge we do not copy).
    """
    return RateLimitConfig(parse_domain(text, name) for name, text in sources)


def tree_document(config: RateLimitConfig) -> dict[str, Any]:
    """The lookup tree as plain data (JSON-able), everything a lookup can observe and nothing of where it was
    read from: two configs answer alike exactly when their documents are equal. ``/rlconfig`` serves it."""
    return {
        name: {"limits": domain.limit_count, "root": _node_document(domain.root)}
        for name, domain in sorted(config.domains.items())
    }


def _node_document(node: DescriptorNode) -> dict[str, Any]:
    limit = node.limit
    return {
        "limit": None
        if limit is None
        else {
            "requests_per_unit": limit.requests_per_unit,
            "unit": limit.unit.name,
            "name": limit.name,
            "replaces": list(limit.replaces),
            "unlimited": limit.unlimited,
            "shadow_mode": limit.shadow_mode,
            "detailed_metric": limit.detailed_metric,
            "full_key": limit.full_key,
        },
        "exact": [[key, value, _node_document(child)] for (key, value), child in sorted(node.exact.items())],
        "wildcards": [
            [key, [[prefix, _node_document(child)] for prefix, child in pairs]]
            for key, pairs in sorted(node.wildcards.items())
        ],
        "by_key": [[key, _node_document(child)] for key, child in sorted(node.by_key.items())],
    }
