"""The RLS gRPC server end to end: a real grpc.aio server, a real client stub, our protobuf messages."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import pytest
from google.protobuf import wrappers_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tokenvoy.pb.envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from tokenvoy.pb.envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from tokenvoy.ratelimit.config import load_config
from tokenvoy.ratelimit.limiter import CounterOp
from tokenvoy.ratelimit.memory_backend import MemoryBackend
from tokenvoy.ratelimit.redis_backend import RedisBackend
from tokenvoy.ratelimit.server import RunningServer, main, serve, start_server

from .test_ratelimit_redis import SEMANTICS_TIMEOUT, redis_server, unique_prefix

__all__ = ["redis_server"]  # a fixture: the Redis runs of the gRPC semantics tests need it

HOUR_START = 1_699_999_200
NOW = HOUR_START + 600

BUDGETS = """
domain: ai
descriptors:
  - key: x-user-id
    rate_limit: {unit: hour, requests_per_unit: 100, name: user-tokens}
  - key: x-team
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
"""

Response = rls_pb2.RateLimitResponse
OK = rls_pb2.RateLimitResponse.OK
OVER_LIMIT = rls_pb2.RateLimitResponse.OVER_LIMIT


def descriptor(
    *entries: tuple[str, str], hits: int | None = None, negative: bool = False
) -> ratelimit_pb2.RateLimitDescriptor:
    d = ratelimit_pb2.RateLimitDescriptor(
        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries],
        is_negative_hits=negative,
    )
    if hits is not None:
        d.hits_addend.CopyFrom(wrappers_pb2.UInt64Value(value=hits))
    return d


def request(
    *descriptors: ratelimit_pb2.RateLimitDescriptor, domain: str = "ai", hits_addend: int = 0
) -> rls_pb2.RateLimitRequest:
    return rls_pb2.RateLimitRequest(domain=domain, descriptors=descriptors, hits_addend=hits_addend)


class Rls:
    """A running server plus a connected client."""

    def __init__(self, running: RunningServer, channel: grpc.aio.Channel) -> None:
        self.running = running
        self.channel = channel
        self.stub = rls_pb2_grpc.RateLimitServiceStub(channel)

    async def call(self, *descriptors: ratelimit_pb2.RateLimitDescriptor, **kwargs: object) -> Response:
        return await self.stub.ShouldRateLimit(request(*descriptors, **kwargs), timeout=5)  # type: ignore[arg-type]


async def start(listen: str = "127.0.0.1:0", backend: object = None, config: str = BUDGETS) -> Rls:
    running = await start_server(
        load_config([("budgets.yaml", textwrap.dedent(config))]),
        listen,
        backend=backend,  # type: ignore[arg-type]
        clock=lambda: NOW,
    )
    target = listen if listen.startswith("unix:") else f"127.0.0.1:{running.port}"
    return Rls(running, grpc.aio.insecure_channel(target))


@pytest.fixture(params=["memory", "redis"])
async def rls(request: pytest.FixtureRequest) -> AsyncIterator[Rls]:
    """A server on each backend kind: the gRPC semantics tests run on both."""
    backend = None
    if request.param == "redis":
        backend = RedisBackend(
            request.getfixturevalue("redis_server").url,
            prefix=unique_prefix(),
            clock=lambda: NOW,
            timeout=SEMANTICS_TIMEOUT,
        )
    server = await start(backend=backend)
    yield server
    await server.channel.close()
    await server.running.stop(0)


async def test_check_then_charge_per_user_budget(rls: Rls) -> None:
    """Envoy Gateway's shape: a hits_addend 0 check at request time, the token charge at stream end."""

    def check(user: str) -> ratelimit_pb2.RateLimitDescriptor:
        return descriptor(("x-user-id", user), hits=0)

    def charge(user: str, tokens: int) -> ratelimit_pb2.RateLimitDescriptor:
        return descriptor(("x-user-id", user), hits=tokens)

    first = await rls.call(check("alice"))
    assert first.overall_code == OK
    assert first.statuses[0].limit_remaining == 100

    await rls.call(charge("alice", 60))
    second = await rls.call(check("alice"))
    assert second.overall_code == OK
    assert second.statuses[0].limit_remaining == 40

    await rls.call(charge("alice", 60))  # 120/100: the charge is recorded even though it overshoots
    third = await rls.call(check("alice"))
    assert third.overall_code == OVER_LIMIT
    status = third.statuses[0]
    assert status.code == OVER_LIMIT
    assert status.limit_remaining == 0
    assert status.current_limit == rls_pb2.RateLimitResponse.RateLimit(
        name="user-tokens", requests_per_unit=100, unit=rls_pb2.RateLimitResponse.RateLimit.HOUR
    )
    assert status.duration_until_reset.seconds == 3000

    other = await rls.call(check("bob"))
    assert other.overall_code == OK
    assert other.statuses[0].limit_remaining == 100


