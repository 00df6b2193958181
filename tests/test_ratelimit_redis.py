"""The Redis backend against a real ``redis-server`` started by the tests (Debian package ``redis-server``).

The ``redis_server`` fixture lives here and is imported by the limiter and service tests, which run their
semantics suites over both backends. Each test uses its own key prefix, so one server serves them all;
tests that kill or freeze Redis start their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis

from tests.ports import free_port
from tokenvoy.pb.envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from tokenvoy.pb.envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from tokenvoy.ratelimit import redis_backend
from tokenvoy.ratelimit.backend import BackendUnavailable, CounterBackend
from tokenvoy.ratelimit.config import load_config
from tokenvoy.ratelimit.limiter import CounterOp
from tokenvoy.ratelimit.metrics import RateLimitMetrics
from tokenvoy.ratelimit.redis_backend import MAX_COUNTER, RedisBackend, redact_url
from tokenvoy.ratelimit.server import RunningServer, build_parser, serve, start_server
from tokenvoy.ratelimit.service import FailureMode

INSTALL_HINT = (
    "redis-server is not on PATH: the Redis tests need a real Redis server. "
    "Install it (Debian/Ubuntu: sudo apt-get install -y redis-server; macOS: brew install redis)."
)
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

OK = rls_pb2.RateLimitResponse.OK
OVER_LIMIT = rls_pb2.RateLimitResponse.OVER_LIMIT


# --------------------------------------------------------------------------------------------------------
# A real redis-server


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` on loopback, no persistence, in its own temporary directory."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(INSTALL_HINT, pytrace=False)
        self.binary = binary
        self.directory = directory
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _spawn(self) -> bool:
        """Start on ``self.port`` and wait for PONG; False if it exited (e.g. the port was taken)."""
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(self.directory), "--logfile", str(self.directory / "redis.log")]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.proc.poll() is None:
            if _pong(self.port):
                return True
            time.sleep(0.01)
        self.stop()
        return False

    def start(self) -> RedisServer:
        """Start, picking another free port if this one was taken meanwhile."""
        for _ in range(5):
            if self._spawn():
                return self
            self.port = free_port()
        log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
        pytest.fail(f"redis-server did not start:\n{log}", pytrace=False)

    def restart(self) -> None:
        """Start again on the same port (recovery tests): the counters are gone, the address is the same."""
        if not self._spawn():
            pytest.fail(f"redis-server did not restart on 127.0.0.1:{self.port}", pytrace=False)

    def kill(self) -> None:
        """SIGKILL: an abrupt outage, connections reset."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if self.proc.pid and _is_stopped(self.proc.pid):
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _is_stopped(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("T")
    return False


@contextlib.contextmanager
def running_redis() -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory(prefix="tokenvoy-redis-") as directory:
        server = RedisServer(Path(directory)).start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server shared by the tests of a module (they use distinct key prefixes)."""
    with running_redis() as server:
        yield server


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server for one test, which may kill, freeze or restart it."""
    with running_redis() as server:
        yield server


def unique_prefix() -> str:
    return f"test:{uuid.uuid4().hex[:12]}:"


# --------------------------------------------------------------------------------------------------------
# Helpers


def descriptor(*entries: tuple[str, str], hits: int | None = None) -> ratelimit_pb2.RateLimitDescriptor:
    d = ratelimit_pb2.RateLimitDescriptor(
        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries]
    )
    if hits is not None:
        d.hits_addend.value = hits
    return d


class Client:
    """A started server and a channel to it."""

    def __init__(self, running: RunningServer) -> None:
        self.running = running
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        self.stub = rls_pb2_grpc.RateLimitServiceStub(self.channel)

    async def call(self, *descriptors: ratelimit_pb2.RateLimitDescriptor) -> rls_pb2.RateLimitResponse:
        request = rls_pb2.RateLimitRequest(domain="ai", descriptors=descriptors)
        return await self.stub.ShouldRateLimit(request, timeout=5)

    async def close(self) -> None:
        await self.channel.close()
        await self.running.stop(0)


async def start_client(
    url: str,
    prefix: str,
    *,
    failure_mode: FailureMode = FailureMode.OPEN,
    timeout: float = 0.05,  # the production default: these tests are about timing out
    clock: Callable[[], float] = lambda: NOW,
) -> Client:
    backend = RedisBackend(url, prefix=prefix, timeout=timeout, clock=clock)
    await backend.connect()
    running = await start_server(
        load_config([("budgets.yaml", textwrap.dedent(BUDGETS))]),
        "127.0.0.1:0",
        backend=backend,
        clock=clock,
        failure_mode=failure_mode,
        metrics=RateLimitMetrics(),
    )
    return Client(running)


