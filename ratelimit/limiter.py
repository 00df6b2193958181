"""Fixed-window rate limit arithmetic: which counters a request touches and what the answer is.

Pure code, no I/O and no clock of its own. A request is handled in three steps, so that a shared backend
(in-memory today, Redis later) sees exactly one batched call per request::

    p = plan(config, request, now)           # limits, counter keys, signed deltas
    counts = await backend.add(p.ops)        # the only I/O, done by the caller
    decision = decide(p, counts)             # codes, remaining, reset

Semantics follow envoyproxy/ratelimit (fixed windows aligned to the Unix epoch, counters incremented
even when already over the limit, ``OVER_LIMIT`` iff the counter after adding exceeds the limit), plus
Envoy's per-descriptor ``hits_addend`` (0 = check without charging) and ``is_negative_hits`` (refund).

Counter key layout (same as upstream's ``CacheKeyGenerator``, without its optional prefix)::

    <domain>_<key1>_<value1>_<key2>_<value2>_..._<window start, epoch seconds>
    e.g. ai_x-user-id_alice_1700000000

The key uses the request's *values* (so a key-only rule counts each user separately) and the window
start (so a new window is a new key and old ones simply expire).

**Holds** (tokenvoy's extension for reservations and in-flight limits, docs/ratelimit.md): a descriptor whose
last entry is ``(tokenvoy_hold, reserve)`` adds its hits to a *held* counter of the current hold slot
(``<key>_<slot start>_held``) instead of the window counter, and is OVER_LIMIT iff the window counter plus
the held counters of this slot and the previous one exceed the limit. The answer's dynamic metadata then
carries the hold (:func:`hold_metadata`: its amount and ``release:<slot>``) under the descriptor's first
value (the budget's name). Envoy reads both back at stream done into a ``(tokenvoy_hold, release:<slot>)``
descriptor with ``is_negative_hits``, which gives back exactly what was held, to the slot it was held in.
Without that metadata Envoy sends no release at all (it drops a descriptor whose parts resolve to nothing),
so nothing that was not held is ever refunded; a hold whose release never arrives stops counting after
two slots (it expires).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tokenvoy.contract import HOLD_DESCRIPTOR_KEY, HOLD_RELEASE, HOLD_RESERVE, hold_metadata_key

from .config import MAX_UINT32, RateLimit, RateLimitConfig, Unit

__all__ = [
    "Code",
    "CounterOp",
    "Decision",
    "Descriptor",
    "DescriptorStatus",
    "LimitOverride",
    "LimitRequest",
    "Plan",
    "counter_key",
    "decide",
    "decide_unavailable",
    "effective_hits",
    "is_over_limit",
    "plan",
    "resolve_limit",
]


class Code(enum.IntEnum):
    """Decision codes; values are the wire numbers of ``RateLimitResponse.Code``."""

    UNKNOWN = 0
    OK = 1
    OVER_LIMIT = 2


@dataclass(frozen=True, slots=True)
class LimitOverride:
    """A limit supplied by Envoy in the request (``RateLimitDescriptor.limit``); replaces the configured one."""

    requests_per_unit: int
    unit: Unit


DEFAULT_HOLD_SLOT_S = 300  # a hold counts for one to two slots when its release never comes


@dataclass(frozen=True, slots=True)
class Descriptor:
    """One request descriptor, decoupled from protobuf.

    ``hits_addend`` is ``None`` when the field is absent on the wire; ``0`` means "check, don't charge".
    ``hold`` is ``reserve`` or ``release`` for a hold descriptor (its ``tokenvoy_hold`` entry stripped).
    """

    entries: tuple[tuple[str, str], ...]
    hits_addend: int | None = None
    is_negative_hits: bool = False
    limit: LimitOverride | None = None
    hold: str | None = None
    hold_slot: int = 0  # a release: the slot its hold was taken in


def split_hold(entries: tuple[tuple[str, str], ...]) -> tuple[tuple[tuple[str, str], ...], str | None, int]:
    """The entries without a trailing ``tokenvoy_hold`` entry, that entry's kind (None: not a hold) and, for a
    release (``release:<slot>``, as the RLS wrote it into the metadata), the slot of its hold."""
    if not entries or entries[-1][0] != HOLD_DESCRIPTOR_KEY:
        return entries, None, 0
    value = entries[-1][1]
    if value == HOLD_RESERVE:
        return entries[:-1], HOLD_RESERVE, 0
    kind, _, slot = value.partition(":")
    if kind == HOLD_RELEASE and slot.isdigit():
        return entries[:-1], HOLD_RELEASE, int(slot)
    return entries, None, 0


def hold_metadata(name: str, amount: int, slot: int) -> dict[str, object]:
    """What the RLS answers in its dynamic metadata for a granted hold, and Envoy's release reads back: the
    amount (its ``hits_addend``) under the hold's name, its entry under ``<name>_hold``."""
    return {name: amount, hold_metadata_key(name): f"{HOLD_RELEASE}:{slot}"}


