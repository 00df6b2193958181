"""Fixed-window arithmetic and the in-memory backend, driven by an injected clock (no sleeping)."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Callable

import pytest

from tokenvoy.ratelimit.backend import CounterBackend
from tokenvoy.ratelimit.config import MAX_UINT32, RateLimit, RateLimitConfig, Unit, load_config
from tokenvoy.ratelimit.limiter import (
    Code,
    CounterOp,
    Decision,
    Descriptor,
    DescriptorStatus,
    LimitOverride,
    LimitRequest,
    counter_key,
    decide,
    effective_hits,
    is_over_limit,
    plan,
)
from tokenvoy.ratelimit.memory_backend import MemoryBackend
from tokenvoy.ratelimit.redis_backend import RedisBackend

from .test_ratelimit_redis import SEMANTICS_TIMEOUT, redis_server, unique_prefix

__all__ = ["redis_server"]  # a fixture: the Redis runs of the semantics suite need it

HOUR_START = 1_699_999_200  # a multiple of 3600 (and of 60)

CONFIG = """
domain: ai
descriptors:
  - key: x-user-id
    rate_limit: {unit: hour, requests_per_unit: 100, name: per-user}
  - key: x-team
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: shadowed
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: ldap
    rate_limit: {unlimited: true}
  - key: model
    value: gpt-4
    rate_limit: {unit: day, requests_per_unit: 10, replaces: [{name: per-user}]}
"""


class Clock:
    """Manually advanced time source."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Harness:
    """plan -> backend.add -> decide, as the service does, with one clock for both."""

    def __init__(self, config_text: str = CONFIG, now: float = HOUR_START + 10, redis_url: str | None = None) -> None:
        self.config: RateLimitConfig = load_config([("test.yaml", textwrap.dedent(config_text))])
        self.clock = Clock(now)
        self.backend: MemoryBackend | RedisBackend
        if redis_url is None:
            self.backend = MemoryBackend(clock=self.clock)
        else:
            self.backend = RedisBackend(redis_url, prefix=unique_prefix(), clock=self.clock, timeout=SEMANTICS_TIMEOUT)

    async def run(self, *descriptors: Descriptor, hits_addend: int = 0, domain: str = "ai") -> Decision:
        p = plan(self.config, LimitRequest(domain, descriptors, hits_addend), self.clock())
        return decide(p, await self.backend.add(p.ops))

    async def one(self, descriptor: Descriptor, hits_addend: int = 0) -> DescriptorStatus:
        decision = await self.run(descriptor, hits_addend=hits_addend)
        assert decision.overall_code == decision.statuses[0].code
        return decision.statuses[0]

    async def stored(self) -> int:
        """How many counters the backend holds."""
        if isinstance(self.backend, MemoryBackend):
            return len(self.backend)
        return len([key async for key in self.backend._client.scan_iter(match=f"{self.backend.prefix}*")])


MakeHarness = Callable[..., Harness]


@pytest.fixture(params=["memory", "redis"])
async def make_harness(request: pytest.FixtureRequest) -> AsyncIterator[MakeHarness]:
    """Harnesses on one backend kind: the semantics suite runs on both."""
    url = request.getfixturevalue("redis_server").url if request.param == "redis" else None
    made: list[Harness] = []

    def make(config_text: str = CONFIG, now: float = HOUR_START + 10) -> Harness:
        made.append(Harness(config_text, now, redis_url=url))
        return made[-1]

    yield make
    for harness in made:
        await harness.backend.close()


def user(name: str = "alice", hits: int | None = None, negative: bool = False) -> Descriptor:
    return Descriptor((("x-user-id", name),), hits_addend=hits, is_negative_hits=negative)


def test_memory_backend_satisfies_the_protocol() -> None:
    assert isinstance(MemoryBackend(), CounterBackend)


def test_counter_key_layout() -> None:
    assert counter_key("ai", [("x-user-id", "alice")], 1_700_000_000) == "ai_x-user-id_alice_1700000000"
    assert counter_key("ai", [("a", "1"), ("b", "2")], 60) == "ai_a_1_b_2_60"


def test_plan_uses_window_start_and_end() -> None:
    h = Harness()
    p = plan(h.config, LimitRequest("ai", (user(hits=5),)), HOUR_START + 1234.9)
    assert p.ops == (CounterOp(f"ai_x-user-id_alice_{HOUR_START}", 5, HOUR_START + 3600),)
    assert p.now == HOUR_START + 1234