@pytest.fixture
async def pair(redis_server: RedisServer) -> AsyncIterator[tuple[Client, Client]]:
    """Two ratelimit servers (two replicas) on one Redis and one key prefix."""
    prefix = unique_prefix()
    a = await start_client(redis_server.url, prefix)
    b = await start_client(redis_server.url, prefix)
    yield a, b
    await a.close()
    await b.close()


def sample(client: Client, name: str, labels: dict[str, str] | None = None) -> float | None:
    return client.running.metrics.registry.get_sample_value(name, labels or {})


# --------------------------------------------------------------------------------------------------------
# Backend


async def test_backend_satisfies_the_protocol_and_documents_its_key_layout(redis_server: RedisServer) -> None:
    backend = RedisBackend(redis_server.url, clock=lambda: NOW)
    assert isinstance(backend, CounterBackend)
    key = f"ai_x-user-id_alice_{HOUR_START}"
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        await client.delete(f"tokenvoy:rl:{key}")
        assert await backend.add([CounterOp(key, 7, HOUR_START + 3600)]) == [7]
        assert await client.get(f"tokenvoy:rl:{key}") == b"7"  # the default prefix, then the limiter's key
        assert 2990 <= await client.ttl(f"tokenvoy:rl:{key}") <= 3000  # to the end of the window (NOW + 3000)
        # later writes keep the TTL of the first one; reads and refunds create nothing
        assert await backend.add([CounterOp(key, 1, HOUR_START + 3600), CounterOp("absent", 0, 1)]) == [8, 0]
        assert await backend.add([CounterOp("absent", -3, HOUR_START + 3600)]) == [0]
        assert await client.exists("tokenvoy:rl:absent") == 0
    finally:
        await client.aclose()
        await backend.close()


async def test_backend_contract(redis_server: RedisServer) -> None:
    """The same contract as the memory backend: ordered ops, floor at 0, same-key ops see each other."""
    backend = RedisBackend(redis_server.url, prefix=unique_prefix(), clock=lambda: 100)
    try:
        ops = [CounterOp("a", 2, 160), CounterOp("b", 1, 200), CounterOp("a", 3, 160)]
        assert await backend.add(ops) == [2, 1, 5]
        assert await backend.add([CounterOp("a", -10, 160), CounterOp("c", 0, 160)]) == [0, 0]
        assert await backend.add([CounterOp("a", 4, 160)]) == [4]
        assert await backend.add([]) == []
        # hits_addend is a uint64: huge values are capped far above any uint32 limit instead of overflowing
        assert await backend.add([CounterOp("big", 2**64 - 1, 160), CounterOp("big", 2**64 - 1, 160)]) == [
            MAX_COUNTER,
            MAX_COUNTER,
        ]
    finally:
        await backend.close()


async def test_evalsha_falls_back_to_eval_after_script_flush(redis_server: RedisServer) -> None:
    backend = RedisBackend(redis_server.url, prefix=unique_prefix(), clock=lambda: 100)
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        await client.script_flush()
        assert await backend.add([CounterOp("k", 1, 160)]) == [1]  # NOSCRIPT -> EVAL
        assert await backend.add([CounterOp("k", 1, 160)]) == [2]  # EVALSHA again: EVAL cached it
        assert await client.script_exists(redis_backend._SCRIPT_SHA) == [True]
    finally:
        await client.aclose()
        await backend.close()


async def test_a_refused_script_is_unavailable_without_dropping_the_connection(redis_server: RedisServer) -> None:
    prefix = unique_prefix()
    backend = RedisBackend(redis_server.url, prefix=prefix, clock=lambda: 100)
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        await client.set(f"{prefix}foreign", "not a number")
        with pytest.raises(BackendUnavailable, match="refused the counter script"):
            await backend.add([CounterOp("foreign", 1, 160)])
        assert backend.available
        assert await backend.add([CounterOp("fine", 1, 160)]) == [1]
    finally:
        await client.aclose()
        await backend.close()


