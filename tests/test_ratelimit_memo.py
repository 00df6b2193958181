"""The RLS's remembered plans: a request sent again reuses its plan only while the plan's windows and hold
slot last and the config is the one it was made with; the answers are those of a fresh plan."""

from __future__ import annotations

import textwrap

from tokenvoy.ratelimit.config import RateLimitConfig, load_config
from tokenvoy.ratelimit.limiter import Descriptor, LimitRequest, plan
from tokenvoy.ratelimit.memory_backend import MemoryBackend
from tokenvoy.ratelimit.service import PlanMemo, RateLimitService

HOUR_START = 1_699_999_200
BUDGET = """
domain: ai
descriptors:
  - key: x-user-id
    rate_limit: {unit: hour, requests_per_unit: 100, name: user-tokens}
  - key: x-team
    rate_limit: {unit: minute, requests_per_unit: 100, name: team}
"""
USER = (("x-user-id", "alice"),)


def config(text: str = BUDGET) -> RateLimitConfig:
    return load_config([("budgets.yaml", textwrap.dedent(text))])


def test_a_plan_is_valid_until_its_shortest_window_ends() -> None:
    request = LimitRequest("ai", (Descriptor(USER, 5), Descriptor((("x-team", "t"),), 5)))
    p = plan(config(), request, HOUR_START + 30.5)
    assert p.valid_until == HOUR_START + 60  # the minute window ends first
    later = p.at(HOUR_START + 59.9)
    assert later is not None and later.now == HOUR_START + 59 and later.ops == p.ops
    assert p.at(HOUR_START + 60) is None
    assert p.at(HOUR_START + 29) is None  # a clock that went back plans again


def test_a_reservation_plan_ends_with_its_hold_slot() -> None:
    request = LimitRequest("ai", (Descriptor(USER, 5, hold="reserve"),))
    p = plan(config(), request, HOUR_START + 10, hold_slot_s=300)
    assert p.valid_until == HOUR_START + 300
    nothing = plan(config(), LimitRequest("ai", (Descriptor((("other", "x"),), 5),)), HOUR_START)
    assert nothing.ops == () and nothing.at(HOUR_START + 10**6) is not None


async def test_a_remembered_plan_answers_as_a_fresh_one_across_windows_and_reloads() -> None:
    now = [HOUR_START + 3590.0]
    service = RateLimitService(config(), MemoryBackend(clock=lambda: now[0]), clock=lambda: now[0])
    memo = PlanMemo()
    charge = LimitRequest("ai", (Descriptor(USER, 30),))
    fresh = LimitRequest("ai", (Descriptor(USER, 30),))  # equal, never remembered
    assert (await service.should_rate_limit(charge, memo)).statuses[0].limit_remaining == 70
    assert (await service.should_rate_limit(charge, memo)).statuses[0].limit_remaining == 40
    now[0] += 5  # same window: the remembered plan, the reset 5 s closer
    status = (await service.should_rate_limit(charge, memo)).statuses[0]
    assert (status.limit_remaining, status.duration_until_reset) == (10, 5)
    now[0] += 10  # the next hour: a new counter, not the old window's
    status = (await service.should_rate_limit(charge, memo)).statuses[0]
    assert (status.limit_remaining, status.duration_until_reset) == (70, 3595)
    assert (await service.should_rate_limit(fresh)).statuses[0].limit_remaining == 40
    service.set_config(config(BUDGET.replace("requests_per_unit: 100, name: user-tokens", "requests_per_unit: 1000")))
    assert (await service.should_rate_limit(charge, memo)).statuses[0].limit_remaining == 910  # the reloaded rule