@pytest.mark.parametrize(
    ("descriptor_hits", "request_hits", "expected"),
    [
        (None, 0, 1),  # nothing set: 1, the RLS default
        (None, 7, 7),  # request-level hits_addend
        (0, 7, 0),  # descriptor-level presence wins, 0 included: a pure read
        (5, 7, 5),
        (2**64 - 1, 0, 2**64 - 1),  # UInt64Value range
    ],
)
def test_effective_hits(descriptor_hits: int | None, request_hits: int, expected: int) -> None:
    assert effective_hits(user(hits=descriptor_hits), request_hits) == expected


def test_over_limit_rule() -> None:
    assert not is_over_limit(100, 100, hits=1)  # reaching the limit exactly with a charge is OK
    assert is_over_limit(101, 100, hits=1)
    assert not is_over_limit(99, 100, hits=0)
    # envoyproxy/ratelimit: a read is over only once the counter exceeds the limit
    assert not is_over_limit(100, 100, hits=0)
    assert is_over_limit(101, 100, hits=0)


async def test_boundary_counts_even_when_over_limit(make_harness: MakeHarness) -> None:
    h = make_harness()
    team = Descriptor((("x-team", "red"),))
    remaining = [(await h.one(team)).limit_remaining for _ in range(3)]
    assert remaining == [2, 1, 0]
    status = await h.one(team)
    assert status.code is Code.OVER_LIMIT and status.limit_remaining == 0
    # upstream increments regardless of the answer: the 4th and 5th hits are counted
    await h.one(team)
    read = await h.one(Descriptor((("x-team", "red"),), hits_addend=0))
    assert read.code is Code.OVER_LIMIT
    assert await h.backend.add([CounterOp(f"ai_x-team_red_{HOUR_START}", 0, 0)]) == [5]


async def test_pure_read_never_consumes_and_trips_over_the_limit(make_harness: MakeHarness) -> None:
    h = make_harness()
    for _ in range(3):
        status = await h.one(user(hits=0))
        assert status.code is Code.OK and status.limit_remaining == 100
    assert await h.stored() == 0  # reads of a fresh counter store nothing
    assert (await h.one(user(hits=99))).code is Code.OK
    assert (await h.one(user(hits=0))).code is Code.OK  # 99 used: one more unit may be spent
    assert (await h.one(user(hits=1))).limit_remaining == 0  # exactly at the limit: still OK
    assert (await h.one(user(hits=0))).code is Code.OK  # upstream semantics: not over yet
    assert (await h.one(user(hits=5))).code is Code.OVER_LIMIT
    status = await h.one(user(hits=0))
    assert status.code is Code.OVER_LIMIT and status.limit_remaining == 0


async def test_request_hits_addend_applies_when_descriptor_has_none(make_harness: MakeHarness) -> None:
    h = make_harness()
    assert (await h.one(user(), hits_addend=40)).limit_remaining == 60
    assert (await h.one(user(), hits_addend=0)).limit_remaining == 59  # unset means 1


async def test_negative_hits_give_budget_back_and_floor_at_zero(make_harness: MakeHarness) -> None:
    h = make_harness()
    await h.one(user(hits=80))
    status = await h.one(user(hits=30, negative=True))
    assert status.code is Code.OK and status.limit_remaining == 50
    assert (await h.one(user(hits=500, negative=True))).limit_remaining == 100
    assert (await h.one(user(hits=1))).limit_remaining == 99
    assert (await h.one(user("nobody", hits=5, negative=True))).limit_remaining == 100
    assert await h.stored() == 1  # refunding an unknown counter creates nothing


async def test_windows_are_epoch_aligned_and_reset(make_harness: MakeHarness) -> None:
    h = make_harness(now=HOUR_START + 3599.5)
    status = await h.one(user(hits=101))
    assert status.duration_until_reset == 1
    assert (await h.one(user(hits=0))).code is Code.OVER_LIMIT
    h.clock.now = HOUR_START + 3600  # next window: a fresh counter under a new key
    status = await h.one(user(hits=0))
    assert status.code is Code.OK and status.limit_remaining == 100
    assert status.duration_until_reset == 3600
    if isinstance(h.backend, MemoryBackend):
        assert await h.stored() == 0  # the old window's counter was dropped
    else:  # Redis drops it by TTL, set to the end of its window: one second after it was written
        assert 0 < await h.backend._client.pttl(f"{h.backend.prefix}ai_x-user-id_alice_{HOUR_START}") <= 1000


