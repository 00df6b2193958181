#!/usr/bin/env python3
"""ShouldRateLimit calls/s and latency of ``tokenvoy ratelimit``, memory and Redis backends side by side.

Starts on 127.0.0.1, with free ports it picks itself:

* a ``redis-server`` (no persistence, in a temporary directory);
* ``tokenvoy ratelimit`` twice, as real processes with the same budget config: once with in-memory
  counters, once with ``--redis-url`` pointing at that Redis.

The load comes from this process: a grpc.aio client with ``--concurrency`` workers (each sends its next
call as soon as the previous one is answered) over one HTTP/2 channel. The calls follow Envoy Gateway's
token-budget shape, alternating a check (``hits_addend: 0``) and a charge (``hits_addend: 17``) of the
descriptor ``budget=default, x-user-id=<one of --users ids>``. Each cell is an unmeasured warm-up then a
measured run of ``--duration`` seconds; latency is the client-side round trip of each call.

Besides calls/s and p50/p99 it reports the server's CPU time per call (utime + stime from /proc) so you
can see whether the server or the client (or Redis) saturates. Everything runs on one machine, so
calls/s is a whole-box figure. It never asserts a speed: it prints a markdown table.
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
CONFIG = """\
domain: ai-gateway
descriptors:
  - key: budget
    value: default
    descriptors:
      - key: x-user-id
        rate_limit: {unit: hour, requests_per_unit: 4000000000, name: default}
"""


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


def requests(users: int) -> list[rls_pb2.RateLimitRequest]:
    """Pre-built requests: for each user a check (hits 0) and a charge (hits 17)."""
    out = []
    for i in range(users):
        for hits in (0, 17):
            d = ratelimit_pb2.RateLimitDescriptor(
                entries=[
                    ratelimit_pb2.RateLimitDescriptor.Entry(key="budget", value="default"),
                    ratelimit_pb2.RateLimitDescriptor.Entry(key="x-user-id", value=f"user-{i}"),
                ]
            )
            d.hits_addend.value = hits
            out.append(rls_pb2.RateLimitRequest(domain="ai-gateway", descriptors=[d]))
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


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, dict[int, Cell]]:
    config = workdir / "budgets.yaml"
    config.write_text(CONFIG)
    started: list[subprocess.Popen[bytes]] = []
    results: dict[str, dict[int, Cell]] = {}
    try:
        redis_port = free_port()
        redis_argv = [args.redis_server, "--port", str(redis_port), "--bind", HOST, "--save", "", "--appendonly", "no"]
        redis = subprocess.Popen(
            [*redis_argv, "--dir", str(workdir), "--logfile", str(workdir / "redis.log")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        started.append(redis)
        wait_redis(redis_port, redis)
        backends = {"memory": [], "redis": ["--redis-url", f"redis://{HOST}:{redis_port}/0"]}
        for name, extra in backends.items():
            port = free_port()
            argv = [sys.executable, "-m", "tokenvoy", "ratelimit", "--config", str(config)]
            argv += ["--listen", f"{HOST}:{port}", "--admin-listen", "off", "--log-level", "warning", *extra]
            with (workdir / f"{name}.log").open("wb") as log:
                server = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=log)
            started.append(server)
            await wait_serving(port, server)
            results[name] = {}
            for concurrency in args.concurrency:
                cell = await measure(port, server.pid, args, concurrency)
                results[name][concurrency] = cell
                print(
                    f"  {name:6} c={concurrency:<3} {cell.rate:8,.0f} calls/s  p50 {cell.p50_ms:6.2f} ms  "
                    f"p99 {cell.p99_ms:6.2f} ms  server CPU {cell.server_cpu_us:5.0f} µs/call  errors {cell.errors}",
                    file=sys.stderr,
                )
            stop(server)
    finally:
        for proc in reversed(started):
            stop(proc)
    return results


def table(results: dict[str, dict[int, Cell]], concurrency: list[int]) -> str:
    names = list(results)
    rows: list[tuple[str, list[str]]] = []
    for c in concurrency:
        rows.append((f"calls/s c={c}", [f"{results[n][c].rate:,.0f}" for n in names]))
        rows.append((f"p50 latency c={c} (ms)", [f"{results[n][c].p50_ms:.2f}" for n in names]))
        rows.append((f"p99 latency c={c} (ms)", [f"{results[n][c].p99_ms:.2f}" for n in names]))
        rows.append((f"server CPU c={c} (µs/call)", [f"{results[n][c].server_cpu_us:,.0f}" for n in names]))
    rows.append(("errors (all runs)", [str(sum(cell.errors for cell in results[n].values())) for n in names]))
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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.redis_server = shutil.which("redis-server")
    if args.redis_server is None:
        print("redis-server is not on PATH (Debian/Ubuntu: sudo apt-get install -y redis-server)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="tokenvoy-bench-rl-") as workdir:
        results = asyncio.run(run(args, Path(workdir)))
    version = subprocess.run(
        [args.redis_server, "--version"], capture_output=True, text=True, check=False
    ).stdout.split()
    redis_version = next((v.split("=", 1)[1] for v in version if v.startswith("v=")), "?")
    print(
        f"Machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, grpcio {grpc.__version__}, Redis {redis_version} on loopback; "
        f"{args.users} users, check/charge alternating; "
        f"{args.warmup:g}s warm-up + {args.duration:g}s per cell; client, server and Redis share the CPUs.\n"
    )
    print(table(results, args.concurrency))
    return 1 if any(cell.errors for cells in results.values() for cell in cells.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