@dataclass(frozen=True, slots=True)
class LimitRequest:
    """One ShouldRateLimit call: a domain, its descriptors and the request-level hits_addend (0 = unset)."""

    domain: str
    descriptors: tuple[Descriptor, ...]
    hits_addend: int = 0


@dataclass(frozen=True, slots=True)
class CounterOp:
    """Add ``delta`` (may be negative or zero) to counter ``key``, which may be dropped at ``expires_at``.

    A backend applies ops in order, floors counters at 0 and returns each counter's value after its op.
    """

    key: str
    delta: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class DescriptorStatus:
    """The answer for one descriptor.

    ``current_limit`` is ``None`` when no limit applied (no match, replaced, or unlimited).
    ``shadowed`` marks a shadow-mode limit that was exceeded but reported as OK.
    """

    code: Code
    current_limit: RateLimit | None = None
    limit_remaining: int = 0
    duration_until_reset: int | None = None
    shadowed: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer for a whole request; ``overall_code`` is OVER_LIMIT iff any status is.

    ``holds``: (name, amount, slot) of each hold this request took (the response's dynamic metadata)."""

    overall_code: Code
    statuses: tuple[DescriptorStatus, ...]
    holds: tuple[tuple[str, int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class _Planned:
    limit: RateLimit | None
    hits: int
    op_index: int  # -1: nothing to count
    window_end: int
    also: tuple[int, ...] = ()  # a hold: the ops read with it (previous slot, window); the sum is compared
    hold: tuple[str, int, int] | None = None  # a hold that adds hits: (name, amount, slot) for the metadata

    def after(self, counts: Sequence[int]) -> int:
        """Where the limit stands after this descriptor's op."""
        value = counts[self.op_index]
        for index in self.also:
            value += counts[index]
        return value


@dataclass(frozen=True, slots=True)
class Plan:
    """Output of :func:`plan`: the counter ops to run and what :func:`decide` needs to interpret them.

    ``valid_until``: the first second at which the same request plans differently (a window or hold slot
    ends); until then :meth:`at` reuses the plan for a later ``now`` without planning again."""

    now: int
    ops: tuple[CounterOp, ...]
    descriptors: tuple[_Planned, ...]
    valid_until: int = 0

    def at(self, now: float) -> Plan | None:
        """This plan at a later ``now`` (same second or not), or ``None`` once it is no longer valid."""
        now_s = int(now)
        if now_s >= self.valid_until or now_s < self.now:
            return None
        return Plan(now_s, self.ops, self.descriptors, self.valid_until)


_FOREVER = 2**63  # a plan that touches no counter never goes stale
_UNLIMITED_STATUS = DescriptorStatus(Code.OK, limit_remaining=MAX_UINT32)
_NO_LIMIT_STATUS = DescriptorStatus(Code.OK)


def effective_hits(descriptor: Descriptor, request_hits_addend: int) -> int:
    """Hits one descriptor adds: its own ``hits_addend`` when present (0 included), else at least 1.

    The ``max(1, ...)`` keeps the RLS contract that an unset request ``hits_addend`` means 1.
    """
    if descriptor.hits_addend is not None:
        return descriptor.hits_addend
    return max(1, request_hits_addend)


def is_over_limit(after: int, requests_per_unit: int, hits: int) -> bool:
    """OVER_LIMIT iff the counter after adding ``hits`` exceeds the limit (as upstream envoyproxy/ratelimit).

    This holds for pure reads (hits 0) too, for compatibility with envoyproxy/ratelimit: a budget spent to
    exactly its limit still admits one more request, and ``requests_per_unit: 0`` never blocks a read.
    ``hits`` is kept in the signature so the rule has one place to change if we ever diverge.
    """
    del hits
    return after > requests_per_unit


def counter_key(domain: str, entries: Sequence[tuple[str, str]], window_start: int) -> str:
    """Counter name for one descriptor in one window (layout in the module docstring)."""
    parts = [domain]
    for key, value in entries:
        parts.append(key)
        parts.append(value)
    parts.append(str(window_start))
    return "_".join(parts)


def resolve_limit(config: RateLimitConfig, domain: str, descriptor: Descriptor) -> RateLimit | None:
    """The limit that applies to one descriptor before ``replaces`` is considered.

    As upstream: an unknown domain has no limits at all (even with an override); otherwise a request
    override wins over the configuration and is never in shadow mode.
    """
    if descriptor.limit is not None:
        if domain not in config.domains:
            return None
        return RateLimit(descriptor.limit.requests_per_unit, descriptor.limit.unit)
    return config.get_limit(domain, descriptor.entries)


def held_key(domain: str, entries: Sequence[tuple[str, str]], slot: int, slot_s: int) -> str:
    return counter_key(domain, entries, slot * slot_s) + "_held"


def plan(config: RateLimitConfig, request: LimitRequest, now: float, hold_slot_s: int = DEFAULT_HOLD_SLOT_S) -> Plan:
    """Decide which counters to touch by how much. ``now`` is Unix time in seconds (floored)."""
    now_s = int(now)
    limits = [resolve_limit(config, request.domain, d) for d in request.descriptors]

    replaced: set[str] = set()
    for limit in limits:
        if limit is not None and limit.replaces:
            replaced.update(limit.replaces)

    ops: list[CounterOp] = []
    planned: list[_Planned] = []
    valid_until = _FOREVER
    for descriptor, limit in zip(request.descriptors, limits, strict=True):
        if limit is None or (limit.name and limit.name in replaced):
            planned.append(_Planned(None, 0, -1, 0))
            continue
        if limit.unlimited:
            planned.append(_Planned(limit, 0, -1, 0))
            continue
        hits = effective_hits(descriptor, request.hits_addend)
        unit_s = limit.unit.seconds
        start = now_s - now_s % unit_s
        end = start + unit_s
        valid_until = min(valid_until, end)
        if descriptor.hold is not None:
            planned.append(_plan_hold(request.domain, descriptor, limit, hits, now_s, end, hold_slot_s, ops))
            if descriptor.hold == HOLD_RESERVE:  # its counters are those of the current slot
                valid_until = min(valid_until, (now_s // hold_slot_s + 1) * hold_slot_s)
            continue
        delta = -hits if descriptor.is_negative_hits else hits
        planned.append(_Planned(limit, hits, len(ops), end))
        ops.append(CounterOp(counter_key(request.domain, descriptor.entries, start), delta, end))
    return Plan(now_s, tuple(ops), tuple(planned), valid_until)


def _plan_hold(
    domain: str,
    descriptor: Descriptor,
    limit: RateLimit,
    hits: int,
    now_s: int,
    window_end: int,
    slot_s: int,
    ops: list[CounterOp],
) -> _Planned:
    """A reserve: add to this slot's held counter, read the previous slot's and the window counter. A
    release: give its amount back to the slot it names (a bogus one only floors some counter at 0)."""
    entries = descriptor.entries
    if descriptor.hold == HOLD_RELEASE:
        slot = descriptor.hold_slot
        index = len(ops)
        ops.append(CounterOp(held_key(domain, entries, slot, slot_s), -hits, (slot + 2) * slot_s))
        return _Planned(limit, hits, index, window_end)
    slot = now_s // slot_s
    index = len(ops)
    start = window_end - limit.unit.seconds
    ops.append(CounterOp(held_key(domain, entries, slot, slot_s), hits, (slot + 2) * slot_s))
    ops.append(CounterOp(held_key(domain, entries, slot - 1, slot_s), 0, (slot + 1) * slot_s))
    ops.append(CounterOp(counter_key(domain, entries, start), 0, window_end))
    name = entries[0][1] if entries else ""
    hold = (name, hits, slot) if hits > 0 else None
    return _Planned(limit, hits, index, window_end, (index + 1, index + 2), hold)


def _statuses(p: Plan, counted: Callable[[_Planned, RateLimit], DescriptorStatus]) -> Decision:
    """One status per descriptor: the fixed ones for no limit and unlimited, ``counted`` for the rest."""
    statuses: list[DescriptorStatus] = []
    overall = Code.OK
    for item in p.descriptors:
        limit = item.limit
        if limit is None:
            status = _NO_LIMIT_STATUS
        elif item.op_index < 0:
            status = _UNLIMITED_STATUS
        else:
            status = counted(item, limit)
        if status.code is Code.OVER_LIMIT:
            overall = Code.OVER_LIMIT
        statuses.append(status)
    return Decision(overall, tuple(statuses))


def decide(p: Plan, counts: Sequence[int]) -> Decision:
    """Turn the counters returned by the backend (one per op, after the op) into the response."""
    if len(counts) != len(p.ops):
        raise ValueError(f"backend returned {len(counts)} counters for {len(p.ops)} ops")

    def counted(item: _Planned, limit: RateLimit) -> DescriptorStatus:
        after = item.after(counts)
        rpu = limit.requests_per_unit
        over = is_over_limit(after, rpu, item.hits)
        shadowed = over and limit.shadow_mode
        return DescriptorStatus(
            code=Code.OVER_LIMIT if over and not shadowed else Code.OK,
            current_limit=limit,
            limit_remaining=max(0, rpu - after),
            duration_until_reset=item.window_end - p.now,
            shadowed=shadowed,
        )

    decision = _statuses(p, counted)
    holds = tuple(item.hold for item in p.descriptors if item.hold is not None)
    return Decision(decision.overall_code, decision.statuses, holds) if holds else decision


def decide_unavailable(p: Plan, fail_closed: bool) -> Decision:
    """The answer when the counters cannot be reached (the backend's failure mode).

    Fail open: every descriptor is OK, without ``current_limit`` (nothing is known about the remaining
    budget, so Envoy must not emit ``x-ratelimit-*`` headers from a guess). Fail closed: every counted
    descriptor is OVER_LIMIT with its limit, 0 remaining and the time to the window end, except shadow-mode
    limits, which never reject (reported OK and marked ``shadowed``). Descriptors without a limit or with
    an unlimited one get the same answer as with a working backend.
    """

    def counted(item: _Planned, limit: RateLimit) -> DescriptorStatus:
        if not fail_closed:
            return _NO_LIMIT_STATUS
        return DescriptorStatus(
            code=Code.OK if limit.shadow_mode else Code.OVER_LIMIT,
            current_limit=limit,
            limit_remaining=0,
            duration_until_reset=item.window_end - p.now,
            shadowed=limit.shadow_mode,
        )

    return _statuses(p, counted)
