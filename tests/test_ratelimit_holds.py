"""Holds (reservations and in-flight limits) in the RLS: a release gives back exactly what was held, a
hold whose release never comes expires, fail-open grants no hold. Memory and Redis, with an injected clock."""

from __future__ import annotations

from tokenvoy.pb.envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from tokenvoy.pb.envoy.service.ratelimit.v3 import rls_pb2
from tokenvoy.ratelimit.backend import BackendUnavailable
from tokenvoy.ratelimit.config import load_config
from tokenvoy.ratelimit.limiter import (
    DEFAULT_HOLD_SLOT_S,
    Code,
    Descriptor,
    LimitRequest,
    decide_unavailable,
    plan,
    split_hold,
)
from tokenvoy.ratelimit.memory_backend import MemoryBackend
from tokenvoy.ratelimit.service import FailureMode, RateLimitService, decision_to_pb, request_from_pb

from .test_ratelimit_limiter import HOUR_START, Harness, MakeHarness, make_harness, redis_server

__all__ = ["make_harness", "redis_server"]  # fixtures: every test runs on memory and on Redis

BUDGET = """
domain: ai
descriptors:
  - key: budget
    value: b
    descriptors:
      - key: x-user-id
        rate_limit: {unit: hour, requests_per_unit: 100, name: b}
"""
NAME = (("budget", "b"), ("x-user-id", "alice"))


def reserve(hits: int) -> Descriptor:
    return Descriptor(NAME, hits_addend=hits, hold="reserve")


def release(held: tuple[int, int]) -> Descriptor:
    amount, slot = held
    return Descriptor(NAME, hits_addend=amount, is_negative_hits=True, hold="release", hold_slot=slot)


def charge(hits: int) -> Descriptor:
    return Descriptor(NAME, hits_addend=hits)


async def _token(h: Harness, hits: int) -> tuple[Code, int, tuple[int, int]]:
    decision = await h.run(reserve(hits))
    (status,) = decision.statuses
    ((name, amount, slot),) = decision.holds
    assert name == "b"  # the budget's name: the metadata key Envoy's release reads
    return status.code, status.limit_remaining, (amount, slot)


async def test_a_hold_counts_against_the_limit_until_released(make_harness: MakeHarness) -> None:
    h = make_harness(BUDGET)
    code, remaining, token = await _token(h, 60)
    assert (code, remaining) == (Code.OK, 40)
    assert token == (60, HOUR_START // DEFAULT_HOLD_SLOT_S)
    code, remaining, second = await _token(h, 60)  # does not fit: refused (and held, as upstream counts)
    assert (code, remaining) == (Code.OVER_LIMIT, 0)
    await h.run(release(second))  # Envoy releases the refused one's hold at stream done
    await h.run(release(token), charge(25))  # settle: give the estimate back, charge the actual
    code, remaining, _ = await _token(h, 10)
    assert (code, remaining) == (Code.OK, 100 - 25 - 10)


async def test_a_release_never_gives_back_more_than_was_held(make_harness: MakeHarness) -> None:
    h = make_harness(BUDGET)
    _, _, token = await _token(h, 30)
    await h.run(charge(50))  # settled spend in the window counter
    await h.run(release(token))
    await h.run(release(token))  # a duplicate release floors the hold at 0; the window's spend is untouched
    _, remaining, _ = await _token(h, 1)
    assert remaining == 100 - 50 - 1


async def test_a_hold_whose_release_never_comes_expires_after_at_most_two_slots(make_harness: MakeHarness) -> None:
    h = make_harness(BUDGET, now=HOUR_START)  # the hour starts on a slot boundary (3600 = 12 x 300)
    await _token(h, 90)  # lost settle: no release ever arrives
    h.clock.now += DEFAULT_HOLD_SLOT_S
    _, remaining, token = await _token(h, 5)
    assert remaining == 100 - 90 - 5  # still held in the next slot
    await h.run(release(token))
    h.clock.now += DEFAULT_HOLD_SLOT_S
    _, remaining, _ = await _token(h, 5)
    assert remaining == 100 - 5, "the lost hold expired"


async def test_a_hold_released_in_the_next_window_is_given_back_to_its_own_slot(make_harness: MakeHarness) -> None:
    h = make_harness(BUDGET, now=HOUR_START + 3600 - 1)  # the last second of an hour
    _, _, token = await _token(h, 70)
    h.clock.now += 2  # the next hour: its window counter is new, the hold is not
    _, remaining, other = await _token(h, 10)
    assert remaining == 100 - 70 - 10
    await h.run(release(token), release(other))
    _, remaining, _ = await _token(h, 1)
    assert remaining == 99


def test_fail_open_grants_no_hold_so_envoy_sends_no_release() -> None:
    config = load_config([("b.yaml", BUDGET)])
    p = plan(config, LimitRequest("ai", (reserve(10),)), HOUR_START)
    assert decide_unavailable(p, fail_closed=False).holds == ()
    assert decision_to_pb(decide_unavailable(p, fail_closed=False)).HasField("dynamic_metadata") is False


async def test_the_service_answers_the_token_as_dynamic_metadata_and_reads_the_hold_entry() -> None:
    class Down:
        available = False

        async def add(self, ops: object) -> list[int]:
            raise BackendUnavailable("down")

        async def close(self) -> None:
            return None

    descriptor = ratelimit_pb2.RateLimitDescriptor(
        entries=[
            ratelimit_pb2.RateLimitDescriptor.Entry(key="budget", value="b"),
            ratelimit_pb2.RateLimitDescriptor.Entry(key="x-user-id", value="alice"),
            ratelimit_pb2.RateLimitDescriptor.Entry(key="tokenvoy_hold", value="reserve"),
        ]
    )
    descriptor.hits_addend.value = 7
    request = request_from_pb(rls_pb2.RateLimitRequest(domain="ai", descriptors=[descriptor]))
    assert request.descriptors[0].entries == NAME and request.descriptors[0].hold == "reserve"
    assert split_hold((("a", "1"), ("tokenvoy_hold", "other"))) == ((("a", "1"), ("tokenvoy_hold", "other")), None, 0)
    assert split_hold((("a", "1"), ("tokenvoy_hold", "release:42"))) == ((("a", "1"),), "release", 42)

    config = load_config([("b.yaml", BUDGET)])
    service = RateLimitService(config, MemoryBackend(clock=lambda: HOUR_START), clock=lambda: HOUR_START)
    response = decision_to_pb(await service.should_rate_limit(request))
    fields = response.dynamic_metadata.fields
    assert fields["b"].number_value == 7
    assert fields["b_hold"].string_value == f"release:{HOUR_START // DEFAULT_HOLD_SLOT_S}"
    assert response.statuses[0].limit_remaining == 93

    down = RateLimitService(config, Down(), clock=lambda: HOUR_START, failure_mode=FailureMode.OPEN)
    response = decision_to_pb(await down.should_rate_limit(request))
    assert response.overall_code == Code.OK and not response.dynamic_metadata.fields  # no hold, no release