def test_redact_url() -> None:
    assert redact_url("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    assert redact_url("rediss://user:s3cret@[::1]:6380") == "rediss://user:***@[::1]:6380"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"


# --------------------------------------------------------------------------------------------------------
# Replicas


async def test_two_replicas_enforce_one_budget(pair: tuple[Client, Client]) -> None:
    a, b = pair
    assert (await a.call(descriptor(("x-user-id", "alice"), hits=60))).overall_code == OK
    assert (await b.call(descriptor(("x-user-id", "alice"), hits=0))).statuses[0].limit_remaining == 40
    assert (await b.call(descriptor(("x-user-id", "alice"), hits=60))).overall_code == OVER_LIMIT
    check = await a.call(descriptor(("x-user-id", "alice"), hits=0))
    assert check.overall_code == OVER_LIMIT
    assert check.statuses[0].limit_remaining == 0


async def test_concurrent_charges_on_two_replicas_are_never_lost(pair: tuple[Client, Client]) -> None:
    a, b = pair
    calls = [(a if i % 2 else b).call(descriptor(("x-user-id", "bob"), hits=1)) for i in range(200)]
    answers = await asyncio.gather(*calls)
    assert sum(r.overall_code == OK for r in answers) == 100  # exactly the budget, whoever served it
    remaining = sorted(r.statuses[0].limit_remaining for r in answers if r.overall_code == OK)
    assert remaining == list(range(100))  # every count from 1 to 100 was seen exactly once
    assert (await a.call(descriptor(("x-user-id", "bob"), hits=0))).overall_code == OVER_LIMIT


async def test_a_restarted_replica_keeps_the_counts(redis_server: RedisServer) -> None:
    prefix = unique_prefix()
    first = await start_client(redis_server.url, prefix)
    await first.call(descriptor(("x-user-id", "carol"), hits=70))
    await first.close()
    second = await start_client(redis_server.url, prefix)
    try:
        assert (await second.call(descriptor(("x-user-id", "carol"), hits=0))).statuses[0].limit_remaining == 30
    finally:
        await second.close()


# --------------------------------------------------------------------------------------------------------
# Outages


async def _wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def _records(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


async def test_redis_killed_fails_open_logs_once_and_recovers(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tokenvoy")
    client = await start_client(own_redis.url, unique_prefix())
    try:
        await client.call(descriptor(("x-user-id", "dan"), hits=150))
        assert (await client.call(descriptor(("x-user-id", "dan"), hits=0))).overall_code == OVER_LIMIT
        assert sample(client, "tokenvoy_ratelimit_backend_up") == 1

        own_redis.kill()
        for _ in range(5):
            response = await client.call(descriptor(("x-user-id", "dan"), hits=0))
            assert response.overall_code == OK  # fail open: Envoy serves the request
            assert not response.statuses[0].HasField("current_limit")  # no x-ratelimit-* from a guess
        # a descriptor without a limit needs no counter: answered as usual
        assert (await client.call(descriptor(("nothing", "here")))).overall_code == OK

        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        message = warnings[0].getMessage()
        assert "rate limit counters unavailable" in message
        assert f"redis at {own_redis.url}" in message
        assert "failure mode open, answering OK without counting" in message
        assert sample(client, "tokenvoy_ratelimit_backend_errors_total") == 5
        assert sample(client, "tokenvoy_ratelimit_backend_up") == 0

        own_redis.restart()  # empty: no persistence
        backend = client.running.backend
        await _wait_until(lambda: backend.available)
        response = await client.call(descriptor(("x-user-id", "dan"), hits=10))
        assert response.overall_code == OK and response.statuses[0].limit_remaining == 90
        assert sample(client, "tokenvoy_ratelimit_backend_up") == 1
        recovered = _records(caplog, "rate limit counters available again")
        assert len(recovered) == 1 and recovered[0].levelno == logging.INFO
        assert "5 calls answered by failure mode open" in recovered[0].getMessage()
        assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    finally:
        await client.close()


async def test_frozen_redis_is_answered_within_the_timeout(own_redis: RedisServer) -> None:
    """SIGSTOP: connections stay open but nothing answers. The call must not wait for the socket timeout."""
    client = await start_client(own_redis.url, unique_prefix(), timeout=0.1)
    try:
        await client.call(descriptor(("x-user-id", "eve"), hits=1))
        assert own_redis.proc is not None
        os.kill(own_redis.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            response = await client.call(descriptor(("x-user-id", "eve"), hits=1))
            elapsed = time.monotonic() - started
            # later calls do not even try while the backend is known to be down
            assert (await client.call(descriptor(("x-user-id", "eve"), hits=1))).overall_code == OK
        finally:
            os.kill(own_redis.proc.pid, signal.SIGCONT)
        assert response.overall_code == OK
        assert elapsed < 0.9, f"a call took {elapsed:.3f}s with a 0.1 s Redis timeout"  # connect timeout is 1 s
        backend = client.running.backend
        await _wait_until(lambda: backend.available)
        # 1 before, then this one; the timed-out charge had already been sent, so Redis may have run it
        # when it woke up (a timeout loses the answer, not necessarily the charge)
        remaining = (await client.call(descriptor(("x-user-id", "eve"), hits=1))).statuses[0].limit_remaining
        assert remaining in (97, 98)
    finally:
        await client.close()


async def test_fail_closed_answers_over_limit(own_redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    client = await start_client(own_redis.url, unique_prefix(), failure_mode=FailureMode.CLOSED)
    try:
        assert (await client.call(descriptor(("x-user-id", "fay"), hits=0))).overall_code == OK
        own_redis.kill()
        response = await client.call(
            descriptor(("x-user-id", "fay"), hits=0), descriptor(("x-team", "red")), descriptor(("other", "x"))
        )
        assert response.overall_code == OVER_LIMIT
        user, shadowed, unlimited = response.statuses
        assert user.code == OVER_LIMIT
        assert user.current_limit.requests_per_unit == 100 and user.current_limit.name == "user-tokens"
        assert user.limit_remaining == 0 and user.duration_until_reset.seconds == 3000
        assert shadowed.code == OK  # shadow mode never rejects, not even when failing closed
        assert unlimited.code == OK and not unlimited.HasField("current_limit")
        assert "failure mode closed, answering OVER_LIMIT for every limited descriptor" in caplog.text
    finally:
        await client.close()


async def test_serve_starts_without_redis_and_counts_once_it_appears(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tokenvoy")
    config = tmp_path / "budgets.yaml"
    config.write_text(textwrap.dedent(BUDGETS))
    redis = RedisServer(tmp_path)  # not started yet: its port is free
    stop = asyncio.Event()
    socket_path = f"unix:{tmp_path}/rls.sock"
    task = asyncio.ensure_future(
        serve([config], socket_path, stop=stop, grace=1, redis_url=redis.url, redis_prefix=unique_prefix())
    )
    try:
        async with grpc.aio.insecure_channel(socket_path) as channel:
            stub = rls_pb2_grpc.RateLimitServiceStub(channel)
            request = rls_pb2.RateLimitRequest(domain="ai", descriptors=[descriptor(("x-user-id", "gus"), hits=500)])
            response = await stub.ShouldRateLimit(request, wait_for_ready=True, timeout=10)
            assert response.overall_code == OK  # failing open: the 500 were not counted
            assert "unreachable at startup" in caplog.text
            redis.restart()
            deadline = time.monotonic() + 10
            while True:
                response = await stub.ShouldRateLimit(request, timeout=5)
                if response.overall_code == OVER_LIMIT:  # counted: 500 > 100
                    break
                assert time.monotonic() < deadline, "never reconnected to Redis"
                await asyncio.sleep(0.05)
        assert "rate limit counters available again" in caplog.text
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        redis.stop()


def test_cli_redis_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://from-env:6379/1")
    args = build_parser().parse_args(["--config", "x.yaml"])
    assert (args.redis_url, args.redis_prefix, args.redis_timeout, args.redis_failure_mode) == (
        "redis://from-env:6379/1",
        None,  # serve() applies the backend's defaults: tokenvoy:rl: and 0.05 s
        None,
        "open",
    )
    flags = ["--redis-url", "redis://flag:6379/0", "--redis-prefix", "p:", "--redis-timeout", "0.2"]
    args = build_parser().parse_args(["--config", "x.yaml", *flags, "--redis-failure-mode", "closed"])
    assert (args.redis_url, args.redis_prefix, args.redis_timeout, args.redis_failure_mode) == (
        "redis://flag:6379/0",
        "p:",
        0.2,
        "closed",
    )
    monkeypatch.delenv("REDIS_URL")
    assert build_parser().parse_args(["--config", "x.yaml"]).redis_url is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--config", "x.yaml", "--redis-timeout", "0"])


# The semantics suites (limiter, service) run on Redis too: they test counting, not latency, so they
# give Redis far more than the production 50 ms and a busy 2-core CI box cannot turn a slow answer into
# a fail-open OK.
SEMANTICS_TIMEOUT = 2.0
