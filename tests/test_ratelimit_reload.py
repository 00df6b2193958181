"""Config reload: a file edit applies within 2 s with counters kept, a bad edit keeps the old config, SIGHUP."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest

from tokenvoy.pb.envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from tokenvoy.pb.envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from tokenvoy.ratelimit.config import RateLimitConfigError
from tokenvoy.ratelimit.metrics import RateLimitMetrics
from tokenvoy.ratelimit.reload import ConfigWatcher
from tokenvoy.ratelimit.server import serve

from .test_ratelimit_redis import RedisServer, redis_server, unique_prefix

__all__ = ["redis_server"]  # a fixture: the Redis run of the reload test needs it

OK = rls_pb2.RateLimitResponse.OK
OVER_LIMIT = rls_pb2.RateLimitResponse.OVER_LIMIT


def budgets(limit: int, unit: str = "hour") -> str:
    return textwrap.dedent(
        f"""\
        domain: ai
        descriptors:
          - key: budget
            value: gpt
            descriptors:
              - key: x-user-id
                rate_limit: {{unit: {unit}, requests_per_unit: {limit}}}
        """
    )


def check(user: str = "alice", hits: int = 0) -> rls_pb2.RateLimitRequest:
    d = ratelimit_pb2.RateLimitDescriptor(
        entries=[
            ratelimit_pb2.RateLimitDescriptor.Entry(key="budget", value="gpt"),
            ratelimit_pb2.RateLimitDescriptor.Entry(key="x-user-id", value=user),
        ]
    )
    d.hits_addend.value = hits
    return rls_pb2.RateLimitRequest(domain="ai", descriptors=[d])


def write(path: Path, text: str) -> None:
    """Replace the file the way editors and ConfigMaps do: write a new file, rename it over the old one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def until(stub: rls_pb2_grpc.RateLimitServiceStub, expected_remaining: int, within: float) -> float:
    """Seconds until a pure check reports ``expected_remaining`` (fails after ``within`` seconds)."""
    started = time.monotonic()
    while True:
        response = await stub.ShouldRateLimit(check(), timeout=5)
        if response.statuses[0].limit_remaining == expected_remaining:
            return time.monotonic() - started
        assert time.monotonic() - started < within, f"still {response.statuses[0].limit_remaining} remaining"
        await asyncio.sleep(0.05)


class Served:
    def __init__(self, task: asyncio.Future[None], stop: asyncio.Event, stub: rls_pb2_grpc.RateLimitServiceStub):
        self.task = task
        self.stop = stop
        self.stub = stub


