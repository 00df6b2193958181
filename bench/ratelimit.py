#!/usr/bin/env python3
"""ShouldRateLimit calls/s, latency and CPU of ``tokenvoy ratelimit``, memory and Redis backends side by side.

Starts on 127.0.0.1, with free ports it picks itself:

* with ``--baseline``, ``bench/noop_rls.py``: the same grpc.aio server shell on uvloop answering a prebuilt
  OK, the floor of a Python RLS (what a unary gRPC call costs before any rate limiting);
* a ``redis-server`` (no persistence, in a temporary directory), unless ``--no-redis``;
* ``tokenvoy ratelimit`` twice, as real processes with the same budget config: once with in-memory
  counters, once with ``--redis-url`` pointing at that Redis.

The load comes from this process: a grpc.aio client with ``--concurrency`` workers (each sends its next
call as soon as the previous one is answered) over one HTTP/2 channel. The calls follow Envoy Gateway's
token-budget shape as tokenvoy's rendered config sends them, alternating a check (``hits_addend: 0``, at
request time) and a charge (``hits_addend: 17``, at stream done) of the descriptor
``budget=per-user-token-budget/rule/0, route=default, x-user-id=<one of --users ids>``. Each cell is an
unmeasured warm-up then a measured run of ``--duration`` seconds; latency is the client-side round trip.
``--rounds N`` measures every server N times, interleaved (server A, B, C, A, B, C, ...), so that a burst
of other work on the box hits all columns alike; the table shows the median and the range.

Besides calls/s and p50/p99 it reports the server's CPU time per call (utime + stime from /proc) and per
budgeted request (the check plus the charge: two calls), so you can see whether the server or the client
(or Redis) saturates. Everything runs on one machine, so calls/s is a whole-box figure. It never asserts a
speed: it prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tokenvoy.pb.envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from tokenvoy.pb.envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
BENCH_DIR = Path(__file__).resolve().parent
DOMAIN = "tokenvoy"
BUDGET = "per-user-token-budget/rule/0"
# The shape of tokenvoy's rendered ratelimit.yaml (envoy/ratelimit.yaml), with a budget no run can spend.
CONFIG = f"""\
domain: {DOMAIN}
descriptors:
  - key: budget
    value: {BUDGET}
    descriptors:
      - key: route
        descriptors:
          - key: x-user-id
            rate_limit: {{unit: hour, requests_per_unit: 4000000000, name: {BUDGET}}}
"""
BASELINE = "no-op RLS (floor)"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class Cell:
    calls: int
    seconds: float
    p50_ms: float
    p99_ms: float
    server_cpu_us: float  # per call
    errors: int

    @property
    def rate(self) -> float:
        return self.calls / self.seconds


@dataclass
class Rounds:
    """Every measured round of one server at one concurrency."""

    cells: list[Cell]

    def median(self, value: str) -> float:
        return statistics.median(getattr(c, value) if value != "rate" else c.rate for c in self.cells)

    def spread(self, value: str) -> tuple[float, float]:
        values = [getattr(c, value) if value != "rate" else c.rate for c in self.cells]
        return min(values), max(values)

    @property
    def errors(self) -> int:
        return sum(c.errors for c in self.cells)


def requests(users: int) -> list[rls_pb2.RateLimitRequest]:
    """Pre-built requests: for each user a check (hits 0) and a charge (hits 17)."""
    out = []
    for i in range(users):
        for hits in (0, 17):
            d = ratelimit_pb2.RateLimitDescriptor(
                entries=[
                    ratelimit_pb2.RateLimitDescriptor.Entry(key="budget", value=BUDGET),
                    ratelimit_pb2.RateLimitDescriptor.Entry(key="route", value="default"),
                    ratelimit_pb2.RateLimitDescriptor.Entry(key="x-user-id", value=f"user-{i}"),
                ]
            )
            d.hits_addend.value = hits
            out.append(rls_pb2.RateLimitRequest(domain=DOMAIN, descriptors=[d]))
    return out


async def drive(
    stub: rls_pb2_grpc.RateLimitServiceStub, reqs: list[rls_pb2.RateLimitRequest], concurrency: int, seconds: float
) -> tuple[list[float], int]:
    """Closed loop: ``concurrency`` workers until the deadline; returns latencies (s) and the error count."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal errors
        i = offset
        n = len(reqs)
        while True:
            started = time.perf_counter()
            if started >= deadline:
                return
            try:
                await stub.ShouldRateLimit(reqs[i % n], timeout=5)
            except grpc.aio.AioRpcError:
                errors += 1
            latencies.append(time.perf_counter() - started)
            i += concurrency

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return latencies, errors


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def measure(port: int, pid: int, args: argparse.Namespace, concurrency: int) -> Cell:
    reqs = requests(args.users)
    async with grpc.aio.insecure_channel(f"{HOST}:{port}") as channel:
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)
        await drive(stub, reqs, concurrency, args.warmup)
        cpu0 = cpu_seconds(pid)
        started = time.perf_counter()
        latencies, errors = await drive(stub, reqs, concurrency, args.duration)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(pid) - cpu0
    latencies.sort()
    return Cell(
        calls=len(latencies),
        seconds=elapsed,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        server_cpu_us=cpu / max(1, len(latencies)) * 1e6,
        errors=errors,
    )