async def test_status_fields(make_harness: MakeHarness) -> None:
    h = make_harness(now=HOUR_START + 600)
    decision = await h.run(
        user(hits=10),
        Descriptor((("unknown-key", "x"),)),
        Descriptor((("ldap", "bob"),)),
        Descriptor((("x-team", "red"),)),
    )
    assert decision.overall_code is Code.OK
    per_user, no_limit, unlimited, team = decision.statuses
    assert per_user == DescriptorStatus(
        code=Code.OK,
        current_limit=RateLimit(100, Unit.HOUR, name="per-user", full_key="ai.x-user-id"),
        limit_remaining=90,
        duration_until_reset=3000,
    )
    assert no_limit == DescriptorStatus(Code.OK)
    assert unlimited == DescriptorStatus(Code.OK, limit_remaining=MAX_UINT32)
    assert team.current_limit is not None and team.current_limit.unit is Unit.MINUTE
    assert team.duration_until_reset == 60
    assert await h.stored() == 2  # neither the unmatched nor the unlimited descriptor is counted


async def test_overall_is_over_limit_if_any_descriptor_is(make_harness: MakeHarness) -> None:
    h = make_harness()
    decision = await h.run(user(hits=1), Descriptor((("x-team", "red"),), hits_addend=4))
    assert decision.overall_code is Code.OVER_LIMIT
    assert [s.code for s in decision.statuses] == [Code.OK, Code.OVER_LIMIT]


async def test_shadow_mode_reports_ok_but_marks_the_status(make_harness: MakeHarness) -> None:
    h = make_harness()
    shadow = Descriptor((("shadowed", "x"),))
    assert not (await h.one(shadow)).shadowed
    status = await h.one(shadow)
    assert status.code is Code.OK and status.shadowed and status.limit_remaining == 0


async def test_replaces_drops_the_named_limit_in_the_same_request(make_harness: MakeHarness) -> None:
    h = make_harness()
    decision = await h.run(user(hits=1), Descriptor((("model", "gpt-4"),)))
    replaced, replacing = decision.statuses
    assert replaced == DescriptorStatus(Code.OK)
    assert replacing.current_limit is not None and replacing.limit_remaining == 9
    # alone, the per-user limit applies again and was not charged by the request above
    assert (await h.one(user(hits=1))).limit_remaining == 99


async def test_request_override_replaces_the_configured_limit(make_harness: MakeHarness) -> None:
    h = make_harness(now=HOUR_START + 30)
    override = LimitOverride(requests_per_unit=5, unit=Unit.MINUTE)
    status = await h.one(Descriptor((("x-user-id", "alice"),), limit=override))
    assert status.current_limit == RateLimit(5, Unit.MINUTE)
    assert status.limit_remaining == 4 and status.duration_until_reset == 30
    # also for a descriptor the configuration does not know ...
    status = await h.one(Descriptor((("anything", "x"),), limit=override))
    assert status.current_limit == RateLimit(5, Unit.MINUTE)
    # ... but not for an unknown domain, where nothing applies (upstream)
    decision = await h.run(Descriptor((("anything", "x"),), limit=override), domain="nope")
    assert decision.statuses == (DescriptorStatus(Code.OK),)


async def test_duplicate_descriptors_in_one_request_see_each_other(make_harness: MakeHarness) -> None:
    h = make_harness()
    decision = await h.run(user(hits=60), user(hits=60))
    assert [s.code for s in decision.statuses] == [Code.OK, Code.OVER_LIMIT]


def test_decide_rejects_a_short_backend_answer() -> None:
    h = Harness()
    p = plan(h.config, LimitRequest("ai", (user(),)), HOUR_START)
    with pytest.raises(ValueError, match="1 ops"):
        decide(p, [])


async def test_memory_backend_expires_by_window() -> None:
    clock = Clock(100)
    backend = MemoryBackend(clock=clock)
    assert await backend.add([CounterOp("a", 2, 160), CounterOp("b", 1, 200), CounterOp("a", 3, 160)]) == [2, 1, 5]
    assert await backend.add([CounterOp("a", -10, 160), CounterOp("c", 0, 160)]) == [0, 0]
    assert len(backend) == 2
    clock.now = 160
    assert await backend.add([]) == []
    assert len(backend) == 1
    clock.now = 1000
    assert await backend.add([CounterOp("b", 0, 200)]) == [0]
    assert len(backend) == 0
    await backend.add([CounterOp("d", 1, 2000)])
    await backend.close()
    assert len(backend) == 0