@pytest.fixture(params=["memory", "redis"])
async def served(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Served, Path]]:
    """``serve()`` on a real file, polling every second (the default), on each backend kind."""
    config = tmp_path / "budgets.yaml"
    config.write_text(budgets(100))
    redis: dict[str, str] = {}
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        redis = {"redis_url": server.url, "redis_prefix": unique_prefix()}
    stop = asyncio.Event()
    listen = f"unix:{tmp_path}/rls.sock"
    task = asyncio.ensure_future(serve([config], listen, stop=stop, grace=1, **redis))  # type: ignore[arg-type]
    async with grpc.aio.insecure_channel(listen) as channel:
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)
        await stub.ShouldRateLimit(check(), wait_for_ready=True, timeout=10)
        yield Served(task, stop, stub), config
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_edit_applies_within_two_seconds_and_keeps_counters(
    served: tuple[Served, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tokenvoy.ratelimit")
    s, config = served
    await s.stub.ShouldRateLimit(check(hits=60), timeout=5)
    assert (await s.stub.ShouldRateLimit(check(), timeout=5)).statuses[0].limit_remaining == 40
    write(config, budgets(200))
    await until(s.stub, 140, within=2.0)  # the new limit, and the 60 already spent
    assert f"rate limit config reloaded ({config} changed), domains: ai (1 limit, {config})" in caplog.text


async def test_bad_edit_keeps_the_old_config_and_says_where(
    served: tuple[Served, Path], caplog: pytest.LogCaptureFixture
) -> None:
    s, config = served
    await s.stub.ShouldRateLimit(check(hits=30), timeout=5)
    write(config, budgets(200, unit="fortnight"))
    deadline = time.monotonic() + 2.0
    while "reload failed" not in caplog.text:
        assert time.monotonic() < deadline, "the bad edit was not reported"
        await asyncio.sleep(0.05)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].getMessage() == (
        f"rate limit config reload failed ({config} changed), keeping the previous configuration: "
        f"{config}: domain \"ai\" descriptor budget=gpt > x-user-id: rate_limit: unit 'fortnight' is not one of "
        "second, minute, hour, day, week, month, year"
    )
    assert (await s.stub.ShouldRateLimit(check(), timeout=5)).statuses[0].limit_remaining == 70  # still 100
    await asyncio.sleep(1.5)
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1  # reported once, not every poll
    write(config, budgets(300))  # fixed: applies, counters still there
    await until(s.stub, 270, within=2.0)


def test_watcher_reports_a_missing_file_and_recovers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = tmp_path / "budgets.yaml"
    config.write_text(budgets(100))
    applied: list[int] = []
    metrics = RateLimitMetrics()

    def apply(new: object) -> None:
        applied.append(1)

    watcher = ConfigWatcher([config], apply, metrics=metrics)  # type: ignore[arg-type]
    assert watcher.load().domains["ai"].limit_count == 1
    assert watcher.check() is None  # unchanged
    config.unlink()
    assert watcher.check() is False
    assert f"{config}: cannot read: No such file or directory" in caplog.text
    assert watcher.check() is None  # still missing: not reported again
    config.write_text(budgets(50))
    assert watcher.check() is True
    assert applied == [1]
    assert watcher.reload("SIGHUP") is True  # a forced reload, even without a change
    registry = metrics.registry
    assert registry.get_sample_value("tokenvoy_ratelimit_config_reloads_total", {"result": "failure"}) == 1
    assert registry.get_sample_value("tokenvoy_ratelimit_config_reloads_total", {"result": "success"}) == 2


def test_initial_load_errors_are_raised(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("domain: ai\ndescriptors: [{key: a, rate_limit: {unit: hour}}]\n")
    with pytest.raises(RateLimitConfigError, match="requests_per_unit is required"):
        ConfigWatcher([config]).load()


async def test_sighup_reloads_and_the_cli_serves_metrics(tmp_path: Path) -> None:
    """The real process: --reload-interval 0 (no polling), SIGHUP, then /metrics shows the reload."""
    config = tmp_path / "budgets.yaml"
    config.write_text(budgets(100))
    listen = f"unix:{tmp_path}/rls.sock"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tokenvoy",
        "ratelimit",
        "--config",
        str(config),
        "--listen",
        listen,
        "--admin-listen",
        "127.0.0.1:0",
        "--reload-interval",
        "0",
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None

    async def line_with(text: str) -> str:
        while True:
            line = (await asyncio.wait_for(proc.stderr.readline(), 20)).decode()  # type: ignore[union-attr]
            assert line, f"the server exited before logging {text!r}"
            if text in line:
                return line

    try:
        started = await line_with("ratelimit serving on")
        assert "counters: in memory (this process only, lost on restart)" in started
        match = re.search(r"metrics: (http://127\.0\.0\.1:\d+)/metrics", started)
        assert match, started
        async with grpc.aio.insecure_channel(listen) as channel:
            stub = rls_pb2_grpc.RateLimitServiceStub(channel)
            await stub.ShouldRateLimit(check(hits=10), wait_for_ready=True, timeout=10)
            write(config, budgets(1000))
            await asyncio.sleep(1.5)  # no polling: nothing happens until SIGHUP
            assert (await stub.ShouldRateLimit(check(), timeout=5)).statuses[0].limit_remaining == 90
            proc.send_signal(signal.SIGHUP)
            await line_with("rate limit config reloaded (SIGHUP)")
            assert (await stub.ShouldRateLimit(check(), timeout=5)).statuses[0].limit_remaining == 990
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"{match.group(1)}/metrics")).text
        assert 'tokenvoy_ratelimit_config_reloads_total{result="success"} 1.0' in text
        assert 'tokenvoy_ratelimit_hits_total{descriptor="budget_gpt.x-user-id",domain="ai"} 10.0' in text
        assert "process_resident_memory_bytes" in text
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