async def test_overspending_the_budget_blocks_the_next_request(rls: Rls) -> None:
    # As envoyproxy/ratelimit: spending exactly the budget still admits a check; going over blocks it.
    assert (await rls.call(descriptor(("x-user-id", "carol"), hits=100))).overall_code == OK
    assert (await rls.call(descriptor(("x-user-id", "carol"), hits=0))).overall_code == OK
    assert (await rls.call(descriptor(("x-user-id", "carol"), hits=1))).overall_code == OVER_LIMIT
    assert (await rls.call(descriptor(("x-user-id", "carol"), hits=0))).overall_code == OVER_LIMIT


async def test_hits_addend_presence_survives_the_wire(rls: Rls) -> None:
    # no per-descriptor hits_addend and no request hits_addend: counts 1
    assert (await rls.call(descriptor(("x-user-id", "dave")))).statuses[0].limit_remaining == 99
    # request-level hits_addend when the descriptor has none
    response = await rls.call(descriptor(("x-user-id", "dave")), hits_addend=9)
    assert response.statuses[0].limit_remaining == 90
    # explicit 0 beats the request-level value: a read
    response = await rls.call(descriptor(("x-user-id", "dave"), hits=0), hits_addend=9)
    assert response.statuses[0].limit_remaining == 90


async def test_negative_hits_refund(rls: Rls) -> None:
    await rls.call(descriptor(("x-user-id", "erin"), hits=70))
    response = await rls.call(descriptor(("x-user-id", "erin"), hits=50, negative=True))
    assert response.statuses[0].limit_remaining == 80


async def test_limit_override_and_shadow_mode(rls: Rls) -> None:
    d = descriptor(("x-user-id", "frank"))
    d.limit.requests_per_unit = 1
    d.limit.unit = 2  # MINUTE
    assert (await rls.call(d)).overall_code == OK
    over = await rls.call(d)
    assert over.overall_code == OVER_LIMIT
    assert over.statuses[0].current_limit.requests_per_unit == 1
    assert over.statuses[0].current_limit.name == ""
    assert over.statuses[0].duration_until_reset.seconds == 60

    team = descriptor(("x-team", "red"))
    await rls.call(team)
    shadowed = await rls.call(team)
    assert shadowed.overall_code == OK
    assert shadowed.statuses[0].code == OK
    assert shadowed.statuses[0].limit_remaining == 0


async def test_unmatched_and_unknown_domain_are_ok_without_limit(rls: Rls) -> None:
    for response in (
        await rls.call(descriptor(("nothing", "here"))),
        await rls.call(descriptor(("x-user-id", "a")), domain="unknown"),
    ):
        assert response.overall_code == OK
        assert len(response.statuses) == 1
        assert not response.statuses[0].HasField("current_limit")