async def wait_serving(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(f"{HOST}:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("server did not become SERVING")
            await asyncio.sleep(0.05)


def wait_redis(port: int, proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            if conn.recv(16).startswith(b"+PONG"):
                return
        time.sleep(0.02)
    raise RuntimeError("redis-server did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, dict[int, Rounds]]:
    config = workdir / "budgets.yaml"
    config.write_text(CONFIG)
    started: list[subprocess.Popen[bytes]] = []
    servers: dict[str, tuple[int, int]] = {}  # name -> (port, pid)
    try:
        if args.baseline:
            port = free_port()
            argv = [sys.executable, str(BENCH_DIR / "noop_rls.py"), "--listen", f"{HOST}:{port}"]
            with (workdir / "noop.log").open("wb") as log:
                server = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=log)
            started.append(server)
            await wait_serving(port, server)
            servers[BASELINE] = (port, server.pid)
        backends: dict[str, list[str]] = {"memory": []}
        if not args.no_redis:
            redis_port = free_port()
            redis_argv = [args.redis_server, "--port", str(redis_port), "--bind", HOST, "--save", ""]
            redis = subprocess.Popen(
                [*redis_argv, "--appendonly", "no", "--dir", str(workdir), "--logfile", str(workdir / "redis.log")],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
            started.append(redis)
            wait_redis(redis_port, redis)
            backends["redis"] = ["--redis-url", f"redis://{HOST}:{redis_port}/0"]
        for name, extra in backends.items():
            port = free_port()
            argv = [sys.executable, "-m", "tokenvoy", "ratelimit", "--config", str(config)]
            argv += ["--listen", f"{HOST}:{port}", "--admin-listen", "off", "--log-level", "warning", *extra]
            with (workdir / f"{name}.log").open("wb") as log:
                server = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=log)
            started.append(server)
            await wait_serving(port, server)
            servers[f"tokenvoy, {name}"] = (port, server.pid)
        results: dict[str, dict[int, Rounds]] = {name: {c: Rounds([]) for c in args.concurrency} for name in servers}
        for round_no in range(1, args.rounds + 1):
            for concurrency in args.concurrency:
                for name, (port, pid) in servers.items():
                    cell = await measure(port, pid, args, concurrency)
                    results[name][concurrency].cells.append(cell)
                    print(
                        f"  round {round_no} {name:22} c={concurrency:<3} {cell.rate:8,.0f} calls/s  "
                        f"p50 {cell.p50_ms:6.2f} ms  p99 {cell.p99_ms:6.2f} ms  "
                        f"server CPU {cell.server_cpu_us:5.0f} µs/call  errors {cell.errors}",
                        file=sys.stderr,
                    )
    finally:
        for proc in reversed(started):
            stop(proc)
    return results


def _figure(rounds: Rounds, value: str, fmt: str, scale: float = 1.0) -> str:
    median = fmt.format(rounds.median(value) * scale)
    if len(rounds.cells) < 2:
        return median
    low, high = rounds.spread(value)
    return f"{median} ({fmt.format(low * scale)}..{fmt.format(high * scale)})"


def table(results: dict[str, dict[int, Rounds]], concurrency: list[int]) -> str:
    names = list(results)
    rows: list[tuple[str, list[str]]] = []
    for c in concurrency:
        rows.append((f"calls/s c={c}", [_figure(results[n][c], "rate", "{:,.0f}") for n in names]))
        rows.append((f"p50 latency c={c} (ms)", [_figure(results[n][c], "p50_ms", "{:.2f}") for n in names]))
        rows.append((f"p99 latency c={c} (ms)", [_figure(results[n][c], "p99_ms", "{:.2f}") for n in names]))
        cpu = [_figure(results[n][c], "server_cpu_us", "{:,.0f}") for n in names]
        rows.append((f"server CPU c={c} (µs/call)", cpu))
        rows.append(
            (
                f"server CPU c={c} (µs/budgeted request: check + charge)",
                [_figure(results[n][c], "server_cpu_us", "{:,.0f}", 2.0) for n in names],
            )
        )
        if BASELINE in results:
            floor = results[BASELINE][c].median("server_cpu_us") * 2
            above = [f"{results[n][c].median('server_cpu_us') * 2 - floor:+,.0f}" for n in names]
            rows.append((f"above the floor c={c} (µs/budgeted request)", ["—", *above[1:]]))
    rows.append(("errors (all runs)", [str(sum(results[n][c].errors for c in concurrency)) for n in names]))
    width = max(len(label) for label, _ in rows)
    cols = [max(len(n), *(len(v[i]) for _, v in rows)) for i, n in enumerate(names)]
    lines = [
        "| "
        + "ShouldRateLimit".ljust(width)
        + " | "
        + " | ".join(n.rjust(w) for n, w in zip(names, cols, strict=True))
        + " |",
        "|" + "-" * (width + 2) + "|" + "|".join("-" * (w + 2) for w in cols) + "|",
    ]
    for label, values in rows:
        lines.append(
            "| " + label.ljust(width) + " | " + " | ".join(v.rjust(w) for v, w in zip(values, cols, strict=True)) + " |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per cell (default: 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each cell (default: 1)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16], help="calls in flight (default: 1 16)")
    parser.add_argument("--users", type=int, default=1000, help="distinct x-user-id values (default: 1000)")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also measure bench/noop_rls.py (a grpc.aio RLS that answers OK without work): the floor",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every server this many times, interleaved; the table shows median (min..max) (default: 1)",
    )
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis backend column")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or args.users < 1:
        parser.error("--rounds and --users must be >= 1, --duration > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.redis_server = shutil.which("redis-server")
    if args.redis_server is None and not args.no_redis:
        print("redis-server is not on PATH (Debian/Ubuntu: sudo apt-get install -y redis-server)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="tokenvoy-bench-rl-") as workdir:
        results = asyncio.run(run(args, Path(workdir)))
    redis = "no Redis"
    if not args.no_redis:
        version = subprocess.run(
            [args.redis_server, "--version"], capture_output=True, text=True, check=False
        ).stdout.split()
        redis = "Redis " + next((v.split("=", 1)[1] for v in version if v.startswith("v=")), "?") + " on loopback"
    print(
        f"Machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, grpcio {grpc.__version__}, {redis}; "
        f"{args.users} users, check/charge alternating; {args.warmup:g}s warm-up + {args.duration:g}s per cell, "
        f"{args.rounds} round(s){' (median, min..max)' if args.rounds > 1 else ''}; "
        "client, server and Redis share the CPUs.\n"
    )
    print(table(results, args.concurrency))
    return 1 if any(rounds.errors for by_c in results.values() for rounds in by_c.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