@pytest.mark.parametrize(
    ("req", "message"),
    [
        (request(descriptor(("x-user-id", "a")), domain=""), "rate limit domain must not be empty"),
        (request(), "rate limit descriptor list must not be empty"),
    ],
)
async def test_invalid_requests_are_rejected(rls: Rls, req: rls_pb2.RateLimitRequest, message: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rls.stub.ShouldRateLimit(req, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == message


async def test_malformed_request_bytes_are_invalid_argument(rls: Rls) -> None:
    raw_call = rls.channel.unary_unary("/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await raw_call(b"\x0a\xff", timeout=5)  # field 1 (domain) claims 255 bytes; 0 follow
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed RateLimitRequest" in (info.value.details() or "")


async def test_identical_requests_are_each_counted(rls: Rls) -> None:
    """The servicer remembers decoded requests by their bytes: the same charge sent again is charged again."""
    charge = descriptor(("x-user-id", "same-bytes"), hits=30)
    remaining = [(await rls.call(charge)).statuses[0].limit_remaining for _ in range(3)]
    assert remaining == [70, 40, 10]
    over = await rls.call(charge)
    assert over.overall_code == OVER_LIMIT


class FailingBackend(MemoryBackend):
    async def add(self, ops: Sequence[CounterOp]) -> list[int]:
        raise ConnectionError("redis is down")


async def test_backend_failure_is_unavailable() -> None:
    server = await start(backend=FailingBackend())
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await server.call(descriptor(("x-user-id", "a")))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "redis is down" in (info.value.details() or "")
    finally:
        await server.channel.close()
        await server.running.stop(0)


async def test_health_and_unix_socket(tmp_path: Path) -> None:
    server = await start(listen=f"unix:{tmp_path}/rls.sock")
    try:
        health = health_pb2_grpc.HealthStub(server.channel)
        for service in ("", "envoy.service.ratelimit.v3.RateLimitService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert (await server.call(descriptor(("x-user-id", "a")))).overall_code == OK
    finally:
        await server.channel.close()
        await server.running.stop(0)
    # a stale socket file from a killed server does not prevent the next start
    again = await start(listen=f"unix:{tmp_path}/rls.sock")
    await again.channel.close()
    await again.running.stop(0)


class SlowBackend(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()

    async def add(self, ops: Sequence[CounterOp]) -> list[int]:
        self.entered.set()
        await asyncio.sleep(0.3)
        return await super().add(ops)


async def test_in_flight_calls_finish_during_graceful_stop() -> None:
    backend = SlowBackend()
    server = await start(backend=backend)
    try:
        call = asyncio.ensure_future(server.call(descriptor(("x-user-id", "a"))))
        await backend.entered.wait()
        await server.running.stop(5)
        assert (await call).overall_code == OK
    finally:
        await server.channel.close()


async def test_serve_runs_until_stopped(tmp_path: Path) -> None:
    config = tmp_path / "budgets.yaml"
    config.write_text(textwrap.dedent(BUDGETS))
    stop = asyncio.Event()
    socket = f"unix:{tmp_path}/serve.sock"
    task = asyncio.ensure_future(serve([config], socket, stop=stop, grace=1))
    async with grpc.aio.insecure_channel(socket) as channel:
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)
        response = await stub.ShouldRateLimit(request(descriptor(("x-user-id", "a"))), wait_for_ready=True, timeout=10)
        assert response.statuses[0].limit_remaining == 99
    stop.set()
    await asyncio.wait_for(task, 10)


def test_main_reports_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("domain: ai\ndescriptors:\n  - key: a\n    rate_limit: {unit: hour}\n")
    assert main(["--config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f'{bad}: domain "ai" descriptor a: rate_limit: requests_per_unit is required' in err
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 1
    assert "missing.yaml: cannot read: No such file or directory" in capsys.readouterr().err
    good = tmp_path / "good.yaml"
    good.write_text("domain: ai\n")
    assert main(["--config", str(good), "--listen", "nonsense"]) == 1
    assert "expected HOST:PORT or unix:/path.sock" in capsys.readouterr().err


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tokenvoy ratelimit")
    assert "unix:/path.sock" in out and "127.0.0.1:8081" in out


async def test_process_exits_zero_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "budgets.yaml"
    config.write_text(textwrap.dedent(BUDGETS))
    socket = f"unix:{tmp_path}/proc.sock"
    argv = [sys.executable, "-m", "tokenvoy.ratelimit.server", "--config", str(config), "--listen", socket]
    proc = subprocess.Popen(
        [*argv, "--admin-listen", "off"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        async with grpc.aio.insecure_channel(socket) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(), wait_for_ready=True, timeout=20)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    lines = err.splitlines()
    assert any(f"ratelimit serving on {socket}, domains: ai (2 limits, {config})" in line for line in lines), err
